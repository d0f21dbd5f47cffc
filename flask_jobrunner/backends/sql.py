"""The SQL backend: jobs in the tables of SQLite, PostgreSQL or MySQL/MariaDB.

Every operation is one transaction, and every write on behalf of a worker
one ``UPDATE`` that checks the job's id, token and status. A claim takes
several jobs in one round trip and never hands a job to two claimers:
``FOR UPDATE SKIP LOCKED`` on PostgreSQL and MySQL/MariaDB, an immediate
transaction on SQLite. Leases are measured on the database's clock.

On PostgreSQL (with psycopg), and on MySQL/MariaDB with an engine the
backend made, an operation of one statement runs in autocommit, so it costs
one round trip. On PostgreSQL every change of a job also notifies in that
same statement: a waiting claim, and a caller waiting for a job to
change or finish, are woken by ``LISTEN``/``NOTIFY``. Elsewhere they poll,
briefly while work comes in and less often when there is none.

This module holds :class:`SQLBackend` and its contract; each concept it
uses lives beside it: :mod:`.sql_transactions` (running work, translating
errors), :mod:`.sql_enqueue` (inserts), :mod:`.sql_claims` (claims),
:mod:`.sql_holder_writes` (heartbeats, progress, finishes, give-backs),
:mod:`.sql_reads` (reading records), :mod:`.sql_upkeep` (recovery and
purges), :mod:`.sql_waiting` (waiting for news), :mod:`.sql_listener`
(``LISTEN``/``NOTIFY``), :mod:`.sql_schema` (tables and rows) and
:mod:`.sql_dialects` (what differs between databases).
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa

from ..errors import (
    BackendUnavailable,
    ConfigurationError,
    InvalidArguments,
)
from ..record import Claim, JobRecord, JobStatus, LeaseState, Outcome, Progress
from . import (
    sql_claims,
    sql_enqueue,
    sql_holder_writes,
    sql_listener,
    sql_reads,
    sql_transactions,
    sql_upkeep,
    sql_waiting,
)
from . import sql_dialects as dialects
from . import sql_schema as schema
from .base import Backend, check_plain_records, encode_cursor, is_newer
from .sql_schema import job_progress, jobs, metadata, to_record

T = TypeVar("T")


# Backends to reset in a forked child; weak, so a backend can still go away.
_instances: weakref.WeakSet[SQLBackend] = weakref.WeakSet()


class SQLBackend(Backend):
    """Keeps jobs in the ``jobs`` and ``job_progress`` tables of a database.

    Create it with a URL through :meth:`from_url` (as ``JOBRUNNER_BACKEND``
    does), or from an :class:`~sqlalchemy.engine.Engine` of the app's. Tables
    are created on first use unless *create_tables* is false; then run
    ``flask jobs init-db`` (or :meth:`setup`) once.

    :param engine: The engine to use. An app's engine keeps its own settings.
    :param result_ttl: Seconds a finished job is kept.
    :param create_tables: Whether the first use creates missing tables.
    :param owns_engine: Whether :meth:`close` disposes of *engine*.
    """

    is_shared = True

    def __init__(
        self,
        engine: sa.Engine,
        *,
        result_ttl: float = 86400,
        create_tables: bool = True,
        owns_engine: bool = False,
    ) -> None:
        super().__init__(result_ttl=result_ttl)
        #: The engine the backend's transactions run on.
        self.engine = dialects.prepare_engine(engine)
        self.create_tables = create_tables
        self._owns_engine = owns_engine
        dialect = self.engine.dialect
        traits = self._traits = dialects.Traits(dialect)
        self._reader = sql_reads.RecordReader(packs_records=traits.packs_records)
        self._claims = sql_claims.Claims(traits, self._reader)
        self._holder = sql_holder_writes.HolderWrites(traits)
        self._inserts = sql_enqueue.Inserts(traits, dialect)
        self._where = self.engine.url.render_as_string(hide_password=True)
        #: Whether a waiting claim is woken by ``NOTIFY``: PostgreSQL with psycopg.
        self.blocking = traits.is_postgres and dialect.driver == "psycopg"
        self._listener = (
            sql_listener.Listener(
                sql_listener.connector(self.engine), self._signal, self._job_changed
            )
            if self.blocking
            else None
        )
        # One statement is its own transaction: no BEGIN and COMMIT round trips.
        self._autocommit = dialects.autocommit_engine(self.engine)
        # For an engine the backend made, a pool of its own, which goes with that engine.
        self._twin = (
            self._autocommit
            if self._autocommit is not None and self._autocommit.pool is not self.engine.pool
            else None
        )
        # On SQLite: a look, for microseconds, whether a poll could find anything new.
        self._changes = dialects.sqlite_changes(self.engine)
        self._busy_poll = (
            sql_waiting.BUSY_POLL if self._changes is None else sql_waiting.SQLITE_BUSY_POLL
        )
        self._transactions = sql_transactions.Transactions(
            self.engine, self._autocommit, where=self._where
        )
        self._is_set_up = False
        self._reset_locks()
        _instances.add(self)
        self._closed = threading.Event()
        for owned in self._owned_engines():
            sa.event.listen(owned, "checkin", sql_transactions.closing_when(self._closed))
            # A backend dropped without close() still closes its connections.
            weakref.finalize(self, owned.dispose)

    def _owned_engines(self) -> list[sa.Engine]:
        # The engines whose pools close() disposes of.
        owned = [self.engine] if self._owns_engine else []
        return owned if self._twin is None else [*owned, self._twin]

    def _reset_locks(self) -> None:
        self._setup_lock = threading.Lock()
        self._wakeups = sql_waiting.Wakeups()
        self._watches = sql_waiting.JobWatches()

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> SQLBackend:
        """Create a backend for a SQLAlchemy database URL, or ``"sqlalchemy"``.

        ``postgresql://`` uses psycopg and ``mysql://`` or ``mariadb://``
        PyMySQL. ``"sqlalchemy"`` uses the engine of the Flask-SQLAlchemy
        extension of ``settings["app"]``. Takes ``result_ttl``,
        ``create_tables`` and ``max_workers`` (to size the pool) from *settings*.

        :raises ConfigurationError: if the URL is not usable.
        """
        options = {
            "result_ttl": settings.get("result_ttl", 86400),
            "create_tables": settings.get("create_tables", True),
        }
        if url in ("sqlalchemy", "sqlalchemy://"):
            return cls(dialects.app_engine(settings.get("app")), **options)
        pool_size = max(10, int(settings.get("max_workers", 0)) + 4)
        try:
            engine = dialects.create_engine(url, pool_size=pool_size)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as error:
            raise ConfigurationError(
                f"JOBRUNNER_BACKEND {url!r} is not a usable database URL: {error}"
            ) from error
        return cls(engine, owns_engine=True, **options)

    def setup(self) -> None:
        """Create the tables and indexes that are missing; safe to call again.

        SQLite databases are also switched to WAL mode, so reads never wait for writes.
        """
        with self._setup_lock, self._transactions.translated_errors():
            if self._traits.is_sqlite:
                dialects.enable_wal(self.engine)
            if self.engine.dialect.name in ("mysql", "mariadb"):
                for table in metadata.tables.values():
                    table.dialect_kwargs.update(schema.MYSQL_TABLE)
            try:
                metadata.create_all(self.engine, checkfirst=True)
            except sa.exc.DBAPIError:
                # Another process may have created a table between check and create.
                metadata.create_all(self.engine, checkfirst=True)
            self._is_set_up = True

    def now(self) -> datetime:
        """The database server's clock (for SQLite, this machine's)."""
        clock = self._traits.clock()
        if isinstance(clock, dialects.FixedClock):
            return clock.value
        moment: datetime = self._transactions.run(
            lambda connection: connection.execute(sa.select(clock.now)).scalar_one(), write=False
        )
        return moment

    # -- enqueue and claim ---------------------------------------------------

    def enqueue(self, record: JobRecord) -> tuple[JobRecord, bool]:
        """Store a pending job (see :meth:`Backend.enqueue`).

        The insert is tried first; only when a unique index refuses it is
        the job holding the key looked up.
        """
        stored = record.copy()
        stored.status = JobStatus.PENDING
        for _ in range(3):
            try:
                self._run(
                    functools.partial(self._inserts.insert, record=stored), write=True, single=True
                )
            except sa.exc.IntegrityError:
                holder = functools.partial(
                    self._inserts.key_holder, record=stored, result_ttl=self.result_ttl
                )
                found = self._run(holder, write=True)
                if found is not None:
                    return found.copy(), False
                continue  # the holder finished or expired meanwhile
            self._signal_locally()
            return stored.copy(), True
        raise BackendUnavailable(
            f"The job '{stored.id}' could not be stored: its keys kept changing hands. Try again."
        )

    def enqueue_many(self, records: Sequence[JobRecord]) -> None:
        """Store new pending jobs without keys in multi-row ``INSERT`` s of one transaction.

        All or none are stored; a job whose id is stored already is left as it
        is (see :meth:`Backend.enqueue_many`).

        :raises ValueError: if a record has a unique or an idempotency key.
        """
        check_plain_records(records)
        if not records:
            return
        stored = list({record.id: record.copy() for record in records}.values())
        for record in stored:
            record.status = JobStatus.PENDING
        self._run(
            functools.partial(self._inserts.insert_many, records=stored),
            write=True,
            single=len(stored) <= sql_enqueue.BULK_ROWS,
        )
        self._signal_locally()

    def claim(
        self, queues: Sequence[str], *, lease: float, limit: int = 1, timeout: float = 0
    ) -> list[Claim]:
        """Take up to *limit* due jobs in one round trip, waiting up to *timeout* for one."""
        if not queues or limit < 1:
            return []
        take = functools.partial(self._claims.take, queues=list(queues), lease=lease, limit=limit)
        if timeout <= 0:
            return self._run(
                functools.partial(take, look_ahead=False), write=True, single=self._traits.returning
            ).claims

        def claim_now(look_ahead: bool) -> sql_claims.Taken:
            return self._run(
                functools.partial(take, look_ahead=look_ahead),
                write=True,
                single=self._traits.returning,
            )

        return sql_waiting.wait_for_claims(
            claim_now,
            functools.partial(self._due_in, queues),
            queues=tuple(queues),
            timeout=timeout,
            wakeups=self._wakeups,
            listener=self._listener,
            changes=self._changes,
            reads_first=self._traits.is_sqlite,
            busy_poll=self._busy_poll,
        )

    def _due_in(self, queues: Sequence[str]) -> float | None:
        return self._run(functools.partial(self._claims.due_in, queues=list(queues)), write=False)

    # -- writes of the job's holder -----------------------------------------

    def heartbeat(self, job_id: str, token: str, *, lease: float) -> LeaseState:
        """Renew a held job's lease, in one ``UPDATE`` checked by token."""
        parameters = self._holder.heartbeat_parameters(job_id, token, lease)
        return self._run(
            lambda connection: self._holder.heartbeat(connection, parameters),
            write=True,
            single=True,
        )

    def progress(self, job_id: str, token: str, progress: Progress, *, lease: float) -> LeaseState:
        """Store progress of a held job, renew its lease and log it in ``job_progress``."""
        return self._run(
            lambda connection: self._holder.progress(
                connection, job_id, token, progress, lease=lease
            ),
            write=True,
        )

    def finish(self, job_id: str, token: str, outcome: Outcome) -> bool:
        """Write the final state of a held job and free its unique key."""
        if outcome.progress is None:
            parameters = self._holder.finish_parameters(job_id, token, outcome)
            return self._run(
                lambda connection: self._holder.finish_prebuilt(connection, parameters),
                write=True,
                single=True,
            )
        return self._run(
            lambda connection: self._holder.finish(connection, job_id, token, outcome),
            write=True,
        )

    def finish_many(self, finishes: Sequence[tuple[str, str, Outcome]]) -> list[bool]:
        """:meth:`finish` each ``(job_id, token, outcome)``, in one ``UPDATE`` per batch.

        See :meth:`Backend.finish_many`. A job twice in *finishes* (taken back
        and claimed again meanwhile) is finished apart.
        """
        answers = [False] * len(finishes)
        batches, apart = sql_holder_writes.distinct_batches(finishes)
        for indexes in batches:
            chunk = [finishes[index] for index in indexes]
            if len(chunk) == 1:
                done = [self.finish(*chunk[0])]
            else:
                logs = any(outcome.progress is not None for _, _, outcome in chunk)
                write = functools.partial(self._holder.finish_batch, finishes=chunk)
                done = self._run(write, write=True, single=self._traits.returning and not logs)
            for index, was_done in zip(indexes, done, strict=True):
                answers[index] = was_done
        for index in apart:
            answers[index] = self.finish(*finishes[index])
        return answers

    def retry_later(self, job_id: str, token: str, run_at: datetime, error: Outcome) -> bool:
        """Put a held job back as pending until *run_at*, keeping the attempt's error."""
        return self._given_back_by(
            lambda connection: self._holder.retry_later(connection, job_id, token, run_at, error)
        )

    def release(self, job_id: str, token: str) -> bool:
        """Give a held job back at once, in its old place, not counting the attempt."""
        return self._given_back_by(
            lambda connection: self._holder.release(connection, job_id, token)
        )

    def _given_back_by(self, write: Callable[[sa.Connection], bool]) -> bool:
        done = self._run(write, write=True, single=True)
        if done:
            self._signal_locally()
        return done

    # -- everyone else ------------------------------------------------------

    def request_cancel(self, job_id: str) -> JobRecord | None:
        """Cancel a pending job, or ask a running one to stop."""

        def write(connection: sa.Connection) -> JobRecord | None:
            clock = self._traits.clock()
            pending = (
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == schema.PENDING)
                .values(
                    status=schema.CANCELLED,
                    finished_at=clock.now,
                    updated_at=clock.now,
                    token=None,
                    lease_expires_at=None,
                    active_unique_key=None,
                )
            )
            running = (
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == schema.IN_PROGRESS)
                .values(cancel_requested=True, updated_at=clock.now)
            )
            for update in (pending, running):
                if self._traits.returning:
                    update = update.returning(*jobs.c)
                    if self._traits.is_postgres:
                        update = update.returning(*sql_listener.notifications(claimable=False))
                    row = connection.execute(update).first()
                    if row is not None:
                        return to_record(row)
                elif connection.execute(update).rowcount:
                    break
            return self._reader.select_one(connection, job_id)

        return self._run(write, write=True)

    def get(self, job_id: str) -> JobRecord | None:
        """The stored job, or ``None``."""
        return self._run(
            lambda connection: self._reader.select_one(connection, job_id), write=False, single=True
        )

    def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        task: str | None = None,
        created_by: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[JobRecord], str | None]:
        """A newest-first page of jobs, by ``(created_at, id)``."""
        if limit < 1:
            raise InvalidArguments(f"'limit' must be at least 1, not {limit}.")
        query = sql_reads.page_query(
            status=status, task=task, created_by=created_by, limit=limit, cursor=cursor
        )
        rows = self._run(
            lambda connection: connection.execute(query).all(), write=False, single=True
        )
        page = [to_record(row) for row in rows[:limit]]
        return page, encode_cursor(page[-1]) if len(rows) > limit else None

    def purge_expired(self) -> int:
        """Delete finished jobs past the result TTL, with their progress log."""
        if self._traits.is_sqlite and not self._has_upkeep(
            functools.partial(
                sql_upkeep.has_expired_results, traits=self._traits, result_ttl=self.result_ttl
            )
        ):
            return 0
        purge = functools.partial(
            sql_upkeep.purge_expired, traits=self._traits, result_ttl=self.result_ttl
        )
        return self._run(purge, write=True)

    def recover_expired(self, *, max_recoveries: int) -> list[JobRecord]:
        """Take back running jobs whose lease ended on the database's clock."""
        if self._traits.is_sqlite and not self._has_upkeep(
            functools.partial(sql_upkeep.has_expired_leases, traits=self._traits)
        ):
            return []
        recover = functools.partial(
            sql_upkeep.recover_expired, traits=self._traits, max_recoveries=max_recoveries
        )
        changed = self._run(recover, write=True)
        if changed:
            self._signal_locally()
        return changed

    def _has_upkeep(self, found: Callable[[sa.Connection], bool]) -> bool:
        # SQLite: whether upkeep has work, by a read, which takes no lock. A
        # worker's monitor would else take the write lock twice per upkeep
        # round with nothing to do, and a submit or a claim would wait for it.
        return self._run(found, write=False, single=True)

    def counts(self) -> dict[JobStatus, int]:
        """How many jobs are in each status, in one ``GROUP BY``."""
        query = sql_reads.counts_query()
        rows = self._run(
            lambda connection: connection.execute(query).all(), write=False, single=True
        )
        totals = dict.fromkeys(JobStatus, 0)
        for status, count in rows:
            totals[JobStatus(status)] = count
        return totals

    def clear(self) -> None:
        """Delete every row of ``jobs`` and ``job_progress``."""

        def clear(connection: sa.Connection) -> None:
            connection.execute(sa.delete(job_progress))
            connection.execute(sa.delete(jobs))

        self._run(clear, write=True)

    def wait_finished(self, job_id: str, timeout: float) -> JobRecord | None:
        """Wait up to *timeout* seconds for the job to finish; returns it as it is then.

        On PostgreSQL the finish's notification wakes the caller; elsewhere
        it polls, every millisecond at first and less often as time goes by.
        """
        if self._listener is None:
            return sql_waiting.poll_until(self.get, job_id, _is_finished, timeout)
        return self._watches.watch_until(self._listener, self.get, job_id, _is_finished, timeout)

    def wait_changed(self, job_id: str, after: datetime | None, timeout: float) -> JobRecord | None:
        """Wait up to *timeout* seconds for the job to change after revision *after*.

        See :meth:`Backend.wait_changed`. On PostgreSQL the change's
        notification wakes the caller; elsewhere it polls.
        """
        if self._listener is None:
            return super().wait_changed(job_id, after, timeout)
        return self._watches.watch_until(
            self._listener, self.get, job_id, lambda record: is_newer(record, after), timeout
        )

    def interrupt(self) -> None:
        """Wake every :meth:`claim` waiting in this process; each returns what it has."""
        self._wakeups.interrupt()

    def close(self) -> None:
        """Stop listening, and dispose of the engine if the backend made it."""
        if self._listener is not None:
            self._listener.close()
        if self._changes is not None:
            self._changes.close()
        if self._owned_engines():
            self._closed.set()
        for owned in self._owned_engines():
            owned.dispose()

    # -- helpers ------------------------------------------------------------

    def _run(self, work: Callable[[sa.Connection], T], *, write: bool, single: bool = False) -> T:
        # *work* in one transaction, tables created first if need be. *single*:
        # its only write is one statement, which is atomic on its own.
        if not self._is_set_up:
            if self.create_tables:
                self.setup()
            else:
                self._is_set_up = True  # a missing table reads as ConfigurationError
        return self._transactions.run(work, write=write, single=single)

    def _signal(self) -> None:
        self._wakeups.signal()

    def _job_changed(self, job_id: str | None) -> None:
        # From the listener: job *job_id* changed (None: any may have).
        self._watches.job_changed(job_id)

    def _signal_locally(self) -> None:
        # A claim waiting in this process need not wait for its next poll.
        # (PostgreSQL's notification reaches it anyway.)
        if not self.blocking:
            self._signal()

    def _after_fork(self) -> None:
        # The parent's connections stay the parent's: the child opens its own.
        self.engine.dispose(close=False)
        if self._twin is not None:
            self._twin.dispose(close=False)
        self._reset_locks()
        if self._listener is not None:
            self._listener.after_fork()
        if self._changes is not None:
            self._changes.after_fork()

    # -- periodic schedules (claim_tick) --------------------------------------

    def claim_tick(self, schedule: str, tick: datetime) -> bool:
        """Record a schedule's tick: an ``INSERT`` the primary key refuses a second time.

        The caller that inserts also deletes the schedule's ticks older than
        the result TTL, in the same transaction.
        """
        row = {"schedule": schedule, "tick": tick}
        expired = sa.and_(
            schema.job_ticks.c.schedule == schedule,
            schema.job_ticks.c.tick < tick - timedelta(seconds=self.result_ttl),
        )

        def insert(connection: sa.Connection) -> None:
            connection.execute(sa.insert(schema.job_ticks).values(row))
            connection.execute(sa.delete(schema.job_ticks).where(expired))

        try:
            self._run(insert, write=True)
        except sa.exc.IntegrityError:
            return False
        return True


def _is_finished(record: JobRecord) -> bool:
    return record.is_finished


def _reset_after_fork() -> None:
    for backend in list(_instances):
        backend._after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_reset_after_fork)
