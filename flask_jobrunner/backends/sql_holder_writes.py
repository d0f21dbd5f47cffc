"""What the holder of a job writes in the SQL backend: heartbeats, progress, finishes, give-backs.

Every such write is one ``UPDATE`` checked by the job's id, its claim token
and its status, so a worker whose lease was taken back changes nothing.
The statements of the hot writes (a heartbeat, a finish without progress)
are built once, on first use: building them costs more than running them.
Finishes of many jobs go in one ``UPDATE`` whose values are ``CASE`` s on the
job's id. On PostgreSQL each change also notifies, in the same statement.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..record import JobStatus, LeaseState, Outcome, Progress, utcnow
from . import sql_dialects as dialects
from . import sql_listener
from . import sql_schema as schema
from .sql_schema import jobs

#: Jobs finished by one statement of :meth:`~.sql.SQLBackend.finish_many`.
FINISH_BATCH = 200


class HolderWrites:
    """The writes of a job's holder, on one kind of database; each takes a connection.

    :param traits: What the statements allow for on the database.
    """

    def __init__(self, traits: dialects.Traits) -> None:
        self._traits = traits

    # -- leases -----------------------------------------------------------------

    def heartbeat_parameters(self, job_id: str, token: str, lease: float) -> dict[str, Any]:
        """The parameters of :meth:`heartbeat`: renew *job_id*'s lease by *lease* seconds."""
        return {
            "jobrunner_id": job_id,
            "jobrunner_token": token,
            dialects.AFTER: self._traits.clock().after_value(lease),
        }

    def heartbeat(self, connection: sa.Connection, parameters: dict[str, Any]) -> LeaseState:
        """Renew a held job's lease; the lease state after."""
        statements = self._heartbeat_statements
        if self._traits.returning:
            row = connection.execute(statements[0], parameters).first()
            if row is None:
                return LeaseState.LOST
            return LeaseState.CANCEL_REQUESTED if row[0] else LeaseState.HELD
        if connection.execute(statements[0], parameters).rowcount:
            return LeaseState.HELD
        if connection.execute(statements[1], parameters).rowcount:
            return LeaseState.CANCEL_REQUESTED
        return LeaseState.LOST

    @functools.cached_property
    def _heartbeat_statements(self) -> list[sa.Update]:
        # With RETURNING one statement; without, the usual one (no cancel
        # requested), then the other.
        traits = self._traits
        clock = traits.prebuilt_clock()
        renew = sa.update(jobs).values(lease_expires_at=clock.after_bound())
        if not traits.returning:
            return [
                renew.where(schema.held_bound(), sa.not_(jobs.c.cancel_requested)),
                renew.where(schema.held_bound()),
            ]
        renew = renew.where(schema.held_bound()).returning(jobs.c.cancel_requested)
        return [renew.returning(dialects.RELAXED_COMMIT) if traits.is_postgres else renew]

    def progress(
        self,
        connection: sa.Connection,
        job_id: str,
        token: str,
        progress: Progress,
        *,
        lease: float,
    ) -> LeaseState:
        """Store progress of a held job, renew its lease and log it in ``job_progress``."""
        clock = self._traits.clock()
        values: dict[str, Any] = schema.progress_values(progress)
        values.update(updated_at=clock.now, lease_expires_at=clock.after(lease))
        state = self._renew(connection, job_id, token, values, notify=True)
        if state is not LeaseState.LOST:
            connection.execute(schema.log_progress(job_id))
        return state

    def _renew(
        self,
        connection: sa.Connection,
        job_id: str,
        token: str,
        values: dict[str, Any],
        *,
        notify: bool = False,
    ) -> LeaseState:
        # *notify*: whether this is a change of the job (a heartbeat is not).
        traits = self._traits
        held = schema.held(job_id, token)
        if traits.returning:
            renew = sa.update(jobs).where(held).values(values).returning(jobs.c.cancel_requested)
            if traits.is_postgres:
                renew = renew.returning(dialects.RELAXED_COMMIT)
                if notify:
                    renew = renew.returning(*sql_listener.notifications(claimable=False))
            row = connection.execute(renew).first()
            if row is None:
                return LeaseState.LOST
            return LeaseState.CANCEL_REQUESTED if row[0] else LeaseState.HELD
        # Without RETURNING: the usual case (no cancel requested) still takes one statement.
        update = sa.update(jobs).where(held, sa.not_(jobs.c.cancel_requested)).values(values)
        if connection.execute(update).rowcount:
            return LeaseState.HELD
        if connection.execute(sa.update(jobs).where(held).values(values)).rowcount:
            return LeaseState.CANCEL_REQUESTED
        return LeaseState.LOST

    # -- finishes ---------------------------------------------------------------

    def finish_parameters(self, job_id: str, token: str, outcome: Outcome) -> dict[str, Any]:
        """The parameters of :meth:`finish_prebuilt`, for an *outcome* without progress."""
        parameters = {f"jobrunner_{name}": value for name, value in outcome_row(outcome).items()}
        parameters.update(jobrunner_id=job_id, jobrunner_token=token)
        if self._traits.is_clock_fixed:
            parameters["jobrunner_now"] = utcnow()
        return parameters

    def finish_prebuilt(self, connection: sa.Connection, parameters: dict[str, Any]) -> bool:
        """Finish a held job by the statement built once; whether it was held."""
        return sql_listener.changed_a_row(
            connection, self._finish_statement, parameters, notifies=self._traits.is_postgres
        )

    @functools.cached_property
    def _finish_statement(self) -> sa.Update:
        # A finish without progress.
        clock = self._traits.prebuilt_clock()
        held = sa.and_(
            jobs.c.id == sa.bindparam("jobrunner_id"),
            jobs.c.token == sa.bindparam("jobrunner_token"),
            jobs.c.status == schema.IN_PROGRESS,
        )
        written = {
            name: sa.bindparam(f"jobrunner_{name}", type_=jobs.c[name].type)
            for name in outcome_row(Outcome(JobStatus.COMPLETED))
        }
        update = (
            sa.update(jobs)
            .where(held)
            .values(
                **written,
                token=None,
                lease_expires_at=None,
                finished_at=clock.now,
                updated_at=clock.now,
                active_unique_key=None,
            )
        )
        if self._traits.is_postgres:
            return update.returning(*sql_listener.notifications(claimable=False))
        return update

    def finish(self, connection: sa.Connection, job_id: str, token: str, outcome: Outcome) -> bool:
        """Finish a held job, logging the *outcome*'s progress; whether it was held."""
        clock = self._traits.clock()
        values = schema.outcome_values(outcome)
        values.update(
            status=outcome.status.value,
            token=None,
            lease_expires_at=None,
            finished_at=clock.now,
            updated_at=clock.now,
            active_unique_key=None,
        )
        update = sa.update(jobs).where(schema.held(job_id, token)).values(values)
        done = sql_listener.execute_notifying(
            connection, update, notifies=self._traits.is_postgres, claimable=False
        )
        if done and outcome.progress is not None:
            connection.execute(schema.log_progress(job_id))
        return done

    def finish_batch(
        self, connection: sa.Connection, *, finishes: list[tuple[str, str, Outcome]]
    ) -> list[bool]:
        """Finish each ``(job_id, token, outcome)`` (of distinct jobs) in one ``UPDATE``.

        :returns: Whether each job was held.
        """
        traits = self._traits
        clock = traits.clock()
        held = sa.and_(
            sa.tuple_(jobs.c.id, jobs.c.token).in_(
                [(job_id, token) for job_id, token, _ in finishes]
            ),
            jobs.c.status == schema.IN_PROGRESS,
        )
        if traits.returning:
            which = held
        else:  # MariaDB's UPDATE returns no rows: lock the held ones first
            locked = connection.execute(sa.select(jobs.c.id).where(held).with_for_update())
            ids = [row.id for row in locked]
            if not ids:
                return [False] * len(finishes)
            which = jobs.c.id.in_(ids)
        values = schema.finished_values([(job_id, outcome) for job_id, _, outcome in finishes])
        values.update(
            token=None,
            lease_expires_at=None,
            finished_at=clock.now,
            updated_at=clock.now,
            active_unique_key=None,
        )
        update = sa.update(jobs).where(which).values(values)
        if traits.returning:
            update = update.returning(jobs.c.id)
            if traits.is_postgres:
                update = update.returning(*sql_listener.notifications(claimable=False))
            ids = [row.id for row in connection.execute(update)]
        else:
            connection.execute(update)
        finished = set(ids)
        logged = [job_id for job_id, _, outcome in finishes if outcome.progress is not None]
        if any(job_id in finished for job_id in logged):
            connection.execute(schema.log_progress([i for i in logged if i in finished]))
        return [job_id in finished for job_id, _, _ in finishes]

    # -- give-backs -------------------------------------------------------------

    def retry_later(
        self, connection: sa.Connection, job_id: str, token: str, run_at: datetime, error: Outcome
    ) -> bool:
        """Put a held job back as pending until *run_at*; whether it was held."""
        values = schema.outcome_values(error)
        values.update(schema.given_back(self._traits.clock()), run_at=run_at, due_at=run_at)
        update = sa.update(jobs).where(schema.held(job_id, token)).values(values)
        return sql_listener.execute_notifying(connection, update, notifies=self._traits.is_postgres)

    def release(self, connection: sa.Connection, job_id: str, token: str) -> bool:
        """Give a held job back in its old place, not counting the attempt; whether it was held."""
        clock = self._traits.clock()
        values = schema.given_back(clock)
        values.update(
            attempts=sa.case((jobs.c.attempts > 0, jobs.c.attempts - 1), else_=0),
            run_at=None,
            due_at=schema.no_later(jobs.c.created_at, clock),
        )
        update = sa.update(jobs).where(schema.held(job_id, token)).values(values)
        return sql_listener.execute_notifying(connection, update, notifies=self._traits.is_postgres)


def outcome_row(outcome: Outcome) -> dict[str, Any]:
    """The columns a final outcome without progress writes."""
    values = schema.outcome_values(outcome)
    values["status"] = outcome.status.value
    return values


def distinct_batches(
    finishes: Sequence[tuple[str, str, Outcome]],
) -> tuple[list[list[int]], list[int]]:
    """The indexes of *finishes* in batches of distinct jobs, and those to finish apart.

    A job twice in *finishes* (taken back and claimed again meanwhile) is
    finished apart, after the batches.
    """
    batch: dict[str, int] = {}
    apart = []
    for index, (job_id, _, _) in enumerate(finishes):
        if job_id in batch:
            apart.append(index)
        else:
            batch[job_id] = index
    indexes = list(batch.values())
    return [
        indexes[start : start + FINISH_BATCH] for start in range(0, len(indexes), FINISH_BATCH)
    ], apart
