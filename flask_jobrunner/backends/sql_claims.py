"""How the SQL backend claims jobs: the statements of a claim, built once, and running them.

A claim takes several due jobs of some queues in one round trip and never
hands a job to two claimers: one ``UPDATE ... WHERE id IN (SELECT ... FOR
UPDATE SKIP LOCKED) RETURNING`` where the database can, an immediate
transaction on SQLite, and on MariaDB (no ``UPDATE ... RETURNING``) a
``SELECT ... FOR UPDATE SKIP LOCKED`` then an ``UPDATE`` of the rows it
locked. Each token is a new prefix plus the job's id. A claim that takes
nothing can also tell when the next job of those queues is due.
"""

from __future__ import annotations

import functools
import uuid
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa

from ..record import Claim, JobRecord, JobStatus, utcnow
from . import sql_dialects as dialects
from . import sql_listener
from . import sql_schema as schema
from .sql_reads import RecordReader
from .sql_schema import jobs


class Claims:
    """Claims due jobs, on one kind of database.

    Its statements are built once, on first use: building them costs more
    than running them.

    :param traits: What the statements allow for on the database.
    :param reader: How the rows locked by a claim without ``RETURNING`` are read.
    """

    def __init__(self, traits: dialects.Traits, reader: RecordReader) -> None:
        self._traits = traits
        self._reader = reader

    def take(
        self,
        connection: sa.Connection,
        *,
        queues: list[str],
        lease: float,
        limit: int,
        look_ahead: bool,
    ) -> Taken:
        """Claims up to *limit* due jobs of *queues*, and what the claim learnt of the others.

        It tells whether no other job was due (:attr:`Taken.drained`) when
        it took none and *look_ahead* is true, or (on PostgreSQL, from one
        queue) when it took fewer than *limit*.
        """
        clock = self._traits.clock()
        prefix = uuid.uuid4().hex  # each token is prefix + job id: new and unique per claim
        next_due: float | None = None
        if self._traits.returning:
            records, next_due = self._take_returning(
                connection, clock, queues, prefix, lease, limit
            )
        else:
            records = self._take_selected(connection, clock, queues, prefix, lease, limit)
        claims = [Claim(record, record.token or "") for record in records]
        if claims:
            drained = self._tells_next_due(queues) and len(claims) < limit
            return Taken(claims, next_due, drained)
        if not look_ahead:
            return Taken(claims, None, False)
        parameters: dict[str, Any] = {"jobrunner_queues": queues}
        if isinstance(clock, dialects.FixedClock):
            parameters["jobrunner_now"] = clock.value
        due, now = connection.execute(self._due_statement, parameters).one()
        return Taken([], None if due is None else max((due - now).total_seconds(), 0.0), True)

    def due_in(self, connection: sa.Connection, queues: list[str]) -> float | None:
        """Seconds until the next pending job of *queues* is due, by a read.

        ``None`` when there is none; none or less when one is due now.
        """
        parameters: dict[str, Any] = {"jobrunner_queues": queues}
        if self._traits.is_clock_fixed:
            parameters["jobrunner_now"] = utcnow()
        due, now = connection.execute(self._due_statement, parameters).one()
        return None if due is None else (due - now).total_seconds()

    @functools.cached_property
    def _due_statement(self) -> sa.Select[Any, datetime]:
        # When the next pending job of some queues is due, and the time now.
        clock = self._traits.prebuilt_clock()
        return sa.select(sa.func.min(jobs.c.due_at), clock.now).where(
            jobs.c.queue.in_(_bound_queues()), jobs.c.status == schema.PENDING
        )

    def _take_returning(
        self,
        connection: sa.Connection,
        clock: dialects.Clock,
        queues: list[str],
        prefix: str,
        lease: float,
        limit: int,
    ) -> tuple[list[JobRecord], float | None]:
        # One statement: UPDATE ... WHERE id IN (SELECT ... SKIP LOCKED) RETURNING,
        # and, if it tells, the seconds until the next job not yet due is.
        tells = self._tells_next_due(queues)
        parameters: dict[str, Any] = {"jobrunner_limit": limit, "jobrunner_prefix": prefix}
        if tells:
            parameters["jobrunner_queue"] = queues[0]
        else:
            parameters["jobrunner_queues"] = queues
        if isinstance(clock, dialects.FixedClock):
            parameters["jobrunner_now"] = clock.value
            parameters["jobrunner_lease_end"] = clock.value + timedelta(seconds=lease)
        else:
            parameters["jobrunner_lease"] = timedelta(seconds=lease)
        statement = self._claim_telling_next_due if tells else self._claim_statement
        taken = connection.execute(statement, parameters).all()
        records = [(row.due_at, self._reader.record_of(row)) for row in taken]
        records.sort(key=lambda pair: (pair[0], pair[1].id))
        next_due = taken[0].jobrunner_next_due if taken and tells else None
        return [record for _, record in records], next_due

    def _tells_next_due(self, queues: list[str]) -> bool:
        # Whether a claim of *queues* also tells when the next job is due: on
        # PostgreSQL for one queue, where that costs one index probe. (For
        # several, PostgreSQL 15 would read every scheduled job of theirs.)
        return self._traits.is_postgres and len(queues) == 1

    @functools.cached_property
    def _claim_telling_next_due(self) -> sa.Update:
        # The claim of one queue, bound as jobrunner_queue: a plain parameter
        # (no IN list to render at each run), and an index probe for the
        # seconds until its next job that is not due yet becomes due.
        queue = sa.bindparam("jobrunner_queue", type_=jobs.c.queue.type)
        next_due = _next_due(self._traits.clock(), queue).label("jobrunner_next_due")
        return self._claim(queue).returning(next_due)

    @functools.cached_property
    def _claim_statement(self) -> sa.Update:
        return self._claim(_bound_queues())

    def _claim(self, queues: sa.BindParameter[str]) -> sa.Update:
        # The claim of the queues bound by *queues*.
        traits = self._traits
        clock: dialects.Clock
        lease_end: sa.ColumnElement[datetime]
        if traits.is_clock_fixed:
            clock = dialects.BoundClock()
            lease_end = sa.bindparam("jobrunner_lease_end", type_=schema.UTCDateTime())
        else:
            clock = traits.clock()
            lease = sa.bindparam("jobrunner_lease", type_=sa.Interval())
            lease_end = sa.type_coerce(clock.now + lease, schema.UTCDateTime())
        ready = jobs.alias("ready")
        pick = _select_ready(ready, clock, queues, ready.c.id)
        if not traits.is_sqlite:  # SQLite's immediate transaction already excludes other claims
            pick = pick.with_for_update(skip_locked=True)
        prefix = sa.bindparam("jobrunner_prefix", type_=jobs.c.token.type)
        update = (
            sa.update(jobs)
            .where(jobs.c.id.in_(pick))
            .values(schema.claimed(clock, prefix, lease_end))
            .returning(*self._reader.columns)
        )
        if self._reader.packs_records:  # the claim's order needs it
            update = update.returning(jobs.c.due_at)
        if traits.is_postgres:
            update = update.returning(
                *sql_listener.notifications(claimable=False), dialects.RELAXED_COMMIT
            )
        return update

    def _take_selected(
        self,
        connection: sa.Connection,
        clock: dialects.Clock,
        queues: list[str],
        prefix: str,
        lease: float,
        limit: int,
    ) -> list[JobRecord]:
        # MariaDB has neither UPDATE ... RETURNING nor LIMIT in an IN subquery:
        # lock the rows, then update them with the database time read alongside.
        parameters: dict[str, Any] = {"jobrunner_queues": queues, "jobrunner_limit": limit}
        if isinstance(clock, dialects.FixedClock):
            parameters["jobrunner_now"] = clock.value
        rows = connection.execute(self._lock_ready_statement, parameters).all()
        if not rows:
            return []
        now: datetime = rows[0].jobrunner_now
        lease_end = now + timedelta(seconds=lease)
        records = [self._reader.record_of(row) for row in rows]
        connection.execute(
            self._claim_locked_statement,
            {
                "jobrunner_ids": [record.id for record in records],
                "jobrunner_now": now,
                "jobrunner_prefix": prefix,
                "jobrunner_lease_end": lease_end,
            },
        )
        for record in records:
            record.status = JobStatus.IN_PROGRESS
            record.token = prefix + record.id
            record.attempts += 1
            record.cancel_requested = False
            record.updated_at = now
            record.started_at = record.started_at or now
            record.lease_expires_at = lease_end
        return records

    @functools.cached_property
    def _lock_ready_statement(self) -> sa.Select[Any]:
        # The first half of a claim without RETURNING.
        clock = self._traits.prebuilt_clock()
        columns = (*self._reader.columns, clock.now.label("jobrunner_now"))
        ready = _select_ready(jobs, clock, _bound_queues(), *columns)
        return ready.with_for_update(skip_locked=True)

    @functools.cached_property
    def _claim_locked_statement(self) -> sa.Update:
        # Its second half: the locked rows claimed at the time the first half read.
        ids = sa.bindparam("jobrunner_ids", expanding=True, type_=jobs.c.id.type)
        values = schema.claimed(
            dialects.BoundClock(),
            sa.bindparam("jobrunner_prefix", type_=jobs.c.token.type),
            sa.bindparam("jobrunner_lease_end", type_=schema.UTCDateTime()),
        )
        return sa.update(jobs).where(jobs.c.id.in_(ids)).values(values)


class Taken(NamedTuple):
    """What a claim took, and what it learnt of the other jobs of its queues."""

    #: The jobs it took, in their queues' order.
    claims: list[Claim]
    #: If :attr:`drained`, the seconds until the next job is due (``None``: none is pending).
    due: float | None
    #: Whether no other job of its queues was due when it ran.
    drained: bool


def _bound_queues() -> sa.BindParameter[str]:
    # The queues of a claim, bound as the list jobrunner_queues.
    return sa.bindparam("jobrunner_queues", expanding=True, type_=jobs.c.queue.type)


def _in_queues(column: sa.ColumnElement[str], queues: sa.BindParameter[str]) -> Any:
    # Whether *column* is one of the queues *queues* binds (a list, or one queue).
    return column.in_(queues) if queues.expanding else column == queues


def _next_due(clock: dialects.Clock, queue: sa.BindParameter[str]) -> sa.ColumnElement[float]:
    # Seconds until the first pending job of the bound queue that is not due
    # yet becomes due; NULL if there is none. An InitPlan, run once per
    # statement in its snapshot, where the rows the claim takes are due already.
    later = jobs.alias("later")
    soonest = (
        sa.select(sa.func.min(later.c.due_at))
        .where(later.c.queue == queue, later.c.status == schema.PENDING)
        .where(later.c.due_at > clock.now)
        .scalar_subquery()
    )
    wait = sa.type_coerce(soonest, sa.DateTime()) - sa.type_coerce(clock.now, sa.DateTime())
    return sa.cast(sa.extract("epoch", wait), sa.Double())


def _select_ready(
    table: sa.FromClause,
    clock: dialects.Clock,
    queues: sa.BindParameter[str],
    *columns: sa.ColumnElement[Any],
) -> sa.Select[Any]:
    # The due pending jobs of the bound queues, in the order claims take them, at
    # most the bound limit: one definition for both forms of a claim, which must agree.
    return (
        sa.select(*columns)
        .where(_in_queues(table.c.queue, queues), table.c.status == schema.PENDING)
        .where(table.c.due_at <= clock.now)
        .order_by(table.c.due_at, table.c.id)
        .limit(sa.bindparam("jobrunner_limit", type_=sa.Integer()))
    )
