"""How the SQL backend reads jobs: one job by id, a page of the list, the counts.

A hot read (a job by id, the rows a claim locks on MariaDB) selects each
record as one JSON column on MySQL/MariaDB, whose driver parses every column's
description in Python, and every column elsewhere: :class:`RecordReader`
knows which, and reads the record back from either.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..record import JobRecord, JobStatus
from . import sql_schema as schema
from .base import decode_cursor
from .sql_schema import jobs


class RecordReader:
    """What a hot read selects of ``jobs``, and the record in each row it gets.

    :param packs_records: Whether a record is selected as one JSON column.
    """

    def __init__(self, *, packs_records: bool) -> None:
        #: Whether a record is selected as one JSON column.
        self.packs_records = packs_records
        #: The columns to select.
        self.columns: list[sa.ColumnElement[Any]] = (
            [schema.packed_record()] if packs_records else list(jobs.c)
        )
        # Built once: building a SELECT of every column costs more than running it.
        self._select_one = sa.select(*self.columns).where(jobs.c.id == sa.bindparam("jobrunner_id"))

    def record_of(self, row: sa.Row[Any]) -> JobRecord:
        """The record in a row of :attr:`columns`."""
        return schema.from_packed(row[0]) if self.packs_records else schema.to_record(row)

    def select_one(self, connection: sa.Connection, job_id: str) -> JobRecord | None:
        """The stored job *job_id*, or ``None``."""
        row = connection.execute(self._select_one, {"jobrunner_id": job_id}).first()
        return None if row is None else self.record_of(row)


def page_query(
    *,
    status: JobStatus | None,
    task: str | None,
    created_by: str | None,
    limit: int,
    cursor: str | None,
) -> sa.Select[Any]:
    """The ``SELECT`` of a newest-first page of jobs, by ``(created_at, id)``.

    It selects one job more than *limit*, which tells whether a next page exists.

    :param cursor: Where the page starts (see :func:`~.base.encode_cursor`).
    :raises InvalidArguments: if the cursor was not made by ``encode_cursor``.
    """
    query = sa.select(jobs)
    if status is not None:
        query = query.where(jobs.c.status == JobStatus(status).value)
    if task is not None:
        query = query.where(jobs.c.task == task)
    if created_by is not None:
        query = query.where(jobs.c.created_by == created_by)
    if cursor:
        created_at, job_id = decode_cursor(cursor)
        query = query.where(
            sa.or_(
                jobs.c.created_at < created_at,
                sa.and_(jobs.c.created_at == created_at, jobs.c.id < job_id),
            )
        )
    return query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit + 1)


def counts_query() -> sa.Select[Any]:
    """The ``SELECT`` of how many jobs are in each status, in one ``GROUP BY``."""
    return sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)
