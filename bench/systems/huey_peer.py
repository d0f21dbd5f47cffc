"""Huey with its Redis storage, run by ``huey_consumer -k thread -w 4``.

The worker imports this module (``bench.systems.huey_peer.huey``); the
Redis URL and the queue name come from ``BENCH_REDIS_URL`` / ``BENCH_NAME``.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from huey import RedisHuey

from bench.stores import redis_database
from bench.systems.base import System

huey = RedisHuey(
    os.environ.get("BENCH_NAME", "bench"),
    url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15"),
)


@huey.task()
def noop() -> int:
    """Do nothing (a result of ``None`` would not be stored)."""
    return 1


@huey.task()
def nap(seconds: float) -> int:
    """Sleep *seconds*."""
    time.sleep(seconds)
    return 1


class Huey(System):
    """Huey 3.5, blocking Redis storage, thread workers."""

    label = "Huey (Redis, 4 threads)"

    def open(self) -> None:
        """A private Redis database and a Huey instance on it."""
        global huey, noop, nap
        self.url = self._stack.enter_context(redis_database())
        self.name = f"bench-{uuid.uuid4().hex[:8]}"
        huey = RedisHuey(self.name, url=self.url)
        # The module-level tasks are bound to the import-time instance; rebind them.
        noop = huey.task()(noop.func)
        nap = huey.task()(nap.func)
        self.huey = huey

    def worker_command(self) -> tuple[list[str], Mapping[str, str]]:
        """``huey_consumer bench.systems.huey_peer.huey -k thread -w 4``."""
        consumer = shutil.which("huey_consumer", path=os.path.dirname(sys.executable))
        command = [sys.executable, consumer or "huey_consumer"]
        command += ["bench.systems.huey_peer.huey", "-k", "thread", "-w", "4", "-q"]
        return command, {"BENCH_REDIS_URL": self.url, "BENCH_NAME": self.name}

    def submit_noop(self) -> Any:
        """``noop()`` returns a ``Result``."""
        return noop()

    def submit_sleep(self, seconds: float) -> Any:
        """``nap(seconds)``."""
        return nap(seconds)

    def is_done(self, handle: Any) -> bool:
        """The result is stored."""
        return handle.get(preserve=True) is not None

    def still_pending(self, handles: Sequence[Any]) -> list[Any]:
        """``HEXISTS`` on the results hash for every handle, in one pipeline."""
        storage = self.huey.storage
        pipeline = storage.conn.pipeline(transaction=False)
        for handle in handles:
            pipeline.hexists(storage.result_key, handle.id)
        stored = pipeline.execute()
        return [handle for handle, done in zip(handles, stored, strict=True) if not done]
