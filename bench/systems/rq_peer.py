"""RQ, its ``SimpleWorker`` run by ``rq worker``: one job at a time, in the worker's process.

RQ has no thread pool: the ``SimpleWorker`` (no fork per job) is its fastest
worker, and it runs one job at a time, so it is not a 4-thread figure.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis
import rq

from bench.stores import redis_database
from bench.systems.base import System


def noop() -> int:
    """Do nothing."""
    return 1


def nap(seconds: float) -> int:
    """Sleep *seconds*."""
    time.sleep(seconds)
    return 1


class RQ(System):
    """RQ 3.0 ``SimpleWorker``."""

    label = "RQ (Redis, SimpleWorker, 1 at a time)"
    note = "RQ: a SimpleWorker runs one job at a time (RQ has no thread pool)"

    def open(self) -> None:
        """A private Redis database and a queue on it."""
        self.url = self._stack.enter_context(redis_database())
        self.connection = redis.Redis.from_url(self.url)
        self._stack.callback(self.connection.close)
        self.queue = rq.Queue("bench", connection=self.connection)

    def worker_command(self) -> tuple[list[str], Mapping[str, str]]:
        """``rq worker --worker-class rq.worker.SimpleWorker``."""
        command = [sys.executable, "-m", "rq.cli", "worker", "--url", self.url]
        command += ["--worker-class", "rq.worker.SimpleWorker", "--quiet", "bench"]
        return command, {}

    def submit_noop(self) -> Any:
        """``queue.enqueue(noop)`` returns the ``Job``."""
        return self.queue.enqueue(noop)

    def submit_sleep(self, seconds: float) -> Any:
        """``queue.enqueue(nap, seconds)``."""
        return self.queue.enqueue(nap, seconds)

    def is_done(self, handle: Any) -> bool:
        """The job's status is ``finished``."""
        return bool(handle.get_status(refresh=True) == rq.job.JobStatus.FINISHED)

    def still_pending(self, handles: Sequence[Any]) -> list[Any]:
        """``HGET status`` of every job, in one pipeline."""
        pipeline = self.connection.pipeline(transaction=False)
        for handle in handles:
            pipeline.hget(handle.key, "status")
        statuses = pipeline.execute()
        return [
            handle
            for handle, status in zip(handles, statuses, strict=True)
            if status != b"finished"
        ]
