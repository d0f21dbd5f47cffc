"""``current_job``: what a running task knows about, and tells of, its job."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING

from werkzeug.local import LocalProxy

from .errors import BackendUnavailable, JobCancelled, JobInterrupted, JobTimeout
from .record import Claim, LeaseState, Progress

if TYPE_CHECKING:
    from .backends.base import Backend


# Progress is frozen, so every job can start from the same one (it costs ~3 µs to make).
_NO_PROGRESS = Progress()


class JobContext:
    """The running job, as a task sees it through :data:`current_job`.

    Progress is stored at most every ``JOBRUNNER_PROGRESS_INTERVAL`` seconds;
    a report in between is kept and stored by the worker soon after, and the
    last one is always stored with the final state.
    """

    def __init__(
        self,
        claim: Claim,
        backend: Backend,
        *,
        lease: float,
        progress_interval: float,
        timeout: float,
        on_stored: Callable[[JobContext], None] | None = None,
    ) -> None:
        #: The job's id.
        self.id = claim.record.id
        #: The job as it was when this worker claimed it.
        self.record = claim.record
        #: The task's name.
        self.task = claim.record.task
        #: Which try this is, from 1.
        self.attempt = claim.record.attempts
        self.token = claim.token
        self.timeout = timeout
        #: When this worker got the job's lease (monotonic clock), as near as it knows.
        self.leased_at = time.monotonic()
        self.deadline = self.leased_at + timeout
        self._backend = backend
        self._lease = lease
        self._interval = progress_interval
        self._on_stored = on_stored
        self._lock = threading.Lock()
        self._latest = _NO_PROGRESS
        # The progress last confirmed stored: a final write repeats only newer progress.
        self._stored = self._latest
        self._dirty = False
        self._last_write = float("-inf")
        self._cancel_requested = False
        self._timed_out = False
        self._lost = False
        self._finishing = False

    def __repr__(self) -> str:
        return f"<JobContext {self.task!r} {self.id}>"

    @property
    def cancelled(self) -> bool:
        """Whether a cancel of this job was requested."""
        return self._cancel_requested

    @property
    def timed_out(self) -> bool:
        """Whether the job ran past its timeout."""
        return self._timed_out or time.monotonic() >= self.deadline

    @property
    def lost(self) -> bool:
        """Whether another worker took the job over; nothing this one writes is kept."""
        return self._lost

    @property
    def is_finishing(self) -> bool:
        """Whether the task ended and its final state waits to be written."""
        return self._finishing

    @property
    def latest_progress(self) -> Progress:
        """The last progress the task reported."""
        return self._latest

    @property
    def unstored_progress(self) -> Progress | None:
        """The last progress reported, if it may not be stored yet; else ``None``.

        The final write carries it, so no report is lost, and a job that
        reported nothing (or nothing new) writes no progress at the end.
        """
        latest = self._latest
        return None if latest is self._stored else latest

    def progress(
        self,
        percentage: float | None = None,
        message: str | None = None,
        done: int | None = None,
        total: int | None = None,
    ) -> None:
        """Report progress, then :meth:`check`.

        :param percentage: 0 to 100; computed from *done* and *total* when not given.
        :param message: A line for people, such as ``"Processed 450 of 1000 symbols"``.
        :param done: Items processed so far.
        :param total: Items to process in all.
        :raises JobCancelled: if a cancel was requested.
        :raises JobTimeout: if the job ran past its timeout.
        :raises JobInterrupted: if the job was given back or taken over.
        """
        if percentage is None and done is not None and total:
            percentage = done * 100 / total
        if percentage is not None:
            percentage = round(min(max(float(percentage), 0.0), 100.0), 2)
        with self._lock:
            latest = self._latest
            self._latest = Progress(
                percentage=latest.percentage if percentage is None else percentage,
                message=latest.message if message is None else str(message),
                items_processed=latest.items_processed if done is None else int(done),
                total_items=latest.total_items if total is None else int(total),
            )
            self._dirty = True
        if time.monotonic() - self._last_write >= self._interval:
            self.flush_progress()
        self.check()

    def check(self) -> None:
        """Raise if the job must stop; call it now and then in a long loop.

        :raises JobCancelled: if a cancel was requested.
        :raises JobTimeout: if the job ran past its timeout.
        :raises JobInterrupted: if the job was given back at shutdown or another
            worker took it over.
        """
        if self.timed_out:
            raise JobTimeout(f"Job '{self.id}' ran past its timeout of {self.timeout:g} seconds.")
        if self._cancel_requested:
            raise JobCancelled(f"Job '{self.id}' was cancelled.")
        if self._lost:
            raise JobInterrupted(f"Job '{self.id}' was taken over by another worker.")

    # -- used by the worker ------------------------------------------------

    def flush_progress(self) -> None:
        """Store the latest progress if it changed since the last write."""
        with self._lock:
            if not self._dirty or self._lost:
                return
            latest = self._latest
            self._dirty = False
            self._last_write = time.monotonic()
        try:
            state = self._backend.progress(self.id, self.token, latest, lease=self._lease)
        except BackendUnavailable:
            with self._lock:
                self._dirty = True
            return
        self._learn(state)
        if state is not LeaseState.LOST:  # LOST: nothing stored
            self._stored = latest
            if self._on_stored is not None:
                self._on_stored(self)

    def heartbeat(self) -> None:
        """Renew the lease (storing progress when there is some to store)."""
        if self._dirty:
            self.flush_progress()
            return
        self._learn(self._backend.heartbeat(self.id, self.token, lease=self._lease))

    def is_progress_due(self) -> bool:
        """Whether unstored progress waited a full progress interval already."""
        return self._dirty and time.monotonic() - self._last_write >= self._interval

    def mark_cancel_requested(self) -> None:
        """Record that a cancel was requested; the task sees it at its next check."""
        self._cancel_requested = True

    def mark_finishing(self) -> None:
        """Record that the task ended; its outcome, decided, is no longer a timeout's to change."""
        self._finishing = True

    def mark_lost(self) -> None:
        """Record that the job was given back; the task sees it at its next check."""
        self._lost = True

    def mark_timed_out(self) -> bool:
        """Record that the job ran past its timeout; ``False`` if it was marked already."""
        if self._timed_out:
            return False
        self._timed_out = True
        return True

    def _learn(self, state: LeaseState) -> None:
        if state is LeaseState.CANCEL_REQUESTED:
            self._cancel_requested = True
        elif state is LeaseState.LOST:
            self._lost = True


_current: ContextVar[JobContext] = ContextVar("flask_jobrunner.current_job")

#: The job the current task runs for: a :class:`JobContext`, valid inside a
#: running task only (like :data:`flask.current_app`, it is context-local).
current_job: JobContext = LocalProxy(  # type: ignore[assignment]
    _current, unbound_message="Working outside of a job: 'current_job' exists only inside a task."
)
