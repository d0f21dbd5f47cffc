"""The tables of the SQL backend, how a :class:`~flask_jobrunner.record.JobRecord`
maps to a row of ``jobs``, and what each change of a job's state writes.

``jobs`` has one column per record field, plus two the backend keeps for
itself: ``due_at``, when the job became (or becomes) claimable, and
``active_unique_key``, the unique key while the job is pending or running
(``NULL`` once it is finished). ``job_progress`` logs every progress report.
Arguments and results are stored as JSON text, times as timezone-naive UTC.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from ..record import ErrorType, JobRecord, JobStatus, Outcome, Progress

if TYPE_CHECKING:
    from .sql_dialects import Clock


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime, stored naive with microseconds.

    Naive columns compare and index the same on every database; MySQL needs
    ``DATETIME(6)`` to keep the microseconds.
    """

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        """``DATETIME(6)`` on MySQL and MariaDB, a plain ``DateTime`` elsewhere."""
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects import mysql

            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime())

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        """Convert an aware time to naive UTC; a naive one is taken as UTC already."""
        if value is None or value.tzinfo is None:
            return value
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        """Mark a stored naive time as UTC."""
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=timezone.utc)


metadata = sa.MetaData()

# A binary collation: keys, tokens and filters compare byte for byte, as in
# Python, and never case-insensitively (MySQL's default collations do).
MYSQL_TABLE: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}
# "C" on PostgreSQL, so that ids sort as Python sorts them, whatever the
# database's locale: the list cursor compares them.
_Id = sa.String(36).with_variant(sa.VARCHAR(36, collation="C"), "postgresql")
_Name = sa.String(255)


class LongText(sa.TypeDecorator[str]):
    """``LONGTEXT`` on MySQL and MariaDB (whose ``TEXT`` holds 64 KiB), ``TEXT`` elsewhere."""

    impl = sa.Text
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        """``LONGTEXT`` on MySQL and MariaDB, a plain ``Text`` elsewhere."""
        if dialect.name in ("mysql", "mariadb"):
            from sqlalchemy.dialects import mysql

            return dialect.type_descriptor(mysql.LONGTEXT())
        return self.impl_instance


_LongText = LongText()
_Count = sa.BigInteger()

#: One row per job.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", _Id, primary_key=True),
    sa.Column("task", _Name, nullable=False),
    sa.Column("queue", _Name, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("args", _LongText, nullable=False),
    sa.Column("kwargs", _LongText, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime()),
    sa.Column("updated_at", UTCDateTime()),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("run_at", UTCDateTime()),
    sa.Column("due_at", UTCDateTime(), nullable=False),
    sa.Column("percentage", sa.Double()),
    sa.Column("message", _LongText),
    sa.Column("items_processed", _Count),
    sa.Column("total_items", _Count),
    sa.Column("result", _LongText),
    sa.Column("error", _LongText),
    sa.Column("error_type", sa.String(16)),
    sa.Column("error_details", _LongText),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("max_retries", sa.Integer(), nullable=False),
    sa.Column("recoveries", sa.Integer(), nullable=False),
    sa.Column("timeout", sa.Double()),
    sa.Column("created_by", _Name),
    sa.Column("unique_key", _Name),
    sa.Column("active_unique_key", _Name),
    sa.Column("idempotency_key", _Name),
    sa.Column("cancel_requested", sa.Boolean(), nullable=False),
    sa.Column("token", sa.String(80)),
    sa.Column("lease_expires_at", UTCDateTime()),
    sa.Index("ix_jobs_status_created_at", "status", "created_at"),
    sa.Index("ix_jobs_created_at", "created_at"),
    # In a claim's order (due_at, then id), so a claim reads only the rows it
    # takes: else PostgreSQL and SQLite sort every pending job for each claim.
    sa.Index("ix_jobs_ready", "queue", "status", "due_at", "id"),
    sa.Index("ix_jobs_finished_at", "finished_at"),
    # NULLs never collide, so these hold only while a key is taken.
    sa.Index("ux_jobs_active_unique_key", "active_unique_key", unique=True),
    sa.Index("ux_jobs_idempotency_key", "idempotency_key", unique=True),
)

#: One row per stored progress report, oldest first by ``id``.
job_progress = sa.Table(
    "job_progress",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
    sa.Column("job_id", _Id, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("percentage", sa.Double()),
    sa.Column("message", _LongText),
    sa.Column("items_processed", _Count),
    sa.Column("total_items", _Count),
    sa.Index("ix_job_progress_job_id_updated_at", "job_id", "updated_at"),
)

#: One row per submitted tick of a periodic schedule; the key makes a second claim fail.
job_ticks = sa.Table(
    "job_ticks",
    metadata,
    sa.Column("schedule", _Name, primary_key=True),
    sa.Column("tick", UTCDateTime(), primary_key=True),
)

#: The columns of ``jobs`` a progress report writes, and ``job_progress`` logs.
PROGRESS_FIELDS = ("percentage", "message", "items_processed", "total_items")

_FIELDS = tuple(field.name for field in dataclasses.fields(JobRecord))
_JSON_FIELDS = ("args", "kwargs", "result")
_TIME_FIELDS = tuple(name for name in _FIELDS if isinstance(jobs.c[name].type, UTCDateTime))
_FLOAT_FIELDS = tuple(name for name in _FIELDS if isinstance(jobs.c[name].type, sa.Float))


def to_row(record: JobRecord) -> dict[str, Any]:
    """The column values of ``jobs`` that store *record*."""
    row: dict[str, Any] = {}
    for name in _FIELDS:
        value = getattr(record, name)
        if name in _JSON_FIELDS:
            value = json_text(value)
        elif isinstance(value, enum.Enum):
            value = value.value
        row[name] = value
    return row


def to_record(row: sa.Row[Any]) -> JobRecord:
    """The record stored in a row of ``jobs``; extra columns in *row* are ignored."""
    mapping = row._mapping
    return _loaded({name: mapping[name] for name in _FIELDS})


def _loaded(values: dict[str, Any]) -> JobRecord:
    # The record of a row's values, as the database driver gave them.
    for name in _JSON_FIELDS:
        if values[name] is not None:
            values[name] = json.loads(values[name])
    values["status"] = JobStatus(values["status"])
    if values["error_type"] is not None:
        values["error_type"] = ErrorType(values["error_type"])
    values["cancel_requested"] = bool(values["cancel_requested"])
    return JobRecord(**values)


class _JSONArray(sa.sql.functions.GenericFunction[str]):
    # A JSON array of its arguments, as text: json_array() on MySQL and MariaDB,
    # json_build_array() on PostgreSQL.
    type = sa.Text()
    inherit_cache = True
    name = "json_array"
    # Not under sa.func.json_array: that stays the app's, as SQLAlchemy has it.
    _register = False


@compiles(_JSONArray, "postgresql")
def _json_build_array(element: _JSONArray, compiler: Any, **kw: Any) -> str:
    return f"json_build_array({compiler.process(element.clauses, **kw)})::text"


def packed_record() -> sa.Label[str]:
    """Every field of a row of ``jobs`` in one JSON array, for MySQL, MariaDB and PostgreSQL.

    PyMySQL parses the description of each column of a result in Python,
    and psycopg makes an object for each column of every result, which for
    a row of ``jobs`` costs more than the row itself; one column is read
    much faster. JSON keeps every value exactly. Read it back with
    :func:`from_packed`.
    """
    fields = (jobs.c[name] for name in _FIELDS)
    return _JSONArray(*fields).label("jobrunner_record")


def from_packed(text: str) -> JobRecord:
    """The record in a :func:`packed_record`."""
    values = dict(zip(_FIELDS, json.loads(text), strict=True))
    for name in _TIME_FIELDS:
        if values[name] is not None:
            values[name] = datetime.fromisoformat(values[name]).replace(tzinfo=timezone.utc)
    for name in _FLOAT_FIELDS:  # JSON writes a whole double without its point
        if values[name] is not None:
            values[name] = float(values[name])
    return _loaded(values)


def json_text(value: Any) -> str | None:
    """*value* as stored JSON text (``None`` stays ``NULL``)."""
    return None if value is None else json.dumps(value)


# -- what each change of state writes ------------------------------------------

PENDING = JobStatus.PENDING.value
IN_PROGRESS = JobStatus.IN_PROGRESS.value
CANCELLED = JobStatus.CANCELLED.value


def held(job_id: str, token: str) -> sa.ColumnElement[bool]:
    """Whether a row is the running job *job_id* held by *token*."""
    return sa.and_(jobs.c.id == job_id, jobs.c.token == token, jobs.c.status == IN_PROGRESS)


def held_bound() -> sa.ColumnElement[bool]:
    """:func:`held` for a statement built once, of ``jobrunner_id`` and ``jobrunner_token``."""
    return sa.and_(
        jobs.c.id == sa.bindparam("jobrunner_id", type_=jobs.c.id.type),
        jobs.c.token == sa.bindparam("jobrunner_token", type_=jobs.c.token.type),
        jobs.c.status == IN_PROGRESS,
    )


def no_later(moment: Any, clock: Clock) -> sa.ColumnElement[datetime]:
    """*moment*, but never later than the clock's now: a job's place in the queue.

    So an app clock ahead of the database's never keeps a new job from being claimed.
    """
    return sa.case((moment < clock.now, moment), else_=clock.now)


def claimed(
    clock: Clock, prefix: str | sa.ColumnElement[str], lease: float | sa.ColumnElement[datetime]
) -> dict[str, Any]:
    """What a claim writes: a new token (*prefix* + id), one more attempt and a lease.

    *prefix* and *lease* (seconds, or the lease's end) may be SQL expressions,
    for a statement built once and run with parameters.
    """
    return {
        "status": IN_PROGRESS,
        "token": (prefix if isinstance(prefix, sa.ColumnElement) else sa.literal(prefix))
        + jobs.c.id,
        "attempts": jobs.c.attempts + 1,
        "cancel_requested": False,
        "updated_at": clock.now,
        "started_at": sa.func.coalesce(jobs.c.started_at, clock.now),
        "lease_expires_at": lease if isinstance(lease, sa.ColumnElement) else clock.after(lease),
    }


def given_back(clock: Clock) -> dict[str, Any]:
    """What giving a held job back writes: pending again, or cancelled if that was asked.

    A job given back after a cancel request ends cancelled: its holder never saw it.
    """
    # No value here reads a column another one writes: MySQL applies them in order.
    cancelled = jobs.c.cancel_requested
    return {
        "status": sa.case((cancelled, CANCELLED), else_=PENDING),
        "finished_at": sa.case((cancelled, clock.now), else_=sa.null()),
        "active_unique_key": sa.case((cancelled, sa.null()), else_=jobs.c.active_unique_key),
        "token": None,
        "lease_expires_at": None,
        "updated_at": clock.now,
    }


def progress_values(progress: Progress) -> dict[str, Any]:
    """The progress columns a report sets; fields it leaves out keep their value."""
    return {
        name: getattr(progress, name)
        for name in PROGRESS_FIELDS
        if getattr(progress, name) is not None
    }


def outcome_values(outcome: Outcome) -> dict[str, Any]:
    """What a final (or retried) outcome writes: result, error and its last progress."""
    values = {} if outcome.progress is None else progress_values(outcome.progress)
    values.update(
        result=json_text(outcome.result),
        error=outcome.error,
        error_type=None if outcome.error_type is None else outcome.error_type.value,
        error_details=outcome.error_details,
    )
    return values


def log_progress(job_id: str | Sequence[str]) -> sa.Insert:
    """An ``INSERT`` into ``job_progress`` of the progress of one or more jobs as it now stands."""
    columns = [jobs.c.id, jobs.c.updated_at, *(jobs.c[name] for name in PROGRESS_FIELDS)]
    which = jobs.c.id == job_id if isinstance(job_id, str) else jobs.c.id.in_(job_id)
    return sa.insert(job_progress).from_select(
        ["job_id", "updated_at", *PROGRESS_FIELDS], sa.select(*columns).where(which)
    )


def finished_values(outcomes: Sequence[tuple[str, Outcome]]) -> dict[str, Any]:
    """What finishing each ``(job_id, outcome)`` writes, as one ``UPDATE``'s values.

    A column that the outcomes set alike gets that value; one they set
    differently a ``CASE`` on the job's id.
    """
    by_column: dict[str, dict[str, Any]] = {}
    for job_id, outcome in outcomes:
        values = outcome_values(outcome)
        values["status"] = outcome.status.value
        for name, value in values.items():
            by_column.setdefault(name, {})[job_id] = value
    written: dict[str, Any] = {}
    for name, by_id in by_column.items():
        column = jobs.c[name]
        distinct = set(by_id.values())
        if len(by_id) == len(outcomes) and len(distinct) == 1:
            written[name] = sa.literal(distinct.pop(), column.type)
        else:
            whens = [
                (jobs.c.id == job_id, sa.literal(v, column.type)) for job_id, v in by_id.items()
            ]
            written[name] = sa.case(*whens, else_=column)
    return written


def recovered(record: JobRecord, now: datetime, max_recoveries: int) -> JobRecord:
    """*record*, whose lease ended, as recovery leaves it (as the memory backend does)."""
    if record.recoveries < max_recoveries or record.cancel_requested:
        record.recoveries += 1
        record.run_at = None
        if not record.cancel_requested:
            record.status = JobStatus.PENDING
            record.token = record.lease_expires_at = None
            record.updated_at = now
            return record
        record.status = JobStatus.CANCELLED
    else:
        record.error = (
            "Internal error: the job was lost with its worker"
            f" {record.recoveries + 1} times and is not tried again."
        )
        record.error_type = ErrorType.INTERRUPTED
        record.status = JobStatus.FAILED
    record.token = record.lease_expires_at = None
    record.finished_at = record.updated_at = now
    return record
