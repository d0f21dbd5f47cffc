"""The in-memory backend: one process, lock-protected, at-most-once.

Jobs live in this process's memory and die with it. Use it for development
and tests, or where losing queued work on a restart is acceptable; SQLite
keeps jobs across restarts with no more setup.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from ..errors import BackendUnavailable, InvalidArguments, JobConflict
from ..record import Claim, ErrorType, JobRecord, JobStatus, LeaseState, Outcome, Progress, utcnow
from .base import Backend, check_plain_records, decode_cursor, encode_cursor, is_newer


def _first_entry(heap: list[tuple[float, int, str]]) -> tuple[float, int, str]:
    return heap[0]


def _is_finished(record: JobRecord) -> bool:
    return record.is_finished


def _notify_locked(waiters: dict[str, set[threading.Condition]], job_id: str) -> None:
    # One dict look-up when nobody waits: this runs on every write.
    conditions = waiters.get(job_id)
    if conditions:
        for condition in conditions:
            condition.notify()


class MemoryBackend(Backend):
    """Keeps jobs in a dict behind one lock; idle workers wait on a condition.

    Finished jobs are purged after *result_ttl* seconds, and once *max_jobs*
    are stored the oldest finished job is evicted to make room. When every
    stored job is unfinished, a new one is refused with
    :class:`~flask_jobrunner.errors.BackendUnavailable`.

    :param result_ttl: Seconds a finished job is kept.
    :param max_jobs: The most jobs kept at once.
    """

    blocking = True
    is_shared = False

    def __init__(self, *, result_ttl: float = 86400, max_jobs: int = 10000) -> None:
        super().__init__(result_ttl=result_ttl)
        self.max_jobs = max_jobs
        self._lock = threading.Lock()
        self._work_ready = threading.Condition(self._lock)
        self._jobs: dict[str, JobRecord] = {}
        # Heaps of (run_at timestamp, sequence, job id) per queue. An entry is
        # live only while its sequence matches _ready_seq for that job.
        self._ready: dict[str, list[tuple[float, int, str]]] = {}
        self._ready_seq: dict[str, int] = {}
        self._sequence = 0
        self._running: set[str] = set()
        self._finished: OrderedDict[str, float] = OrderedDict()
        self._unique: dict[str, str] = {}
        self._idempotency: dict[str, str] = {}
        self._interrupts = 0
        # Claim tokens only need to differ from every other claim of this process;
        # a counter does that without a system call per claim.
        self._token_prefix = secrets.token_hex(8)
        self._claim_numbers = itertools.count(1)
        # The conditions of the callers in wait_changed and in wait_finished, by job id.
        self._watchers: dict[str, set[threading.Condition]] = {}
        self._finish_waiters: dict[str, set[threading.Condition]] = {}

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> MemoryBackend:
        """Create a backend for ``memory://``; uses ``result_ttl`` and ``max_jobs``."""
        return cls(
            result_ttl=settings.get("result_ttl", 86400), max_jobs=settings.get("max_jobs", 10000)
        )

    def now(self) -> datetime:
        """The clock of this process."""
        return utcnow()

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def enqueue(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Store a pending job (see :meth:`Backend.enqueue`)."""
        with self._lock:
            self._purge_locked(time.time())
            if record.idempotency_key is not None:
                first = self._jobs.get(self._idempotency.get(record.idempotency_key, ""))
                if first is not None:
                    return first.copy(), False
            if record.unique_key is not None:
                holder = self._jobs.get(self._unique.get(record.unique_key, ""))
                if holder is not None:
                    raise JobConflict(
                        f"The unique task '{record.task}' already has a job that is"
                        f" {holder.status.value}: '{holder.id}'. Wait for it to finish.",
                        holder.copy(),
                    )
            if len(self._jobs) >= self.max_jobs and not self._evict_locked():
                raise BackendUnavailable(
                    f"The memory backend already holds {self.max_jobs} unfinished jobs"
                    " (JOBRUNNER_MAX_JOBS). Try again when some have finished."
                )
            stored = record.copy()
            stored.status = JobStatus.PENDING
            self._jobs[stored.id] = stored
            if stored.unique_key is not None:
                self._unique[stored.unique_key] = stored.id
            if stored.idempotency_key is not None:
                self._idempotency[stored.idempotency_key] = stored.id
            self._push_ready_locked(stored)
            self._changed_locked(stored.id)
            return stored.copy(), True

    def enqueue_many(self, records: Sequence[JobRecord]) -> None:
        """Store many pending jobs at once (see :meth:`Backend.enqueue_many`): all or none."""
        check_plain_records(records)
        with self._lock:
            self._purge_locked(time.time())
            new = [record for record in records if record.id not in self._jobs]
            # Room for all before any is stored: evicting finished jobs only.
            while len(self._jobs) + len(new) > self.max_jobs:
                if not self._evict_locked():
                    raise BackendUnavailable(
                        f"The memory backend cannot take {len(new)} more jobs: it holds at"
                        f" most {self.max_jobs} (JOBRUNNER_MAX_JOBS) and the rest are"
                        " unfinished. Try again when some have finished."
                    )
            for record in new:
                stored = record.copy()
                stored.status = JobStatus.PENDING
                self._jobs[stored.id] = stored
                self._push_ready_locked(stored)
                self._changed_locked(stored.id)

    def claim(
        self, queues: Sequence[str], *, lease: float, limit: int = 1, timeout: float = 0
    ) -> list[Claim]:
        """Take up to *limit* ready jobs, waiting up to *timeout* for one."""
        deadline = time.monotonic() + timeout
        with self._lock:
            interrupts = self._interrupts
            while True:
                now = time.time()
                claims = self._claim_ready_locked(queues, now, lease, limit)
                remaining = deadline - time.monotonic()
                if claims or remaining <= 0 or self._interrupts != interrupts:
                    return claims
                next_run = self._next_run_at_locked(queues)
                if next_run is not None:
                    remaining = min(remaining, max(next_run - now, 0.001))
                self._work_ready.wait(remaining)

    def heartbeat(self, job_id: str, token: str, *, lease: float) -> LeaseState:
        """Renew a held job's lease."""
        with self._lock:
            record = self._held_locked(job_id, token)
            if record is None:
                return LeaseState.LOST
            record.lease_expires_at = utcnow() + timedelta(seconds=lease)
            return LeaseState.CANCEL_REQUESTED if record.cancel_requested else LeaseState.HELD

    def progress(self, job_id: str, token: str, progress: Progress, *, lease: float) -> LeaseState:
        """Store progress of a held job and renew its lease."""
        with self._lock:
            record = self._held_locked(job_id, token)
            if record is None:
                return LeaseState.LOST
            record.apply_progress(progress)
            record.updated_at = utcnow()
            record.lease_expires_at = record.updated_at + timedelta(seconds=lease)
            self._changed_locked(job_id)
            return LeaseState.CANCEL_REQUESTED if record.cancel_requested else LeaseState.HELD

    def finish(self, job_id: str, token: str, outcome: Outcome) -> bool:
        """Write the final state of a held job."""
        with self._lock:
            record = self._held_locked(job_id, token)
            if record is None:
                return False
            record.apply_outcome(outcome)
            self._finish_locked(record, outcome.status)
            self._changed_locked(job_id)
            return True

    def retry_later(self, job_id: str, token: str, run_at: datetime, error: Outcome) -> bool:
        """Put a held job back as pending until *run_at*."""
        with self._lock:
            record = self._held_locked(job_id, token)
            if record is None:
                return False
            record.apply_outcome(error)
            record.run_at = run_at
            self._requeue_locked(record)
            self._changed_locked(job_id)
            return True

    def release(self, job_id: str, token: str) -> bool:
        """Give a held job back to the queue at once."""
        with self._lock:
            record = self._held_locked(job_id, token)
            if record is None:
                return False
            record.attempts = max(record.attempts - 1, 0)
            record.run_at = None
            self._requeue_locked(record)
            self._changed_locked(job_id)
            return True

    def request_cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a pending job, or ask a running one to stop."""
        with self._lock:
            record = self._jobs.get(job_id)
            if record is None:
                return None
            if record.status is JobStatus.PENDING:
                self._ready_seq.pop(record.id, None)
                self._finish_locked(record, JobStatus.CANCELLED)
                self._compact_ready_locked(record.queue)
            elif record.status is JobStatus.IN_PROGRESS:
                record.cancel_requested = True
                record.updated_at = utcnow()
            self._changed_locked(job_id)
            return record.copy()

    def get(self, job_id: str) -> JobRecord | None:
        """A copy of the job, or ``None``."""
        with self._lock:
            record = self._jobs.get(job_id)
            return None if record is None else record.copy()

    def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        task: str | None = None,
        created_by: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """A newest-first page of jobs."""
        if limit < 1:
            raise InvalidArguments(f"'limit' must be at least 1, not {limit}.")
        after = decode_cursor(cursor) if cursor else None
        with self._lock:
            matching = [
                record
                for record in self._jobs.values()
                if (status is None or record.status is status)
                and (task is None or record.task == task)
                and (created_by is None or record.created_by == created_by)
                and (after is None or (record.created_at, record.id) < after)
            ]
            matching.sort(key=lambda record: (record.created_at, record.id), reverse=True)
            page = [record.copy() for record in matching[:limit]]
        next_cursor = encode_cursor(page[-1]) if len(matching) > limit else None
        return page, next_cursor

    def purge_expired(self) -> int:
        """Delete finished jobs past the result TTL."""
        with self._lock:
            return self._purge_locked(time.time())

    def recover_expired(self, *, max_recoveries: int) -> list[JobRecord]:
        """Take back running jobs whose lease ran out."""
        now = utcnow()
        changed = []
        with self._lock:
            for job_id in list(self._running):
                record = self._jobs[job_id]
                if record.lease_expires_at is None or record.lease_expires_at > now:
                    continue
                if record.recoveries < max_recoveries or record.cancel_requested:
                    record.recoveries += 1
                    record.run_at = None
                    self._requeue_locked(record)
                else:
                    record.error = (
                        "Internal error: the job was lost with its worker"
                        f" {record.recoveries + 1} times and is not tried again."
                    )
                    record.error_type = ErrorType.INTERRUPTED
                    self._finish_locked(record, JobStatus.FAILED)
                self._changed_locked(job_id)
                changed.append(record.copy())
        return changed

    def counts(self) -> dict[JobStatus, int]:
        """How many jobs are in each status."""
        totals = dict.fromkeys(JobStatus, 0)
        with self._lock:
            for record in self._jobs.values():
                totals[record.status] += 1
        return totals

    def clear(self) -> None:
        """Forget every job."""
        with self._lock:
            for store in (self._jobs, self._ready, self._ready_seq, self._finished):
                store.clear()
            self._running.clear()
            self._unique.clear()
            self._idempotency.clear()

    def wait_finished(self, job_id: str, timeout: float) -> JobRecord | None:
        """Wait for the job to finish, woken at once when it does."""
        deadline = time.monotonic() + timeout
        with self._lock:
            return self._wait_locked(self._finish_waiters, job_id, deadline, _is_finished)

    def interrupt(self) -> None:
        """Wake every blocked :meth:`claim`."""
        with self._lock:
            self._interrupts += 1
            self._work_ready.notify_all()

    # -- helpers; each expects the lock to be held --------------------------

    def _held_locked(self, job_id: str, token: str) -> JobRecord | None:
        record = self._jobs.get(job_id)
        if record is None or record.status is not JobStatus.IN_PROGRESS or record.token != token:
            return None
        return record

    def _push_ready_locked(self, record: JobRecord) -> None:
        self._sequence += 1
        # Ordered by when the job became due (its run_at, else its creation, never
        # later than now): the oldest due job goes first, so a job back from a
        # retry, release or recovery never starves behind newer ones.
        if record.run_at is not None:
            due = record.run_at.timestamp()
        else:
            due = min(record.created_at.timestamp(), time.time())
        heapq.heappush(self._ready.setdefault(record.queue, []), (due, self._sequence, record.id))
        self._ready_seq[record.id] = self._sequence
        # Every claimer wakes: one waiting on another queue must not swallow the signal.
        self._work_ready.notify_all()

    def _claim_ready_locked(
        self, queues: Sequence[str], now: float, lease: float, limit: int
    ) -> list[Claim]:
        claims: list[Claim] = []
        heaps = [self._ready[queue] for queue in queues if queue in self._ready]
        claimed_at = expires_at = None
        while len(claims) < limit:
            live = [heap for heap in heaps if heap and heap[0][0] <= now]
            if not live:
                break
            heap = live[0] if len(live) == 1 else min(live, key=_first_entry)
            _, sequence, job_id = heapq.heappop(heap)
            if self._ready_seq.get(job_id) != sequence:
                continue
            del self._ready_seq[job_id]
            record = self._jobs[job_id]
            record.status = JobStatus.IN_PROGRESS
            record.token = f"{self._token_prefix}-{next(self._claim_numbers)}"
            record.attempts += 1
            record.cancel_requested = False
            if claimed_at is None:
                claimed_at = utcnow()
                expires_at = claimed_at + timedelta(seconds=lease)
            record.updated_at = claimed_at
            record.started_at = record.started_at or claimed_at
            record.lease_expires_at = expires_at
            self._running.add(job_id)
            self._changed_locked(job_id)
            claims.append(Claim(record.copy(), record.token))
        return claims

    def _next_run_at_locked(self, queues: Sequence[str]) -> float | None:
        # Drop dead entries at the top so a cancelled retry does not keep waking us.
        times = []
        for queue in queues:
            heap = self._ready.get(queue)
            while heap and self._ready_seq.get(heap[0][2]) != heap[0][1]:
                heapq.heappop(heap)
            if heap:
                times.append(heap[0][0])
        return min(times, default=None)

    def _compact_ready_locked(self, queue: str) -> None:
        # A cancelled pending job leaves a dead entry in its heap; rebuild the
        # heap once dead entries outnumber the live ones, so that cancelling
        # jobs nobody claims (or scheduled far ahead) never grows memory.
        heap = self._ready.get(queue)
        if heap is not None and len(heap) > 2 * len(self._ready_seq) + 64:
            heap[:] = [entry for entry in heap if self._ready_seq.get(entry[2]) == entry[1]]
            heapq.heapify(heap)

    def _requeue_locked(self, record: JobRecord) -> None:
        if record.cancel_requested:  # given back after a cancel request: it is not run again
            self._finish_locked(record, JobStatus.CANCELLED)
            return
        self._running.discard(record.id)
        record.status = JobStatus.PENDING
        record.token = None
        record.lease_expires_at = None
        record.updated_at = utcnow()
        self._push_ready_locked(record)

    def _finish_locked(self, record: JobRecord, status: JobStatus) -> None:
        self._running.discard(record.id)
        record.status = status
        record.token = None
        record.lease_expires_at = None
        record.finished_at = record.updated_at = utcnow()
        if record.unique_key is not None and self._unique.get(record.unique_key) == record.id:
            del self._unique[record.unique_key]
        self._finished[record.id] = time.time()
        _notify_locked(self._finish_waiters, record.id)

    def _evict_locked(self) -> bool:
        if not self._finished:
            return False
        job_id, _ = self._finished.popitem(last=False)
        self._forget_locked(job_id)
        return True

    def _purge_locked(self, now: float) -> int:
        purged = 0
        while self._finished:
            job_id, finished = next(iter(self._finished.items()))
            if finished + self.result_ttl > now:
                break
            del self._finished[job_id]
            self._forget_locked(job_id)
            purged += 1
        return purged

    def _forget_locked(self, job_id: str) -> None:
        record = self._jobs.pop(job_id)
        key = record.idempotency_key
        if key is not None and self._idempotency.get(key) == job_id:
            del self._idempotency[key]

    # -- change notification (wait_changed) ----------------------------------

    def wait_changed(self, job_id: str, after: datetime | None, timeout: float) -> JobRecord | None:
        """Wait for the job to change after revision *after*, woken at once when it does."""
        deadline = time.monotonic() + timeout
        with self._lock:
            return self._wait_locked(
                self._watchers, job_id, deadline, lambda record: is_newer(record, after)
            )

    def _changed_locked(self, job_id: str) -> None:
        _notify_locked(self._watchers, job_id)

    def _wait_locked(
        self,
        waiters: dict[str, set[threading.Condition]],
        job_id: str,
        deadline: float,
        is_done: Callable[[JobRecord], bool],
    ) -> JobRecord | None:
        # A condition of the caller's own, in *waiters* under the job's id, so that
        # only a change of this job wakes it, and no other job's.
        record = self._jobs.get(job_id)
        if record is None or is_done(record) or deadline <= time.monotonic():
            return None if record is None else record.copy()
        woken = threading.Condition(self._lock)
        waiters.setdefault(job_id, set()).add(woken)
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                woken.wait(remaining)
                record = self._jobs.get(job_id)
                if record is None or is_done(record):
                    break
        finally:
            waiting = waiters[job_id]
            waiting.discard(woken)
            if not waiting:
                del waiters[job_id]
        record = self._jobs.get(job_id)
        return None if record is None else record.copy()

    # -- periodic schedules (claim_tick) --------------------------------------

    # Created on first use: (schedule, tick) -> when the record may be dropped.
    _claimed_ticks: OrderedDict[tuple[str, datetime], float] | None = None

    def claim_tick(self, schedule: str, tick: datetime) -> bool:
        """Record a schedule's tick; ``True`` for the first caller in this process only."""
        key = (schedule, tick.astimezone(timezone.utc))
        now = time.time()
        with self._lock:
            if self._claimed_ticks is None:
                self._claimed_ticks = OrderedDict()
            ticks = self._claimed_ticks
            # Kept for the result TTL from the claim, so oldest first is insertion order.
            while ticks and next(iter(ticks.values())) <= now:
                ticks.popitem(last=False)
            if key in ticks:
                return False
            ticks[key] = now + self.result_ttl
            return True
