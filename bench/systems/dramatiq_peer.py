"""Dramatiq with its Redis broker and results, run by ``dramatiq -p 1 -t 4``.

The worker imports this module; with ``BENCH_REDIS_URL`` set it declares
the broker and the actors on that Redis database.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import ResultMissing, Results
from dramatiq.results.backends import RedisBackend

from bench.stores import redis_database
from bench.systems.base import System


def noop() -> int:
    """Do nothing."""
    return 1


def nap(seconds: float) -> int:
    """Sleep *seconds*."""
    time.sleep(seconds)
    return 1


def declare(
    url: str,
) -> tuple[RedisBroker, RedisBackend, dramatiq.Actor[Any, Any], dramatiq.Actor[Any, Any]]:
    """The broker, the results backend and the two actors, on the Redis at *url*."""
    results = RedisBackend(url=url)
    broker = RedisBroker(url=url)
    broker.add_middleware(Results(backend=results))
    dramatiq.set_broker(broker)
    # One decorator per actor: a decorator keeps the name of the first function it saw.
    actors = [dramatiq.actor(broker=broker, store_results=True)(fn) for fn in (noop, nap)]
    return broker, results, actors[0], actors[1]


if "BENCH_REDIS_URL" in os.environ:
    declare(os.environ["BENCH_REDIS_URL"])


class Dramatiq(System):
    """Dramatiq 2.2, Redis broker and results backend, 1 process with 4 threads."""

    label = "Dramatiq (Redis, 1 process x 4 threads)"

    def open(self) -> None:
        """A private Redis database; the broker and actors on it."""
        self.url = self._stack.enter_context(redis_database())
        self.broker, self.results, self.noop, self.nap = declare(self.url)
        self._stack.callback(self.broker.close)

    def worker_command(self) -> tuple[list[str], Mapping[str, str]]:
        """``dramatiq bench.systems.dramatiq_peer --processes 1 --threads 4``."""
        command = [sys.executable, "-m", "dramatiq", "bench.systems.dramatiq_peer"]
        return [*command, "--processes", "1", "--threads", "4"], {"BENCH_REDIS_URL": self.url}

    def submit_noop(self) -> Any:
        """``noop.send()`` returns the message."""
        return self.noop.send()

    def submit_sleep(self, seconds: float) -> Any:
        """``nap.send(seconds)``."""
        return self.nap.send(seconds)

    def is_done(self, handle: Any) -> bool:
        """The result can be read."""
        try:
            self.results.get_result(handle)
        except ResultMissing:
            return False
        return True

    def still_pending(self, handles: Sequence[Any]) -> list[Any]:
        """``EXISTS`` on every result key, in one pipeline."""
        pipeline = self.results.client.pipeline(transaction=False)
        for handle in handles:
            pipeline.exists(self.results.build_message_key(handle))
        stored = pipeline.execute()
        return [handle for handle, done in zip(handles, stored, strict=True) if not done]
