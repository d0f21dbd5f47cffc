"""What the workloads need of a system, with polling defaults."""

from __future__ import annotations

import abc
import contextlib
import pathlib
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from bench.processes import WorkerProcess, cpu_seconds, peak_rss_mb

#: Seconds between two looks at one job while a client waits for it.
POLL = 0.0005
#: Seconds between two counts of finished jobs while a batch drains.
COUNT_POLL = 0.005


class System(abc.ABC):
    """One job runner on one store, ready to take jobs.

    A system is opened (its private store made) by :meth:`open` and removed
    by :meth:`close`. Its worker is a subprocess started by
    :meth:`start_worker` unless :attr:`in_process` is set, when the system
    runs jobs in this process and overrides the worker methods.

    :param backend: The store: ``redis``, ``postgresql``, ``memory``, ...
    :param directory: A private temporary directory (logs, SQLite files).
    """

    #: The label printed in the table.
    label: str = ""
    #: Whether jobs run in threads of this process rather than a worker process.
    in_process: bool = False
    #: A note printed under the table (how its worker runs, if it differs).
    note: str = ""

    def __init__(self, backend: str, directory: pathlib.Path) -> None:
        self.backend = backend
        self.directory = directory
        self.worker: WorkerProcess | None = None
        self._stack = contextlib.ExitStack()

    # -- lifecycle ---------------------------------------------------------

    def open(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Make the private store and connect to it."""

    def close(self) -> None:
        """Stop the worker, disconnect and remove the private store."""
        self.stop_worker()
        self._stack.close()

    @abc.abstractmethod
    def worker_command(self) -> tuple[list[str], Mapping[str, str]]:
        """The command line and extra environment of one worker with 4 threads."""

    def start_worker(self) -> None:
        """Start one worker; jobs already queued start running."""
        command, env = self.worker_command()
        log = self.directory / f"worker-{type(self).__name__.lower()}.log"
        self.worker = WorkerProcess(command, env, log)

    def stop_worker(self) -> None:
        """Stop the worker, if one runs, and wait for it to exit."""
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def check_worker(self) -> None:
        """Raise if the worker died."""
        if self.worker is not None:
            self.worker.check_alive()

    def worker_cpu(self) -> float:
        """CPU seconds the worker (with its children) used so far."""
        assert self.worker is not None
        return cpu_seconds(self.worker.tree())

    def worker_peak_rss(self) -> float:
        """The worker's peak RSS so far, in MiB."""
        assert self.worker is not None
        return peak_rss_mb(self.worker.tree())

    # -- jobs --------------------------------------------------------------

    @abc.abstractmethod
    def submit_noop(self) -> Any:
        """Enqueue one no-op job; returns a handle for :meth:`is_done`."""

    @abc.abstractmethod
    def submit_sleep(self, seconds: float) -> Any:
        """Enqueue one job that sleeps *seconds*."""

    def submit_many_noop(self, count: int) -> list[Any] | None:
        """Enqueue *count* no-op jobs in bulk; ``None`` when the system has no bulk API."""
        return None

    def discard_queued(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Drop jobs still queued (those of the bulk enqueue run)."""

    @abc.abstractmethod
    def is_done(self, handle: Any) -> bool:
        """Whether the job's completed state (its result) can be read."""

    def still_pending(self, handles: Sequence[Any]) -> list[Any]:
        """Those of *handles* not done yet; systems override it with one round trip."""
        return [handle for handle in handles if not self.is_done(handle)]

    def wait_one(self, handle: Any, timeout: float, poll: float = POLL) -> None:
        """Return as soon as the job is done, looking every *poll* seconds."""
        deadline = time.monotonic() + timeout
        while not self.is_done(handle):
            if time.monotonic() > deadline:
                self.check_worker()
                raise TimeoutError(f"a job was not done within {timeout} s")
            time.sleep(poll)

    def wait_all(self, handles: Sequence[Any], timeout: float) -> None:
        """Return as soon as every job of *handles* is done.

        Jobs run about in the order they were queued, so it watches the last
        one (one cheap look per :data:`COUNT_POLL`), then checks the others in
        one batch, and waits for any still running.
        """
        deadline = time.monotonic() + timeout
        self.wait_one(handles[-1], timeout, poll=COUNT_POLL)
        pending = self.still_pending(handles)
        while pending:
            if time.monotonic() > deadline:
                self.check_worker()
                raise TimeoutError(f"{len(pending)} jobs were not done within {timeout} s")
            time.sleep(POLL)
            pending = self.still_pending(pending)


@contextlib.contextmanager
def opened(system: System) -> Iterator[System]:
    """*system* opened, closed at the end whatever happens."""
    try:
        system.open()
        yield system
    finally:
        system.close()
