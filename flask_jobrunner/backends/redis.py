"""The Redis backend: many processes and machines share one Redis server.

Every state transition is one Lua script (see
:mod:`flask_jobrunner.backends._redis_scripts`), atomic and one round trip;
every write of a worker checks its claim token there; the scripts' arguments
and answers are built and read by :mod:`flask_jobrunner.backends._redis_codec`.
Leases run on Redis's clock. Finished jobs expire after the result TTL on
their own, and each transition is published as JSON on ``<prefix>:events:<id>``.

Every key starts with the prefix (``JOBRUNNER_REDIS_PREFIX``, default
``jobrunner``):

======================================  ==========================================
``<prefix>:job:<id>``                   hash: the job (expires once finished)
``<prefix>:queue:<queue>``              sorted set: pending job ids by due time (us)
``<prefix>:notify:<queue>``             list: at most one wake-up marker for claimers
``<prefix>:running``                    sorted set: running job ids by lease expiry (us)
``<prefix>:status:<status>``            index: the jobs in each status
``<prefix>:task:<task>``                index: the jobs of each task
``<prefix>:user:<created_by>``          index: the jobs of each submitter
``<prefix>:expires:<status>``           sorted set: finished jobs by expiry (ms)
``<prefix>:unique:<key>``               string: the pending or running job of a unique task
``<prefix>:idempotency:<key>``          string: the job of an idempotency key
``<prefix>:wake:<uuid>``                list: wakes one blocked :meth:`~RedisBackend.claim`
``<prefix>:tick:<schedule>:<us>``       string: a tick of a periodic schedule, once submitted
======================================  ==========================================

An index is a sorted set whose members all score 0 and read
``<created_at in us, 18 digits>:<id>``, so its lexical order is the listing
order and a cursor maps to a ``ZRANGE ... BYLEX REV`` bound. A listing of
every job merges the status indexes, since each job is in one of them;
``<prefix>:jobs``, an index of every job that older versions wrote at each
submit, is no longer written, and purging empties it. Index entries of
expired jobs are dropped by :meth:`~RedisBackend.purge_expired`, and by a
listing that walks past them; counts read the expiry sets, so they are exact
in between.

An idle :meth:`~RedisBackend.claim` blocks in ``BLPOP`` on the ``notify``
lists of its queues and on a ``wake`` list of its own. Every script that
makes a job ready pushes a marker on its queue's list (kept to one element),
which wakes one waiting claimer; a claimer that took its limit while due
jobs remain pushes it again, so waiting claimers wake one after another.
The claim script is sent in the same round trip, right behind the ``BLPOP``,
so Redis runs it as soon as the wait ends and a woken claimer gets its jobs
with the wake-up; a claim that follows one which left its queues drained goes
straight to that wait. :meth:`~RedisBackend.interrupt` pushes two markers to the
``wake`` list of each claim of its instance that is blocked: one ends the
``BLPOP``, the other tells the claim behind it to take nothing (and to pass
on a queue's marker if the ``BLPOP`` took that one instead).

Needs Redis 6.2 or later (``ZRANGE ... BYSCORE``, fractional ``BLPOP``
timeouts).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.client import PubSub
from redis.commands.core import Script
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.retry import Retry

from ..errors import BackendUnavailable, InvalidArguments, JobConflict
from ..record import Claim, JobRecord, JobStatus, LeaseState, Outcome, Progress
from . import _redis_codec as codec
from . import _redis_scripts as scripts
from ._drained import DrainedQueues
from .base import Backend, check_plain_records, decode_cursor, encode_cursor, is_newer

logger = logging.getLogger("flask_jobrunner")

_FINAL = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
_LEASE_STATES = {state.value: state for state in LeaseState}

#: Errors that mean the server cannot serve us now, as opposed to a bug.
_UNAVAILABLE: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OutOfMemoryError,
    ReadOnlyError,
    ClusterDownError,
    TryAgainError,
)

#: Jobs recovered, and expired jobs purged per status, in one script run.
_BATCH = 500
#: Jobs one ``ENQUEUE_MANY`` script stores; more go as several in one transaction.
_ENQUEUE_CHUNK = 10_000
#: Index entries one listing script looks at before the next round trip.
_LIST_BUDGET = 2000
#: Longest single BLPOP; it must stay below the socket timeout.
_MAX_BLOCK = 2.0
#: Seconds a wake-up pushed by :meth:`RedisBackend.interrupt` is kept.
_WAKE_TTL_MS = 60_000
#: Pub/sub connections kept open for the next wait.
_IDLE_SUBSCRIBERS = 8
#: Seconds a claim trusts the word of the last one that its queues hold no due
#: job. Every way a job gets due leaves a wake-up but one: a wake-up taken by
#: a claimer that then left (interrupted, disconnected) while a scheduled job
#: it knew of was not due yet. Such a job waits for a claim's next BLPOP to end.
_DRAINED_FOR = 0.05


class RedisBackend(Backend):
    """Keeps jobs in Redis; any number of processes and machines share them.

    Claims are atomic Lua scripts, so no job is handed out twice; an idle
    :meth:`claim` blocks in ``BLPOP`` and is woken as soon as a job is
    enqueued anywhere. Finished jobs expire after *result_ttl* seconds.

    :param client: The client to use. It may have ``decode_responses`` on or
        off; for a client you pass, :meth:`close` leaves its pool open.
    :param result_ttl: Seconds a finished job is kept.
    :param prefix: The start of every key; on Redis Cluster give it a hash
        tag, such as ``{jobrunner}``, so all keys share one slot.
    """

    blocking = True
    is_shared = True

    def __init__(
        self, client: redis.Redis, *, result_ttl: float = 86400, prefix: str = "jobrunner"
    ) -> None:
        super().__init__(result_ttl=result_ttl)
        #: The redis-py client every call goes through.
        self.client = client
        #: The start of every key, without the ``:`` that follows it.
        self.prefix = prefix
        self._p = f"{prefix}:"
        self._owns_client = False
        self._where = _describe(client)
        timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        # A BLPOP longer than the socket timeout would end in a TimeoutError.
        self._max_block = _MAX_BLOCK if timeout is None else max(min(_MAX_BLOCK, timeout - 1), 0.1)
        self._lock = threading.Lock()
        self._interrupts = 0
        self._waiting: set[str] = set()
        # Queues a claim found with no due job, and when the next one is due.
        self._drained = DrainedQueues()
        self._idle_subscribers: list[PubSub] = []
        # ENQUEUE_PLAIN's shared argument, by queue, task and creator (see _plain_shared).
        self._shared: dict[tuple[str, str, str | None], bytes] = {}
        encoder = client.get_encoder()
        self._encoding, self._encoding_errors = encoder.encoding, encoder.encoding_errors
        self._subscriber_pid = os.getpid()
        register = client.register_script
        self._enqueue = register(scripts.ENQUEUE)
        self._enqueue_plain = register(scripts.ENQUEUE_PLAIN)
        self._enqueue_many = register(scripts.ENQUEUE_MANY)
        self._claim = register(scripts.CLAIM)
        self._heartbeat = register(scripts.HEARTBEAT)
        self._progress = register(scripts.PROGRESS)
        self._finish_many = register(scripts.FINISH_MANY)
        self._retry_later = register(scripts.RETRY_LATER)
        self._release = register(scripts.RELEASE)
        self._request_cancel = register(scripts.REQUEST_CANCEL)
        self._recover_expired = register(scripts.RECOVER_EXPIRED)
        self._purge_expired = register(scripts.PURGE_EXPIRED)
        self._counts = register(scripts.COUNTS)
        self._list_jobs = register(scripts.LIST_JOBS)

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> RedisBackend:
        """Create a backend for a ``redis://``, ``rediss://`` or ``unix://`` URL.

        Uses the ``result_ttl`` and ``redis_prefix`` settings. Connection
        options given in the URL's query (``socket_timeout=``,
        ``health_check_interval=``, ...) override the defaults chosen here:
        a 5 s connect timeout, a 10 s socket timeout, a health check of idle
        connections every 30 s and one quick retry of a dropped connection.
        """
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=5.0,
            socket_timeout=10.0,
            health_check_interval=30,
            # One retry, and only when the connection failed: a timed-out
            # script may have run, and must not run twice.
            retry=Retry(
                ExponentialBackoff(cap=0.2, base=0.05),
                1,
                supported_errors=(redis.exceptions.ConnectionError,),
            ),
        )
        backend = cls(
            client,
            result_ttl=settings.get("result_ttl", 86400),
            prefix=settings.get("redis_prefix", "jobrunner"),
        )
        backend._owns_client = True
        backend._where = _safe_url(url)
        return backend

    def now(self) -> datetime:
        """The Redis server's clock (``TIME``), as an aware UTC datetime."""
        try:
            seconds, micros = self.client.time()
        except _UNAVAILABLE as error:
            raise self._unavailable(error) from error
        return codec.EPOCH + timedelta(seconds=int(seconds), microseconds=int(micros))

    def enqueue(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Store a pending job (see :meth:`Backend.enqueue`); one script with its checks."""
        if self._enqueue_plain_job(record):
            return codec.as_stored(record), True
        doc, index, created, sort_key = codec.encoded(record)
        keys = [
            self._key("job", record.id),
            self._key("queue", record.queue),
            self._key("status", JobStatus.PENDING.value),
            self._key("task", record.task),
        ]
        if record.created_by is not None:
            keys.append(self._key("user", record.created_by))
        reply = self._run(
            self._enqueue,
            keys,
            record.id,
            record.unique_key or "",
            record.idempotency_key or "",
            record.queue,
            created,
            "" if record.run_at is None else codec.micros(record.run_at),
            sort_key,
            doc,
            index,
            *codec.other_fields(record),
        )
        answer = codec.text(reply[0])
        if answer == "created":
            return codec.as_stored(record), True
        existing = codec.record_from_json(reply[1])
        if answer == "conflict":
            raise JobConflict(
                f"The unique task '{record.task}' already has a job that is"
                f" {existing.status.value}: '{existing.id}'. Wait for it to finish.",
                existing,
            )
        # "duplicate": the idempotency key's job; "exists": this very job,
        # stored by an earlier try whose answer was lost.
        return existing, answer == "exists"

    def _enqueue_plain_job(self, record: JobRecord) -> bool:
        """Store a job that needs none of ``ENQUEUE``'s checks; ``False`` if it cannot be.

        The common submit: due at once, no unique or idempotency key, nothing
        set beyond what every new job has. A job that exists already (a
        replay) is left to ``ENQUEUE``, which answers with the stored one.
        The arguments go as bytes, which redis-py passes on as they are.
        """
        if (
            record.run_at is not None
            or record.unique_key is not None
            or record.idempotency_key is not None
            or codec.other_fields(record)
        ):
            return False
        shared = self._plain_shared(record.queue, record.task, record.created_by)
        doc, index, created, sort_key = codec.encoded(record)
        # The script reads the sort key at a fixed place of the index entry.
        if len(sort_key) != codec.SORT_KEY_LENGTH or not index.startswith(sort_key, 2):
            return False
        encoding, errors = self._encoding, self._encoding_errors
        return bool(
            self._evalsha(
                self._enqueue_plain,
                1,
                (self._p + "job:" + record.id).encode(encoding, errors),
                shared,
                b"%d" % created,
                index.encode(encoding, errors),
                doc.encode(encoding, errors),
            )
        )

    def _plain_shared(self, queue: str, task: str, created_by: str | None) -> bytes:
        """``ENQUEUE_PLAIN``'s first argument for the jobs of *queue*, *task* and *created_by*.

        Their keys and names, each after its length, encoded once and kept.
        """
        try:
            return self._shared[queue, task, created_by]
        except KeyError:
            pass
        key = self._key
        parts = (
            queue,
            key("queue", queue),
            key("notify", queue),
            key("status", JobStatus.PENDING.value),
            key("task", task),
            "" if created_by is None else key("user", created_by),
            key("events", ""),
        )
        encoded = [part.encode(self._encoding, self._encoding_errors) for part in parts]
        shared = b"".join(struct.pack(">I", len(part)) + part for part in encoded)
        if len(self._shared) >= codec.ENCODED_CACHE:
            self._shared.clear()
        self._shared[queue, task, created_by] = shared
        return shared

    def enqueue_many(self, records: Sequence[JobRecord]) -> None:
        """Store many pending jobs in one script call (see :meth:`Backend.enqueue_many`).

        More than 10,000 jobs go as several calls in one ``MULTI`` transaction,
        still one round trip, so no script call grows without bound. Either
        way Redis runs the whole batch at once: nothing else interleaves.
        """
        check_plain_records(records)
        if not records:
            return
        keys = [self._key("status", JobStatus.PENDING.value)]
        ttl_ms = max(round(self.result_ttl * 1000), 1)
        commands = [
            [
                "EVALSHA",
                self._enqueue_many.sha,
                1,
                *keys,
                self._p,
                ttl_ms,
                *codec.enqueue_many_args(records[start : start + _ENQUEUE_CHUNK]),
            ]
            for start in range(0, len(records), _ENQUEUE_CHUNK)
        ]
        if len(commands) == 1:
            self._evalsha(self._enqueue_many, *commands[0][2:])
            return
        try:
            # A script missing inside MULTI fails alone at EXEC while the others
            # run: load it first, so the transaction stores all or nothing.
            self.client.script_load(self._enqueue_many.script)
            with self.client.pipeline(transaction=True) as pipe:
                for command in commands:
                    pipe.execute_command(*command)  # type: ignore[no-untyped-call]
                pipe.execute()
        except _UNAVAILABLE as error:
            raise self._unavailable(error) from error
        except ResponseError as error:
            raise self._refused(error) from error

    def claim(
        self, queues: Sequence[str], *, lease: float, limit: int = 1, timeout: float = 0
    ) -> list[Claim]:
        """Take up to *limit* due jobs, oldest first across *queues*, in one script.

        With a *timeout* and nothing due, it blocks in ``BLPOP`` on the
        queues' wake-up lists (and a private one :meth:`interrupt` pushes
        to), at most until the next scheduled job is due, then tries again.
        """
        if not queues or limit < 1:
            return []
        now = time.monotonic()
        deadline = now + timeout
        keys = [self._key("queue", queue) for queue in queues]
        with self._lock:
            interrupts = self._interrupts
        # Tokens are this stem and a counter: unguessable, and unique per claim.
        args: list[str | int] = [round(lease * 1_000_000), limit, os.urandom(16).hex(), *queues]
        queue_names = tuple(queues)
        # A claim that may wait skips the first look when the last one found these
        # queues drained a moment ago: a job made due since then has left a
        # wake-up, which ends the BLPOP at once and the claim behind it takes it.
        due_in = self._drained_due_in(queue_names) if timeout > 0 else None
        reply = None if due_in is not None else self._run(self._claim, keys, *args)
        wake_key: str | None = None
        while True:
            if reply is not None:
                claims = [codec.claim_from_fields(fields) for fields in reply[1:]]
                due_in = self._note_drained(queue_names, int(reply[0]))
                if claims or deadline - time.monotonic() <= 0:
                    return claims
            wait = min(deadline - time.monotonic(), self._max_block)
            if due_in is not None and due_in >= 0:  # a scheduled job: wake when it is due
                wait = min(wait, due_in + 0.002)  # (and a hair later)
            if wake_key is None:
                wake_key = self._key("wake", os.urandom(16).hex())
                # A wake-up by interrupt() leaves a marker here: the claim sent
                # behind the BLPOP then takes nothing.
                args.append(wake_key)
            with self._lock:
                if self._interrupts != interrupts:
                    return []
                self._waiting.add(wake_key)
            try:
                woken, reply = self._block_then_claim(
                    [*(self._key("notify", queue) for queue in queues), wake_key],
                    max(wait, 0.001),
                    keys,
                    args,
                )
            finally:
                with self._lock:
                    self._waiting.discard(wake_key)
            if len(reply) > 1:
                continue  # claimed: these jobs are handed out even if interrupted now
            with self._lock:
                if self._interrupts != interrupts:
                    return []
            if woken is not None and codec.text(woken[0]) == wake_key:
                return []

    def _note_drained(self, queues: tuple[str, ...], next_due: int) -> float:
        """Remember what a ``CLAIM`` answer says of *queues*.

        Returns the seconds until the next job is due: ``0`` if due jobs may
        remain, ``-1`` if none is scheduled.
        """
        if next_due == 0:
            self._drained.forget(queues)
            return 0.0
        if next_due < 0:
            self._drained.note(queues, None)
            return -1.0
        due_in = next_due / 1_000_000
        self._drained.note(queues, time.monotonic() + due_in)
        return due_in

    def _drained_due_in(self, queues: tuple[str, ...]) -> float | None:
        """What :meth:`_note_drained` last returned for *queues*, as of now.

        ``None`` if that answer is too old to trust, or a job is due by now.
        """
        trusted, due_by = self._drained.trusted(queues, within=_DRAINED_FOR)
        if not trusted:
            return None
        if due_by is None:
            return -1.0
        due_in = due_by - time.monotonic()
        return due_in if due_in > 0 else None

    def _block_then_claim(
        self, wait_keys: list[str], wait: float, keys: list[str], args: list[str | int]
    ) -> tuple[Any, Any]:
        """``BLPOP`` on *wait_keys*, then ``CLAIM``, in one round trip.

        Redis runs the claim as soon as the ``BLPOP`` returns, so a woken
        claimer gets its jobs with the wake-up rather than a round trip later.
        Returns the ``BLPOP`` answer and the ``CLAIM`` one.
        """
        ttl_ms = max(round(self.result_ttl * 1000), 1)
        try:
            with self.client.pipeline(transaction=False) as pipe:
                pipe.blpop(wait_keys, timeout=wait)
                pipe.execute_command(  # type: ignore[no-untyped-call]  # unannotated in redis-py
                    "EVALSHA", self._claim.sha, len(keys), *keys, self._p, ttl_ms, *args
                )
                woken, reply = pipe.execute(raise_on_error=False)
        except _UNAVAILABLE as error:
            raise self._unavailable(error) from error
        if isinstance(woken, ResponseError):
            raise self._refused(woken) from woken
        if isinstance(reply, NoScriptError):  # flushed from the server: Script loads it
            reply = self._run(self._claim, keys, *args)
        elif isinstance(reply, ResponseError):
            raise self._refused(reply) from reply
        return woken, reply

    def heartbeat(self, job_id: str, token: str, *, lease: float) -> LeaseState:
        """Renew a held job's lease on the Redis clock."""
        reply = self._run(
            self._heartbeat,
            [self._key("job", job_id)],
            job_id,
            token,
            round(lease * 1_000_000),
        )
        return _LEASE_STATES[codec.text(reply)]

    def progress(self, job_id: str, token: str, progress: Progress, *, lease: float) -> LeaseState:
        """Store progress of a held job, renew its lease and publish it."""
        reply = self._run(
            self._progress,
            [self._key("job", job_id)],
            job_id,
            token,
            round(lease * 1_000_000),
            *codec.progress_args(progress),
        )
        return _LEASE_STATES[codec.text(reply)]

    def finish(self, job_id: str, token: str, outcome: Outcome) -> bool:
        """Write the final state of a held job; it expires after the result TTL."""
        return self.finish_many([(job_id, token, outcome)])[0]

    def finish_many(self, finishes: Sequence[tuple[str, str, Outcome]]) -> list[bool]:
        """Write many final states in one script call (see :meth:`Backend.finish_many`)."""
        if not finishes:
            return []
        keys: list[str] = []
        args: list[str | int] = []
        for job_id, token, outcome in finishes:
            if not outcome.status.is_final:
                raise ValueError(f"'finish' needs a final status, not '{outcome.status.value}'.")
            fields = codec.final_fields(outcome)
            keys.append(self._p + "job:" + job_id)
            args += (token, outcome.status.value, len(fields) // 2, *fields)
        return [bool(int(answer)) for answer in self._run(self._finish_many, keys, *args)]

    def retry_later(self, job_id: str, token: str, run_at: datetime, error: Outcome) -> bool:
        """Put a held job back as pending until *run_at*, keeping its error."""
        reply = self._run(
            self._retry_later,
            [self._key("job", job_id)],
            job_id,
            token,
            codec.micros(run_at),
            *codec.outcome_args(error),
        )
        return bool(reply)

    def release(self, job_id: str, token: str) -> bool:
        """Give a held job back to the queue at once, not counting the attempt."""
        reply = self._run(self._release, [self._key("job", job_id)], job_id, token)
        return bool(reply)

    def request_cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a pending job, or ask a running one to stop."""
        reply = self._run(self._request_cancel, [self._key("job", job_id)], job_id)
        # Lua's false reads as None, or as False on a RESP3 connection to a newer Redis.
        return codec.record_from_json(reply) if reply else None

    def get(self, job_id: str) -> JobRecord | None:
        """The job, or ``None`` if it is unknown or expired."""
        # One HGETALL, built into the record here: a script would spend the
        # server's time on rendering JSON for every poll of every client.
        try:
            stored = self.client.hgetall(self._key("job", job_id))
        except _UNAVAILABLE as error:
            raise self._unavailable(error) from error
        return codec.record_from_hash(stored) if stored else None

    def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        task: str | None = None,
        created_by: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """A newest-first page of jobs, walking the smallest index of the filters."""
        if limit < 1:
            raise InvalidArguments(f"'limit' must be at least 1, not {limit}.")
        start = "+" if cursor is None else "(" + codec.sort_key(*decode_cursor(cursor))
        keys = []
        if created_by is not None:
            keys.append(self._key("user", created_by))
        if task is not None:
            keys.append(self._key("task", task))
        if status is not None:
            keys.append(self._key("status", status.value))
        # Without a filter, the union of the status indexes: every job is in one.
        every_job = not keys
        if every_job:
            keys = [self._key("status", each.value) for each in JobStatus]
        page: list[JobRecord] = []
        while True:
            reply = self._run(
                self._list_jobs,
                keys,
                start,
                limit - len(page),
                "" if status is None else status.value,
                _LIST_BUDGET,
                "1" if every_job else "",
            )
            page += [codec.record_from_json(text) for text in reply[2:]]
            if int(reply[0]):
                return page, encode_cursor(page[-1])
            start = codec.text(reply[1])
            if not start:
                return page, None

    def purge_expired(self) -> int:
        """Drop the index entries of finished jobs past the result TTL; returns how many.

        Redis deletes such jobs by itself; this also removes what points to them.
        """
        keys = [self._key("expires", status.value) for status in _FINAL]
        purged = 0
        while True:
            count, full = self._run(self._purge_expired, keys, _BATCH)
            purged += int(count)
            if not int(full):
                return purged

    def recover_expired(self, *, max_recoveries: int) -> list[JobRecord]:
        """Take back running jobs whose lease ran out (see :meth:`Backend.recover_expired`).

        At most 500 jobs a call; the worker's next round takes the rest.
        """
        reply = self._run(self._recover_expired, [self._key("running")], max_recoveries, _BATCH)
        return [codec.record_from_json(text) for text in reply]

    def counts(self) -> dict[JobStatus, int]:
        """How many live jobs are in each status; expired ones are not counted."""
        keys = [
            self._key("status", JobStatus.PENDING.value),
            self._key("status", JobStatus.IN_PROGRESS.value),
            *(self._key("expires", status.value) for status in _FINAL),
        ]
        reply = self._run(self._counts, keys)
        order = (JobStatus.PENDING, JobStatus.IN_PROGRESS, *_FINAL)
        return {status: int(count) for status, count in zip(order, reply, strict=True)}

    def clear(self) -> None:
        """Delete every key under the prefix (``SCAN`` and ``UNLINK`` in batches)."""
        pattern = "".join("\\" + char if char in "*?[]\\" else char for char in self._p) + "*"
        try:
            batch: list[Any] = []
            for key in self.client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    self.client.unlink(*batch)
                    batch.clear()
            if batch:
                self.client.unlink(*batch)
        except _UNAVAILABLE as error:
            raise self._unavailable(error) from error

    def wait_finished(self, job_id: str, timeout: float) -> JobRecord | None:
        """Wait for the job to finish, woken by its events channel rather than polling."""
        deadline = time.monotonic() + timeout
        channel = self._key("events", job_id)
        try:
            with self.subscribed(channel) as pubsub:
                # Read after subscribing, so a finish in between is not missed.
                record = self.get(job_id)
                while record is not None and not record.is_finished:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return self.get(job_id)
                    message = pubsub.get_message(timeout=min(remaining, self._max_block))
                    if message is None:
                        record = self.get(job_id)  # also sees a job that expired meanwhile
                    elif message["type"] == "message" and codec.text(message["channel"]) == channel:
                        record = codec.record_from_json(message["data"])
                    # Else the answer to an (un)subscribe, or a message left from an earlier use.
                return record
        except _UNAVAILABLE as error:
            raise self._unavailable(error) from error

    @contextlib.contextmanager
    def subscribed(self, channel: str) -> Iterator[PubSub]:
        """A pub/sub connection subscribed to *channel*, for as long as the block runs.

        The subscription is confirmed before the block starts, so nothing
        published afterwards is missed. Connections are kept for the next
        wait rather than opened anew: answers to (un)subscribe commands and
        messages on another channel (left from an earlier use) may still
        arrive, and the caller skips them.
        """
        with self._lock:
            idle = self._idle_subscribers
            pubsub = idle.pop() if idle and self._subscriber_pid == os.getpid() else None
        if pubsub is None:
            # Annotated in some redis-py releases and not in others.
            make_pubsub: Callable[[], PubSub] = self.client.pubsub
            pubsub = make_pubsub()
        reusable = False
        try:
            pubsub.subscribe(channel)
            deadline = time.monotonic() + self._max_block
            while (remaining := deadline - time.monotonic()) > 0:
                message = pubsub.get_message(timeout=remaining)
                answer = message and message["type"] == "subscribe"
                if answer and codec.text(message["channel"]) == channel:
                    break
            yield pubsub
            unsubscribe: Callable[..., Any] = pubsub.unsubscribe  # annotated in some releases
            unsubscribe(channel)  # its answer is skipped by the next use
            reusable = True
        finally:
            with self._lock:
                if self._subscriber_pid != os.getpid():  # a forked child starts its own
                    self._idle_subscribers, self._subscriber_pid = [], os.getpid()
                if reusable and len(self._idle_subscribers) < _IDLE_SUBSCRIBERS:
                    self._idle_subscribers.append(pubsub)
                    pubsub = None
            if pubsub is not None:
                pubsub.close()

    def interrupt(self) -> None:
        """Wake every :meth:`claim` of this instance blocked in ``BLPOP``.

        Never raises: if Redis cannot be told, a blocked claim still ends
        within a few seconds, its ``BLPOP`` being cut into short waits.
        """
        with self._lock:
            self._interrupts += 1
            waiting = list(self._waiting)
        if not waiting:
            return
        try:
            with self.client.pipeline(transaction=False) as pipe:
                for key in waiting:
                    # One marker ends the BLPOP, the other stops the claim behind it.
                    pipe.lpush(key, "1", "1")
                    # Left behind if its claim returned meanwhile; this cleans it up.
                    pipe.pexpire(key, _WAKE_TTL_MS)
                pipe.execute()
        except RedisError as error:
            logger.warning("Could not wake the claims waiting on Redis: %s", error)

    def close(self) -> None:
        """Close the pub/sub connections kept, and the pool if this backend created the client."""
        with self._lock:
            idle, self._idle_subscribers = self._idle_subscribers, []
        for pubsub in idle:
            pubsub.close()
        if self._owns_client:
            self.client.close()

    # -- helpers -------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return self._p + ":".join(parts)

    def _run(self, script: Script, keys: list[str], *args: str | int) -> Any:
        # Read on every call: an app (or a test) may change result_ttl later.
        ttl_ms = max(round(self.result_ttl * 1000), 1)
        return self._evalsha(script, len(keys), *keys, self._p, ttl_ms, *args)

    def _evalsha(self, script: Script, *args: str | bytes | int) -> Any:
        """Run *script* with *args* (the key count, keys, then its arguments) by ``EVALSHA``.

        It skips what redis-py's :class:`~redis.commands.core.Script` adds
        per call, which a hot path notices; a script flushed from the server
        is loaded again.
        """
        # redis-py leaves 'execute_command' unannotated.
        command: Callable[..., Any] = self.client.execute_command
        try:
            try:
                return command("EVALSHA", script.sha, *args)
            except NoScriptError:
                self.client.script_load(script.script)
                return command("EVALSHA", script.sha, *args)
        except _UNAVAILABLE as error:
            raise self._unavailable(error) from error
        except ResponseError as error:
            raise self._refused(error) from error

    def _refused(self, error: ResponseError) -> Exception:
        """What to raise for an error answer: an outage, or the error itself (a bug)."""
        if str(error).startswith(("BUSY", "LOADING", "MASTERDOWN")):
            return self._unavailable(error)
        return error

    def _unavailable(self, error: Exception) -> BackendUnavailable:
        return BackendUnavailable(
            f"The Redis server at '{self._where}' cannot serve the job backend: {error}."
            " Check that it is running and that 'JOBRUNNER_BACKEND' points to it."
        )

    # -- change notification (wait_changed) ----------------------------------

    def wait_changed(self, job_id: str, after: datetime | None, timeout: float) -> JobRecord | None:
        """Wait for the job to change after revision *after*, woken by its events channel."""
        if after is None:
            return self.get(job_id)
        deadline = time.monotonic() + timeout
        channel = self._key("events", job_id)
        try:
            with self.subscribed(channel) as pubsub:
                # Read after subscribing, so a change in between is not missed.
                record = self.get(job_id)
                while record is not None and not is_newer(record, after):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return self.get(job_id)
                    message = pubsub.get_message(timeout=min(remaining, self._max_block))
                    if message is None or message["type"] != "message":
                        record = self.get(job_id)  # also sees a job that expired meanwhile
                    elif codec.text(message["channel"]) == channel:
                        record = codec.record_from_json(message["data"])
                return record
        except _UNAVAILABLE as error:
            raise self._unavailable(error) from error

    # -- periodic schedules (claim_tick) --------------------------------------

    def claim_tick(self, schedule: str, tick: datetime) -> bool:
        """Record a schedule's tick with ``SET NX``, expiring after the result TTL."""
        key = self._key("tick", schedule, str(codec.micros(tick)))
        try:
            return bool(
                self.client.set(key, "1", nx=True, px=max(round(self.result_ttl * 1000), 1))
            )
        except _UNAVAILABLE as error:
            raise self._unavailable(error) from error


def _describe(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"redis://{host}:{port}/{db}"


def _safe_url(url: str) -> str:
    """*url* without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))
