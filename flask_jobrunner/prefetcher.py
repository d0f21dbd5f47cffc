"""The prefetcher: one thread that claims jobs ahead while short jobs keep every pool thread busy.

While jobs wait, a pool thread that ends one claims its next itself, and
waits for that claim between its two jobs: one round trip to Redis, and to
a SQL database one to three, which under load take as long as a job of a
few milliseconds. The prefetcher claims while the jobs still run and keeps
what it claimed as spares, which the first pool thread to end a job takes
at once.

A job claimed ahead waits, marked ``in_progress``, until a pool thread is
free; behind long jobs it would wait long while other workers idle. So the
prefetcher claims ahead only while the jobs that end are short (about
:data:`AHEAD_JOB_MAX` at most), only as many as threads may end during one
claim, and gives back a spare that no thread took within
:data:`SPARE_MAX_WAIT` (in its old place in the queue, its attempt not
counted); after that it claims ahead no more until another job ends.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable

from .record import Claim

#: Jobs that run longer than this on average are not claimed ahead: the round trip hardly counts.
AHEAD_JOB_MAX = 0.1
#: Seconds a job claimed ahead may wait for a free thread before it is given back.
SPARE_MAX_WAIT = 0.5
# The weight of the newest observation in the running averages.
_WEIGHT = 0.2


class Prefetcher:
    """Claims jobs ahead for a worker's pool threads, from a thread of its own.

    :param claim: Claims up to so many due jobs at once, without waiting; an
        empty list when none is due (the caller then reports no backlog).
    :param give_back: Gives a claimed job back to the queue.
    :param is_busy: Whether jobs wait and no pool thread is idle, so that a
        job claimed now would be run by the next thread to end one.
    :param threads: The worker's pool threads: at most that many spares.
    :param shortest: Jobs quicker than this on average are not claimed ahead
        (the worker claims those in batches for its idle threads).
    :param max_wait: The longest wait of a spare (at most :data:`SPARE_MAX_WAIT`);
        give it a fraction of the lease, which nothing renews while it waits.
    :param name: The thread's name.
    """

    def __init__(
        self,
        claim: Callable[[int], list[Claim]],
        give_back: Callable[[Claim], None],
        *,
        is_busy: Callable[[], bool],
        threads: int,
        shortest: float,
        max_wait: float,
        name: str,
    ) -> None:
        self._claim = claim
        self._give_back = give_back
        self._is_busy = is_busy
        self._threads = threads
        self._shortest = shortest
        self._max_wait = min(max_wait, SPARE_MAX_WAIT)
        # (when it was claimed, the claim), oldest first.
        self._spares: collections.deque[tuple[float, Claim]] = collections.deque()
        self._changed = threading.Condition()
        self._job_time: float | None = None
        self._claim_time = 0.0
        self._paused = False
        self._stopping = False
        self._claiming = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the prefetcher's thread."""
        self._thread.start()

    def take(self) -> Claim | None:
        """A job claimed ahead, oldest first, or ``None``.

        While a claim ahead is on its way, waits for it: it comes sooner
        than a claim sent now would.
        """
        if not self._spares and not self._claiming:  # the usual answer, without the lock
            return None
        with self._changed:
            self._changed.wait_for(lambda: not self._claiming or bool(self._spares))
            if not self._spares or self._stopping:
                return None
            _, claim = self._spares.popleft()
            self._changed.notify_all()
            return claim

    def job_ended(self, seconds: float) -> None:
        """Note that a pool thread ended a job that ran *seconds*."""
        last = self._job_time
        self._job_time = seconds if last is None else last + _WEIGHT * (seconds - last)
        if self._paused or self._wanted() > len(self._spares):
            with self._changed:
                self._paused = False
                self._changed.notify_all()

    def stop(self) -> list[Claim]:
        """End the thread; returns the spares, which the caller gives back."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread.is_alive():
            self._thread.join()
        with self._changed:
            spares = [claim for _, claim in self._spares]
            self._spares.clear()
        return spares

    def _wanted(self) -> int:
        # How many spares to hold: none unless short jobs keep every thread
        # busy; else two for each thread that may end during one claim, and one.
        job_time = self._job_time
        if (
            self._paused
            or self._stopping
            or job_time is None
            or not self._shortest <= job_time <= AHEAD_JOB_MAX
            or not self._is_busy()
        ):
            return 0
        return min(self._threads, math.ceil(2 * self._threads * self._claim_time / job_time) + 1)

    def _run(self) -> None:
        while True:
            stale: list[Claim] = []
            with self._changed:
                while True:
                    if self._stopping:
                        return
                    now = time.monotonic()
                    while self._spares and now - self._spares[0][0] >= self._max_wait:
                        stale.append(self._spares.popleft()[1])
                    if stale:
                        self._paused = True  # until a job ends: the threads are held up
                        break
                    missing = self._wanted() - len(self._spares)
                    if missing > 0:
                        self._claiming = True
                        break
                    expiry = self._spares[0][0] + self._max_wait - now if self._spares else None
                    self._changed.wait(expiry)
            for claim in stale:
                self._give_back(claim)
            if stale:
                continue
            started = time.monotonic()
            claims: list[Claim] = []
            try:
                claims = self._claim(missing)
            finally:
                now = time.monotonic()
                with self._changed:
                    self._claiming = False
                    self._spares.extend((now, claim) for claim in claims)
                    self._changed.notify_all()
            self._claim_time += _WEIGHT * (now - started - self._claim_time)
