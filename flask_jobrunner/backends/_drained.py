"""What the last claim of a set of queues found: no job of theirs due.

A claim that may wait can skip its first look when the claim just before it
found its queues drained a moment ago, and wait at once: a job made due
since then leaves a signal that wakes it. The Redis and the SQL backends
each keep such words, and each says for how long they hold.
"""

from __future__ import annotations

import threading
import time

#: Sets of queues whose last word is kept; past that, all are forgotten.
KEPT = 64


class DrainedQueues:
    """The word of the last claim of each set of queues that none of their jobs was due."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Queues -> (mark, time.monotonic() when noted, when the next job is due or None).
        self._words: dict[tuple[str, ...], tuple[int, float, float | None]] = {}

    def note(self, queues: tuple[str, ...], due_by: float | None, *, mark: int = 0) -> None:
        """Remember that a claim of *queues* left none of their jobs due.

        :param due_by: When the next one is due (``time.monotonic``), if one is pending.
        :param mark: What :meth:`trusted` must be given for the word to hold
            (the count of signals when the claim was sent, say).
        """
        with self._lock:
            if len(self._words) >= KEPT and queues not in self._words:
                self._words.clear()
            self._words[queues] = (mark, time.monotonic(), due_by)

    def forget(self, queues: tuple[str, ...]) -> None:
        """Forget the word on *queues*: due jobs may be left."""
        with self._lock:
            self._words.pop(queues, None)

    def trusted(
        self, queues: tuple[str, ...], *, within: float, mark: int = 0
    ) -> tuple[bool, float | None]:
        """Whether no job of *queues* can be due now, and if so when the next one is.

        True only if the word on them is less than *within* seconds old, was
        noted with *mark*, and the next job it knew of is not due yet.
        """
        with self._lock:
            word = self._words.get(queues)
        if word is None or word[0] != mark:
            return False, None
        _, noted_at, due_by = word
        now = time.monotonic()
        if now - noted_at >= within or (due_by is not None and now >= due_by):
            return False, None
        return True, due_by
