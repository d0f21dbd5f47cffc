"""Worker processes: what ``flask jobs worker`` runs.

:func:`run_worker` runs one process's :class:`~flask_jobrunner.worker.Worker`
until a signal (or, in burst mode, the end of the work) stops it;
:func:`supervise` forks several such processes and keeps them running. The
first SIGTERM or SIGINT drains: claiming stops, running jobs get up to
``JOBRUNNER_SHUTDOWN_TIMEOUT`` to finish, the rest go back to the queue, and
the process exits 0. A second signal exits at once; the leases of the jobs it
held run out and another worker takes them back.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from types import FrameType

from flask import Flask

from .extension import AppState
from .worker import Worker

logger = logging.getLogger("flask_jobrunner")

#: The signals that stop a worker: the first drains, the second exits at once.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Exit status of a process stopped by a second signal before it drained.
EXIT_ABORTED = 1
#: Seconds a supervisor waits before starting again a process that died.
RESTART_DELAY = 1.0


class _StopRequest:
    """Counts stop signals: the first sets :attr:`event`, a later one calls *on_again*."""

    def __init__(self, on_again: Callable[[int], None]) -> None:
        self.event = threading.Event()
        self._on_again = on_again
        self._previous = {signum: signal.signal(signum, self._handle) for signum in STOP_SIGNALS}

    def restore(self) -> None:
        """Put back the handlers that were there before."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.event.is_set():
            logger.info("Got %s: draining; send it again to stop at once.", _name(signum))
            self.event.set()
        else:
            self._on_again(signum)


def _name(signum: int) -> str:
    return signal.Signals(signum).name


def _abort(signum: int) -> None:
    logger.warning("Got %s again: stopping at once; leases bring the jobs back.", _name(signum))
    os._exit(EXIT_ABORTED)


def _keep_draining(signum: int) -> None:
    logger.info("Got %s again: still draining.", _name(signum))


def run_worker(
    app: Flask,
    *,
    threads: int,
    queues: Sequence[str] | None = None,
    burst: bool = False,
    supervisor: int | None = None,
) -> int:
    """Run jobs of *app* in this process until stopped; returns the exit status.

    :param app: The app whose tasks and backend the worker uses.
    :param threads: How many jobs run at once.
    :param queues: The queues to serve; by default those of every registered task.
    :param burst: Stop once no job runs and none is ready, instead of waiting for more.
    :param supervisor: The pid of the process that forked this one; if it dies,
        this one drains and exits rather than run on unsupervised.
    """
    state: AppState = app.extensions["jobrunner"]
    # Under a supervisor, a signal to the whole process group (Ctrl-C) reaches
    # this process as well as the supervisor's own SIGTERM: only the
    # supervisor decides to stop at once.
    stop = _StopRequest(_abort if supervisor is None else _keep_draining)
    try:
        worker = Worker(app, state, threads=threads, queues=queues)
        state.adopt_worker(worker)
        worker.start()
        state.ensure_scheduler(app)  # stopped with the worker by state.shutdown()
        logger.info(
            "Worker %s (pid %d) runs %d threads on queues %s.",
            worker.name,
            os.getpid(),
            threads,
            ", ".join(queues or state.runner.queues),
        )
        while not stop.event.wait(0.1):
            if burst and worker.wait_out_of_work(0):
                logger.info("No more work: the burst is done.")
                break
            if supervisor is not None and os.getppid() != supervisor:
                logger.warning("The supervisor %d is gone: draining.", supervisor)
                break
        finished = state.shutdown()
        logger.info(
            "Worker %s stopped%s.", worker.name, "" if finished else ", giving back unfinished jobs"
        )
        return 0
    finally:
        stop.restore()


def supervise(
    app: Flask,
    *,
    processes: int,
    threads: int,
    queues: Sequence[str] | None = None,
    burst: bool = False,
) -> int:
    """Run *processes* worker processes forked from this one; returns the exit status.

    A process that dies is started again after :data:`RESTART_DELAY` (in
    burst mode, one that ends with status 0 is done). Stop signals are passed
    on to every process; the status is 0 when all of them drained cleanly.
    """
    supervisor = _Supervisor(app, threads=threads, queues=queues, burst=burst)
    stop = _StopRequest(supervisor.abort)
    try:
        return supervisor.run(processes, stop.event)
    finally:
        stop.restore()


class _Supervisor:
    def __init__(
        self, app: Flask, *, threads: int, queues: Sequence[str] | None, burst: bool
    ) -> None:
        self.app = app
        self.options = (threads, queues, burst)
        self.burst = burst
        self.children: dict[int, BaseProcess] = {}
        self.statuses: list[int] = []

    def start(self, slot: int) -> None:
        child = multiprocessing.get_context("fork").Process(
            target=_child_main, args=(self.app, *self.options), name=f"jobrunner-worker-{slot}"
        )
        child.start()
        self.children[slot] = child

    def forward(self, signum: int) -> None:
        for child in list(self.children.values()):
            if child.pid is not None and child.exitcode is None:
                os.kill(child.pid, signum)

    def abort(self, signum: int) -> None:
        logger.warning("Got %s again: killing the worker processes.", _name(signum))
        self.forward(signal.SIGKILL)

    def run(self, processes: int, stopping: threading.Event) -> int:
        for slot in range(processes):
            self.start(slot)
        pids = ", ".join(str(child.pid) for child in self.children.values())
        logger.info("Started %d worker processes: %s.", processes, pids)
        forwarded = False
        while self.children:
            if stopping.is_set() and not forwarded:
                self.forward(signal.SIGTERM)
                forwarded = True
            for slot, child in list(self.children.items()):
                child.join(0.05)
                if child.exitcode is not None:
                    del self.children[slot]
                    self._ended(slot, child.exitcode, stopping)
        return 0 if all(status == 0 for status in self.statuses) else EXIT_ABORTED

    def _ended(self, slot: int, status: int, stopping: threading.Event) -> None:
        if stopping.is_set() or (self.burst and status == 0):
            self.statuses.append(status)
            return
        logger.error("A worker process exited with status %s; starting another.", status)
        if stopping.wait(RESTART_DELAY):
            self.statuses.append(status)
        else:
            self.start(slot)


def _child_main(app: Flask, threads: int, queues: Sequence[str] | None, burst: bool) -> None:
    # A fresh start in the child: the parent's handlers forward to processes this one lacks.
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    status = run_worker(app, threads=threads, queues=queues, burst=burst, supervisor=os.getppid())
    # multiprocessing turns a SystemExit into the exit status.
    raise SystemExit(status)
