"""How the SQL backend stores new jobs: one ``INSERT``, or many rows in few statements.

A job's place in its queue, ``due_at``, is its ``run_at`` if it has one,
else its creation time but never later than the database's clock, so an
app clock ahead of the database's never keeps a new job from being claimed.
A unique index refuses a second job of a taken unique or idempotency key;
only then is the job that holds the key looked up. On PostgreSQL each new
job notifies, in its own ``INSERT``, that it may be claimed.
"""

from __future__ import annotations

import functools
from datetime import timedelta

import sqlalchemy as sa

from ..errors import JobConflict, JobRunnerError
from ..record import JobRecord, utcnow
from . import sql_dialects as dialects
from . import sql_listener
from .sql_schema import jobs, to_record, to_row
from .sql_upkeep import delete_jobs

#: Rows per statement of a bulk insert: smaller pages cost psycopg less to convert.
BULK_ROWS = 100


class Inserts:
    """Inserts new jobs into ``jobs``, on one kind of database; each method takes a connection.

    :param traits: What the statements allow for on the database.
    :param dialect: The database's dialect, for its ``INSERT`` that skips stored rows.
    """

    def __init__(self, traits: dialects.Traits, dialect: sa.Dialect) -> None:
        self._traits = traits
        self._dialect = dialect

    def insert(self, connection: sa.Connection, *, record: JobRecord) -> None:
        """Store *record*, holding its unique key.

        :raises sqlalchemy.exc.IntegrityError: if its id or a key is taken.
        """
        # An empty column is left out: NULL is its default anyway, and each
        # value sent costs the driver's escaping (in Python, on PyMySQL).
        row = {name: value for name, value in to_row(record).items() if value is not None}
        if record.unique_key is not None:
            row["active_unique_key"] = record.unique_key
        if self._traits.is_clock_fixed:
            row["due_at"] = record.run_at or min(record.created_at, utcnow())
        else:
            row["jobrunner_run_at"] = record.run_at
            row["jobrunner_created_at"] = record.created_at
        connection.execute(self._insert_statement, row)

    @functools.cached_property
    def _insert_statement(self) -> sa.Insert:
        # Built once: building an INSERT of every column costs more than running it.
        insert = sa.insert(jobs)
        clock = self._traits.clock()
        if not self._traits.is_clock_fixed:
            run_at = sa.bindparam("jobrunner_run_at", type_=jobs.c.due_at.type)
            created = sa.bindparam("jobrunner_created_at", type_=jobs.c.created_at.type)
            insert = insert.values(
                due_at=sa.case(
                    (run_at.is_not(None), run_at), (created < clock.now, created), else_=clock.now
                )
            )
        if self._traits.is_postgres:
            insert = insert.returning(*sql_listener.notifications(claimable=True))
        return insert

    def insert_many(self, connection: sa.Connection, *, records: list[JobRecord]) -> None:
        """Store *records*, which have no keys; one whose id is stored already is skipped."""
        # The database clock's now is read once, so each row is plain values.
        clock = self._traits.clock()
        if isinstance(clock, dialects.FixedClock):
            now = clock.value
        else:
            now = connection.execute(sa.select(clock.now)).scalar_one()
        rows = []
        for record in records:
            row = to_row(record)
            first = min(record.created_at, now)
            row["due_at"] = record.run_at if record.run_at is not None else first
            row["active_unique_key"] = None
            rows.append(row)
        # One executemany: SQLAlchemy (psycopg) or PyMySQL turn it into
        # multi-row INSERTs of up to BULK_ROWS rows each.
        insert = dialects.insert_new(jobs, self._dialect)
        if self._traits.is_postgres:
            insert = insert.returning(*sql_listener.notifications(claimable=True))
        connection.execution_options(insertmanyvalues_page_size=BULK_ROWS).execute(insert, rows)

    def key_holder(
        self, connection: sa.Connection, *, record: JobRecord, result_ttl: float
    ) -> JobRecord | None:
        """The job holding a key of *record*, or ``None`` when the insert may be tried again.

        A finished holder of its idempotency key past *result_ttl* is deleted,
        which frees the key.

        :raises JobConflict: if an unfinished job holds its unique key.
        :raises JobRunnerError: if a job of its id is stored already.
        """
        clock = self._traits.clock()
        holds = [jobs.c.id == record.id]
        if record.idempotency_key is not None:
            holds.append(jobs.c.idempotency_key == record.idempotency_key)
        if record.unique_key is not None:
            holds.append(jobs.c.active_unique_key == record.unique_key)
        query = sa.select(jobs, clock.now.label("jobrunner_now")).where(sa.or_(*holds))
        rows = connection.execute(query).all()
        for row in rows:
            holder = to_record(row)
            if record.idempotency_key is None or holder.idempotency_key != record.idempotency_key:
                continue
            expiry = row.jobrunner_now - timedelta(seconds=result_ttl)
            if holder.finished_at is None or holder.finished_at > expiry:
                return holder
            # Expired: its key is free.
            delete_jobs(connection, jobs.c.id == holder.id, is_sqlite=self._traits.is_sqlite)
            return None
        for row in rows:
            if row.active_unique_key is not None and row.active_unique_key == record.unique_key:
                holder = to_record(row)
                raise JobConflict(
                    f"The unique task '{record.task}' already has a job that is"
                    f" {holder.status.value}: '{holder.id}'. Wait for it to finish.",
                    holder,
                )
        if any(row.id == record.id for row in rows):
            raise JobRunnerError(f"A job with the id '{record.id}' is already stored.")
        return None
