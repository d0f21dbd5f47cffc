"""Flask-Executor: a ``ThreadPoolExecutor`` of 4 in this process, keeping no job state.

It has no worker to start: to enqueue without running, four gate jobs hold
the pool's threads until :meth:`FlaskExecutor.start_worker` opens the gate.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import flask
import flask_executor

from bench.processes import peak_rss_mb
from bench.systems.base import System

THREADS = 4


def noop() -> int:
    """Do nothing."""
    return 1


def nap(seconds: float) -> int:
    """Sleep *seconds*."""
    time.sleep(seconds)
    return 1


class FlaskExecutor(System):
    """Flask-Executor 1.0, thread executor, ``EXECUTOR_MAX_WORKERS = 4``."""

    label = "Flask-Executor (in-process, 4 threads, no state)"
    in_process = True
    note = "Flask-Executor: jobs run in the benchmark's process; nothing is stored"

    def open(self) -> None:
        """An app with an executor of 4 threads, held by the gate."""
        self.app = flask.Flask("bench-executor")
        self.app.config.update(EXECUTOR_TYPE="thread", EXECUTOR_MAX_WORKERS=THREADS)
        self.executor = flask_executor.Executor(self.app)
        # Flask-Executor copies the request context of the view that submits.
        self._context = self.app.test_request_context()
        self._context.push()
        self._stack.callback(self._context.pop)
        self._stack.callback(self.executor._self.shutdown)
        self._gate: threading.Event | None = None
        self._hold()

    def _hold(self) -> None:
        gate = threading.Event()
        self._gate = gate
        for _ in range(THREADS):
            self.executor.submit(gate.wait)

    def worker_command(self) -> tuple[list[str], Mapping[str, str]]:
        """None: the pool runs in this process."""
        raise NotImplementedError

    def start_worker(self) -> None:
        """Open the gate: the pool starts on the queued jobs."""
        if self._gate is not None:
            self._gate.set()
            self._gate = None

    def stop_worker(self) -> None:
        """Close the gate again, once running jobs are done."""
        if self._gate is None:
            self._hold()

    def close(self) -> None:
        """Open the gate and shut the pool down."""
        self.start_worker()
        self._stack.close()

    def worker_cpu(self) -> float:
        """CPU of this whole process."""
        return time.process_time()

    def worker_peak_rss(self) -> float:
        """Peak RSS of this whole process."""
        return peak_rss_mb([os.getpid()])

    def submit_noop(self) -> Any:
        """``executor.submit(noop)`` returns a future."""
        return self.executor.submit(noop)

    def submit_sleep(self, seconds: float) -> Any:
        """``executor.submit(nap, seconds)``."""
        return self.executor.submit(nap, seconds)

    def is_done(self, handle: Any) -> bool:
        """The future is done."""
        return bool(handle.done())

    def wait_one(self, handle: Any, timeout: float, poll: float = 0) -> None:
        """Block on the future."""
        handle.result(timeout)

    def wait_all(self, handles: Sequence[Any], timeout: float) -> None:
        """Block on every future."""
        _, pending = concurrent.futures.wait(handles, timeout)
        if pending:
            raise TimeoutError(f"{len(pending)} jobs were not done within {timeout} s")
