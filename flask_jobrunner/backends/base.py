"""The backend contract: job state and the queue in one place.

A backend knows nothing of Flask. It stores :class:`~flask_jobrunner.record.JobRecord`
values and moves them between states atomically. Every write made on behalf
of a worker carries the claim token, so a worker whose lease was taken can no
longer change the job.
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ..errors import InvalidArguments
from ..record import Claim, JobRecord, JobStatus, LeaseState, Outcome, Progress


class Backend(abc.ABC):
    """Stores jobs and hands them out to workers.

    Subclasses fill in the abstract methods; each docstring states the
    guarantee an implementation must keep. The contract test suite in
    ``tests/`` checks every backend against it.

    :param result_ttl: Seconds a finished job is kept before it may be purged.
    """

    #: Whether :meth:`claim` blocks until work arrives instead of returning at once.
    blocking: bool = False
    #: Whether the backend is shared between processes (jobs survive the process).
    is_shared: bool = False

    def __init__(self, *, result_ttl: float = 86400) -> None:
        self.result_ttl = result_ttl

    @classmethod
    @abc.abstractmethod
    def from_url(cls, url: str, **settings: Any) -> Backend:
        """Create the backend for *url*.

        *settings* are the app's ``JOBRUNNER_*`` values in lower case without
        the prefix (``result_ttl``, ``max_jobs``, ...); a backend takes those
        it uses and ignores the rest.
        """

    @abc.abstractmethod
    def now(self) -> datetime:
        """The backend's clock, as a timezone-aware UTC datetime; leases use it."""

    @abc.abstractmethod
    def enqueue(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Store a new pending job, atomically with its uniqueness checks.

        If ``record.idempotency_key`` matches a job stored within the result
        TTL, nothing is stored and that job is returned with ``False``. If
        ``record.unique_key`` matches a pending or running job,
        :class:`~flask_jobrunner.errors.JobConflict` is raised and nothing is
        stored. Otherwise the record is stored and returned with ``True``.
        """

    def enqueue_many(self, records: Sequence[JobRecord]) -> None:
        """Store many new pending jobs, in as few round trips as the backend allows.

        Each record is stored as :meth:`enqueue` stores it (its ``run_at`` is
        honoured, waiting claims are woken), but none may carry a
        ``unique_key`` or an ``idempotency_key``: those need a check per job.
        A record whose id is stored already is left as it is, as
        :meth:`enqueue` does, so a call repeated after its answer was lost
        stores no job twice. Overrides store all of the records or none.
        The default calls :meth:`enqueue` for each record, so a failure part
        way leaves the records before it stored.

        :raises ValueError: if a record has a unique or an idempotency key;
            nothing is stored then.
        """
        check_plain_records(records)
        for record in records:
            self.enqueue(record)

    @abc.abstractmethod
    def claim(
        self, queues: Sequence[str], *, lease: float, limit: int = 1, timeout: float = 0
    ) -> list[Claim]:
        """Atomically take up to *limit* ready jobs from *queues*, oldest first.

        Jobs are taken in the order they became due: by ``run_at``, else by
        ``created_at``, across all *queues*; so a job given back keeps its
        place and a due retry never waits behind newer jobs.

        Each claimed job becomes ``in_progress`` with a new token, a lease of
        *lease* seconds, ``attempts`` increased by one and ``started_at`` set
        on its first run. No job is ever handed to two claims at once. With a
        *timeout*, it waits up to that long for work (a :attr:`blocking`
        backend is woken at once when work arrives, others poll) and returns
        an empty list when there is none; the worker relies on that wait.
        """

    @abc.abstractmethod
    def heartbeat(self, job_id: str, token: str, *, lease: float) -> LeaseState:
        """Renew the lease of a held job for *lease* more seconds.

        Returns :attr:`~LeaseState.LOST` (and changes nothing) when *token* no
        longer holds the job.
        """

    @abc.abstractmethod
    def progress(self, job_id: str, token: str, progress: Progress, *, lease: float) -> LeaseState:
        """Store the progress of a held job and renew its lease, like :meth:`heartbeat`."""

    @abc.abstractmethod
    def finish(self, job_id: str, token: str, outcome: Outcome) -> bool:
        """Write the final state of a held job; returns ``False`` if *token* lost it.

        A job reaches exactly one final state: once finished, every later
        write is refused. The unique key of the job is freed.
        """

    def finish_many(self, finishes: Sequence[tuple[str, str, Outcome]]) -> list[bool]:
        """:meth:`finish` each ``(job_id, token, outcome)``, in as few round trips as possible.

        Returns one answer per entry, in order, each what :meth:`finish`
        would have returned for it. Each finish stands alone: one refused
        (its token lost the job) changes nothing for the others; but if the
        backend fails, any of them may or may not have been stored, and the
        error is raised. The default calls :meth:`finish` for each entry.

        A backend that overrides it gets the worker's batched finishes: the
        pool threads hand their final states to one thread, which sends
        those that gathered while its previous call was in flight in one
        call. With the default, each pool thread calls :meth:`finish` itself.
        """
        return [self.finish(job_id, token, outcome) for job_id, token, outcome in finishes]

    @abc.abstractmethod
    def retry_later(self, job_id: str, token: str, run_at: datetime, error: Outcome) -> bool:
        """Put a held job back as pending, claimable again from *run_at*.

        The error of the failed attempt is kept for the status document. A
        job whose cancel was requested becomes ``cancelled`` instead.
        Returns ``False`` if *token* no longer holds the job.
        """

    @abc.abstractmethod
    def release(self, job_id: str, token: str) -> bool:
        """Give a held job back to the queue at once, not counting this attempt.

        Used at shutdown. A job whose cancel was requested becomes
        ``cancelled`` instead. Returns ``False`` if *token* no longer holds the job.
        """

    @abc.abstractmethod
    def request_cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a job, and return it as it is afterwards (``None`` if unknown).

        A pending job becomes ``cancelled`` at once. A running job gets
        ``cancel_requested`` and stops when its task next checks. A finished
        job is returned unchanged.
        """

    @abc.abstractmethod
    def get(self, job_id: str) -> JobRecord | None:
        """The job with this id, or ``None`` if it is unknown or expired.

        The returned record is a copy: changing it changes nothing stored.
        """

    @abc.abstractmethod
    def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        task: str | None = None,
        created_by: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """A page of jobs, newest first, and the cursor of the next page (or ``None``).

        The filters combine; *cursor* is a value returned by an earlier call.

        :raises InvalidArguments: if *cursor* is not such a value or *limit* is under 1.
        """

    @abc.abstractmethod
    def purge_expired(self) -> int:
        """Delete finished jobs older than the result TTL; returns how many went."""

    @abc.abstractmethod
    def recover_expired(self, *, max_recoveries: int) -> list[JobRecord]:
        """Take back running jobs whose lease ran out; returns the jobs it changed.

        A job recovered fewer than *max_recoveries* times becomes pending again
        (``recoveries`` increased); after that it ends ``failed`` with error
        type ``interrupted``; a job whose cancel was requested ends
        ``cancelled``. Its old token can write nothing more.
        """

    @abc.abstractmethod
    def clear(self) -> None:
        """Delete every job, finished or not; for tests and for starting over."""

    def setup(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Create what the backend stores jobs in (SQL tables); safe to call again."""

    @abc.abstractmethod
    def counts(self) -> dict[JobStatus, int]:
        """How many stored jobs are in each status."""

    def wait_finished(self, job_id: str, timeout: float) -> JobRecord | None:
        """Wait up to *timeout* seconds for the job to finish; returns it as it is then.

        The default polls :meth:`get` with a growing interval; backends that
        can be told of a finish override it.
        """
        deadline = time.monotonic() + timeout
        interval = 0.005
        while True:
            record = self.get(job_id)
            remaining = deadline - time.monotonic()
            if record is None or record.is_finished or remaining <= 0:
                return record
            time.sleep(min(interval, remaining))
            interval = min(interval * 2, 0.25)

    def wait_changed(self, job_id: str, after: datetime | None, timeout: float) -> JobRecord | None:
        """Wait up to *timeout* seconds for the job to change after revision *after*.

        A job's revision is its ``updated_at`` (its ``created_at`` before the
        first change; see :func:`revision`): every stored change but a
        heartbeat moves it forward, strictly, per job. Returns the job as
        soon as its revision is later than *after*, at once if it already is
        or *after* is ``None``; else the job as it is when *timeout* passes;
        ``None`` if the job is unknown or expired. An override must start
        listening before it reads the job, so that a change between the two
        is not missed.

        The default polls :meth:`get` every 0.1 to 0.25 seconds; backends that
        are told of changes override it.
        """
        deadline = time.monotonic() + timeout
        interval = 0.1
        while True:
            record = self.get(job_id)
            remaining = deadline - time.monotonic()
            if record is None or is_newer(record, after) or remaining <= 0:
                return record
            time.sleep(min(interval, remaining))
            interval = min(interval * 1.25, 0.25)

    def interrupt(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Wake every caller blocked in :meth:`claim` so it can see a stop request."""

    def close(self) -> None:  # noqa: B027 - optional hook with a no-op default
        """Release connections and threads held by the backend."""

    def claim_tick(self, schedule: str, tick: datetime) -> bool:
        """Record that the tick at *tick* of periodic schedule *schedule* was submitted.

        Atomic: ``True`` for exactly one caller across every process sharing
        the backend, ``False`` for every other. Records are dropped once
        older than the result TTL. The default refuses: a backend that can
        run periodic schedules overrides it.

        :param schedule: The schedule's name.
        :param tick: The tick, a timezone-aware datetime.
        """
        raise NotImplementedError(
            f"The {type(self).__name__} cannot run periodic schedules: it has no 'claim_tick'."
        )


def revision(record: JobRecord) -> datetime:
    """The revision of *record*: its ``updated_at``, or its ``created_at`` before any change."""
    return record.updated_at or record.created_at


def is_newer(record: JobRecord, after: datetime | None) -> bool:
    """Whether *record* changed after revision *after* (always, for ``None``)."""
    return after is None or revision(record) > after


def check_plain_records(records: Sequence[JobRecord]) -> None:
    """Refuse, for :meth:`Backend.enqueue_many`, records that need a check per job.

    :raises ValueError: naming the first record with a unique or an idempotency key.
    """
    for number, record in enumerate(records):
        if record.unique_key is not None or record.idempotency_key is not None:
            raise ValueError(
                f"Record {number} (job '{record.id}') has a unique or an idempotency key;"
                " 'enqueue_many' stores only jobs without them. Use 'enqueue' for it."
            )


def encode_cursor(record: JobRecord) -> str:
    """An opaque cursor pointing just after *record* in newest-first order."""
    raw = json.dumps([record.created_at.isoformat(), record.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The ``(created_at, id)`` position of a cursor from :func:`encode_cursor`.

    :raises InvalidArguments: if the cursor was not made by :func:`encode_cursor`.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, job_id = json.loads(raw)
        moment = datetime.fromisoformat(created_at)
        if moment.utcoffset() is None:  # a naive time cannot be compared with stored ones
            raise ValueError("the cursor's time has no UTC offset")
        return moment, str(job_id)
    except (ValueError, TypeError, RecursionError, binascii.Error) as error:
        raise InvalidArguments(
            f"The cursor {cursor!r} is not valid. Pass a 'next_cursor' value from a previous page."
        ) from error
