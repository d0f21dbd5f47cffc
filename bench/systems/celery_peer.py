"""Celery with Redis as broker and result backend, run by ``celery worker -P threads -c 4``.

The worker imports this module; ``BENCH_REDIS_URL`` names the Redis database.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import celery

from bench.stores import redis_database
from bench.systems.base import System

app = celery.Celery("bench")


def configure(url: str) -> None:
    """Point the app at the Redis database at *url*."""
    app.conf.update(
        broker_url=url,
        result_backend=url,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )


configure(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"))


@app.task(name="bench.noop")
def noop() -> int:
    """Do nothing."""
    return 1


@app.task(name="bench.nap")
def nap(seconds: float) -> int:
    """Sleep *seconds*."""
    time.sleep(seconds)
    return 1


class Celery(System):
    """Celery 5.7, Redis broker and results, thread pool of 4."""

    label = "Celery (Redis, -P threads -c 4)"

    def open(self) -> None:
        """A private Redis database for broker and results."""
        self.url = self._stack.enter_context(redis_database())
        configure(self.url)
        self._stack.callback(app.close)

    def worker_command(self) -> tuple[list[str], Mapping[str, str]]:
        """The worker as Celery's docs start it, without gossip, mingle and heartbeats."""
        command = [sys.executable, "-m", "celery", "-A", "bench.systems.celery_peer:app"]
        command += ["worker", "-P", "threads", "-c", "4", "-l", "warning"]
        command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        return command, {"BENCH_REDIS_URL": self.url}

    def submit_noop(self) -> Any:
        """``noop.delay()`` returns an ``AsyncResult``."""
        return noop.delay()

    def submit_sleep(self, seconds: float) -> Any:
        """``nap.delay(seconds)``."""
        return nap.delay(seconds)

    def is_done(self, handle: Any) -> bool:
        """The result is ``SUCCESS``."""
        return bool(handle.successful())

    def still_pending(self, handles: Sequence[Any]) -> list[Any]:
        """``EXISTS`` on every result key, in one pipeline."""
        backend = app.backend
        pipeline = backend.client.pipeline(transaction=False)
        for handle in handles:
            pipeline.exists(backend.get_key_for_task(handle.id))
        stored = pipeline.execute()
        return [handle for handle, done in zip(handles, stored, strict=True) if not done]
