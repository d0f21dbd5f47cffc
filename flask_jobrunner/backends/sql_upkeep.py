"""How the SQL backend's upkeep changes the tables: expired leases taken back, old jobs deleted.

A running job whose lease ended on the database's clock is taken back
(pending again, or failed once it was lost too often), each by an
``UPDATE`` checked by its token, so a worker's late finish changes nothing.
Finished jobs past the result TTL are deleted with their progress log.
On SQLite, where a write waits for every other writer, a read first tells
whether there is anything to do.
"""

from __future__ import annotations

import sqlalchemy as sa

from ..record import JobRecord, JobStatus
from . import sql_dialects as dialects
from . import sql_listener
from . import sql_schema as schema
from .sql_schema import job_progress, jobs, to_record, to_row


def delete_jobs(
    connection: sa.Connection, which: sa.ColumnElement[bool], *, is_sqlite: bool
) -> int:
    """Delete the jobs *which* selects, with their progress log; how many there were."""
    # PostgreSQL and InnoDB drop the progress rows by the foreign key's
    # ON DELETE CASCADE; SQLite enforces foreign keys only when asked to.
    if is_sqlite:
        doomed = sa.select(jobs.c.id).where(which)
        connection.execute(sa.delete(job_progress).where(job_progress.c.job_id.in_(doomed)))
    return connection.execute(sa.delete(jobs).where(which)).rowcount


def has_expired_results(
    connection: sa.Connection, traits: dialects.Traits, *, result_ttl: float
) -> bool:
    """Whether any job finished more than *result_ttl* seconds ago, by a read."""
    found = sa.select(jobs.c.id).where(_result_expired(traits, result_ttl)).limit(1)
    return connection.execute(found).first() is not None


def has_expired_leases(connection: sa.Connection, traits: dialects.Traits) -> bool:
    """Whether any running job's lease ended, by a read."""
    found = sa.select(jobs.c.id).where(_lease_ended(traits.clock())).limit(1)
    return connection.execute(found).first() is not None


def purge_expired(connection: sa.Connection, traits: dialects.Traits, *, result_ttl: float) -> int:
    """Delete the jobs finished more than *result_ttl* seconds ago; how many there were."""
    return delete_jobs(connection, _result_expired(traits, result_ttl), is_sqlite=traits.is_sqlite)


def recover_expired(
    connection: sa.Connection, traits: dialects.Traits, *, max_recoveries: int
) -> list[JobRecord]:
    """Take back the running jobs whose lease ended; the records as they are now."""
    clock = traits.clock()
    query = (
        sa.select(jobs, clock.now.label("jobrunner_now"))
        .where(_lease_ended(clock))
        .order_by(jobs.c.lease_expires_at)
        .with_for_update(skip_locked=True)
    )
    changed = []
    for row in connection.execute(query).all():
        record = schema.recovered(to_record(row), row.jobrunner_now, max_recoveries)
        values = to_row(record)
        del values["id"]
        if record.status is JobStatus.PENDING:
            values["due_at"] = min(record.created_at, row.jobrunner_now)
        else:
            values["active_unique_key"] = None
        update = sa.update(jobs).where(schema.held(record.id, row.token)).values(values)
        sql_listener.execute_notifying(
            connection, update, notifies=traits.is_postgres, claimable=False
        )
        changed.append(record)
    if traits.is_postgres and any(r.status is JobStatus.PENDING for r in changed):
        connection.execute(sa.select(sa.func.pg_notify(sql_listener.CHANNEL, "")))
    return changed


def _result_expired(traits: dialects.Traits, result_ttl: float) -> sa.ColumnElement[bool]:
    # Finished more than result_ttl seconds ago: what a purge deletes, and its read looks for.
    return jobs.c.finished_at <= traits.clock().after(-result_ttl)


def _lease_ended(clock: dialects.Clock) -> sa.ColumnElement[bool]:
    # Running with its lease ended: what recovery takes back, and its read looks for.
    return sa.and_(jobs.c.status == schema.IN_PROGRESS, jobs.c.lease_expires_at <= clock.now)
