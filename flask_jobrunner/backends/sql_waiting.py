"""How the SQL backend's claims and watchers wait for news.

A claim that finds no job waits to be woken: by PostgreSQL's ``NOTIFY``
(through :mod:`.sql_listener`), by a write of this process, or by an
interrupt. Where nothing wakes it, it polls: briefly while work comes in
and less often when there is none; on SQLite, first asking whether anyone
committed at all. A caller waiting for a job to change or finish is woken
by that job's notification, or polls.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..record import Claim, JobRecord
from ._drained import DrainedQueues
from .sql_dialects import CONNECT_TIMEOUT
from .sql_listener import CHANNEL, EVENTS_CHANNEL

if TYPE_CHECKING:
    from .sql_claims import Taken
    from .sql_dialects import SQLiteChanges
    from .sql_listener import Listener

#: The first and the longest pause between two polls of a waiting claim or watcher.
POLL_MIN, POLL_MAX = 0.001, 0.1
#: Seconds after the last sign of work during which a waiting claim polls often.
BUSY_SPELL = 1.0
#: The longest pause between two polls of a waiting claim during such a spell.
BUSY_POLL = 0.004
#: The same on SQLite, where a poll first asks whether anything changed at all.
SQLITE_BUSY_POLL = 0.0005
#: Seconds a waiting claim trusts the word of the last claim of its queues that
#: none of them is due. A job made due since then was signalled (a notification
#: of the listener, which goes on listening for ``LISTEN_IDLE``, far longer,
#: after the last claim waited, and signals when its connection breaks), so the
#: claim waits at once instead of asking again. The one way a due job leaves no
#: signal is a claim elsewhere that locked it and rolled back; the next claim
#: after this long takes it.
DRAINED_FOR = 0.05


class Wakeups:
    """The news the waiting claims of a process wait for: work may have come, or an interrupt."""

    def __init__(self) -> None:
        self.condition = threading.Condition()
        #: How often work was signalled, and claims interrupted.
        self.signals = self.interrupts = 0
        #: When work was last seen (``time.monotonic``).
        self.last_work = 0.0
        #: The word of each set of queues' last claim that looked while the
        #: listener listened and left none of their jobs due, marked with
        #: :attr:`signals` as it was before that claim.
        self.drained = DrainedQueues()

    def signal(self) -> None:
        """Wake the waiting claims: work may have come."""
        with self.condition:
            self.signals += 1
            self.last_work = time.monotonic()
            self.condition.notify_all()

    def interrupt(self) -> None:
        """Wake the waiting claims, each to return what it has."""
        with self.condition:
            self.interrupts += 1
            self.condition.notify_all()

    def wait(self, signals: int, interrupts: int, timeout: float) -> bool:
        """Whether something happened since the counts were *signals* and *interrupts*."""
        with self.condition:
            return self.condition.wait_for(
                lambda: self.signals != signals or self.interrupts != interrupts, timeout
            )


def wait_for_claims(
    take: Callable[[bool], Taken],
    due_in: Callable[[], float | None],
    *,
    queues: tuple[str, ...],
    timeout: float,
    wakeups: Wakeups,
    listener: Listener | None,
    changes: SQLiteChanges | None,
    reads_first: bool,
    busy_poll: float,
) -> list[Claim]:
    """Claim with *take* until it takes jobs, *timeout* passes, or an interrupt.

    While the listener listens, a claim of *queues* that the last one found
    drained a moment ago (looking while the listener listened), with no work
    signalled since, waits at once: its first take could find nothing.

    :param take: Claims, in one transaction; given true (looking ahead), it
        also tells the seconds until the next job is due when it takes none.
    :param due_in: Those seconds, by a read (none or less: one is due now).
    :param queues: The queues *take* claims from.
    :param listener: The listener whose notifications wake a claim, if any.
    :param changes: What tells whether anyone committed since the last look (SQLite).
    :param reads_first: Whether the first look and an idle poll read before
        they write (SQLite).
    :param busy_poll: The longest pause between polls while work comes in.
    """
    deadline = time.monotonic() + timeout
    with wakeups.condition:
        interrupts = wakeups.interrupts
    if listener is not None:
        listener.enter(min(timeout, CONNECT_TIMEOUT))
    try:
        poll, look_ahead, due_by, woken = POLL_MIN, True, None, True
        first = True
        while True:
            with wakeups.condition:
                signals = wakeups.signals
                if wakeups.interrupts != interrupts:
                    return []
            waits_first = False
            if first and listener is not None and listener.listens(CHANNEL):
                waits_first, due_by = wakeups.drained.trusted(
                    queues, within=DRAINED_FOR, mark=signals
                )
            # Before any read, so a commit after it reads as a change next time.
            changed = changes is None or changes.has_changed()
            claims: list[Claim] = []
            due: float | None = None
            informed = False
            if waits_first:
                pass  # the last claim of these queues found them drained a moment ago
            elif reads_first and (first or (changed and not woken and not look_ahead)):
                # A read, which takes no lock, so that a claim that finds
                # nothing never holds up a writer; then the write only if a
                # job is due. The first look too: a thread that becomes the
                # leader while another's job runs would otherwise write just
                # as that job ends and its submitter, seeing it done, submits
                # the next one; SQLite's busy handler then makes the loser
                # sleep a millisecond or more.
                due, informed = due_in(), True
                if due is not None and due <= 0:
                    claims, due, informed = take(True)
            elif woken or look_ahead or not reads_first:
                # Only a look taken while notifications arrive vouches for the
                # next claim: a job enqueued before the LISTEN wakes no one.
                heard = listener is not None and listener.listens(CHANNEL)
                claims, due, informed = take(look_ahead)
                if heard and informed:
                    wakeups.drained.note(queues, _due_by(due), mark=signals)
                elif listener is not None and claims:
                    wakeups.drained.forget(queues)
            # Else nothing committed since the last poll: nothing new can be due.
            first = False
            now = time.monotonic()
            if claims:
                wakeups.last_work = now
            if claims or now >= deadline:
                return claims
            if informed:
                due_by = _due_by(due)
            pause = deadline - now
            if due_by is not None:
                pause = min(pause, max(due_by - now, POLL_MIN))
            if listener is None or not listener.listens(CHANNEL):
                # Work tends to come in spells: poll often while one lasts.
                busy = now - wakeups.last_work < BUSY_SPELL
                pause = min(pause, min(poll, busy_poll) if busy else poll)
            woken = wakeups.wait(signals, interrupts, pause)
            if woken:
                poll, look_ahead = POLL_MIN, True
            else:
                poll = min(poll * 2, POLL_MAX)
                look_ahead = due_by is not None and time.monotonic() >= due_by
    finally:
        if listener is not None:
            listener.leave()


def _due_by(due: float | None) -> float | None:
    # When a job due in *due* seconds is due (time.monotonic).
    return None if due is None else time.monotonic() + due


def poll_until(
    get: Callable[[str], JobRecord | None],
    job_id: str,
    is_done: Callable[[JobRecord], bool],
    timeout: float,
) -> JobRecord | None:
    """Read the job with *get* until it is done or gone, or *timeout* passed.

    It reads every millisecond at first, and less often as time goes by.
    """
    deadline = time.monotonic() + timeout
    interval = POLL_MIN
    while True:
        record = get(job_id)
        remaining = deadline - time.monotonic()
        if record is None or is_done(record) or remaining <= 0:
            return record
        time.sleep(min(interval, remaining))
        interval = min(interval * 1.25, 0.25)


class JobWatches:
    """The jobs callers of a process watch, woken when the listener hears that one changed."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        # Job id -> [changes seen, callers watching].
        self._watched: dict[str, list[int]] = {}

    def job_changed(self, job_id: str | None) -> None:
        """Wake the callers watching job *job_id* (``None``: any may have changed)."""
        with self._condition:
            if job_id is None:
                for watched in self._watched.values():
                    watched[0] += 1
            elif (entry := self._watched.get(job_id)) is not None:
                entry[0] += 1
            else:
                return
            self._condition.notify_all()

    def watch_until(
        self,
        listener: Listener,
        get: Callable[[str], JobRecord | None],
        job_id: str,
        is_done: Callable[[JobRecord], bool],
        timeout: float,
    ) -> JobRecord | None:
        """Read the job with *get* until it is done or gone, or *timeout* passed.

        It reads again when the listener hears that the job changed (polling
        while the listener is not connected).
        """
        # Watches before each read, so a change between read and wait still wakes it.
        deadline = time.monotonic() + timeout
        with self._condition:
            entry = self._watched.setdefault(job_id, [0, 0])
            entry[1] += 1
        listener.enter(min(timeout, CONNECT_TIMEOUT), channel=EVENTS_CHANNEL)
        try:
            poll = POLL_MIN
            while True:
                with self._condition:
                    seen = entry[0]
                record = get(job_id)
                remaining = deadline - time.monotonic()
                if record is None or is_done(record) or remaining <= 0:
                    return record
                # Polls only while the listener is not (yet, or any more) connected.
                pause = remaining if listener.listens(EVENTS_CHANNEL) else min(remaining, poll)
                with self._condition:
                    woken = self._condition.wait_for(functools.partial(_moved, entry, seen), pause)
                poll = POLL_MIN if woken else min(poll * 2, POLL_MAX)
        finally:
            listener.leave(channel=EVENTS_CHANNEL)
            with self._condition:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._watched[job_id]


def _moved(entry: list[int], seen: int) -> bool:
    # Whether a watched job's change count moved on from *seen*.
    return entry[0] != seen
