"""``Job``: the handle returned by a submit, and the status document it renders."""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .errors import JobNotFound
from .record import ErrorType, JobRecord, JobStatus

if TYPE_CHECKING:
    from .backends.base import Backend

_FINISHED_AT_FIELD = {
    JobStatus.COMPLETED: "completed_at",
    JobStatus.FAILED: "failed_at",
    JobStatus.CANCELLED: "cancelled_at",
}


class Job:
    """A handle on one job: its state when last read, and ways to read it again.

    :param record: The job as stored.
    :param backend: Where the job is stored.
    """

    def __init__(self, record: JobRecord, backend: Backend) -> None:
        self.record = record
        self._backend = backend

    def __repr__(self) -> str:
        return f"<Job {self.task!r} {self.id} {self.status.value}>"

    @property
    def id(self) -> str:
        """The job's id, a UUID4 string."""
        return self.record.id

    @property
    def task(self) -> str:
        """The name of the job's task."""
        return self.record.task

    @property
    def status(self) -> JobStatus:
        """The job's status when it was last read."""
        return self.record.status

    @property
    def is_finished(self) -> bool:
        """Whether the job reached ``completed``, ``failed`` or ``cancelled``."""
        return self.record.is_finished

    @property
    def result(self) -> Any:
        """What the task returned, as JSON data; ``None`` until ``completed``."""
        return self.record.result

    @property
    def error(self) -> str | None:
        """The error message of a failed job (or of the last failed try)."""
        return self.record.error

    @property
    def error_type(self) -> ErrorType | None:
        """Why the job failed: ``validation``, ``system``, ``timeout`` or ``interrupted``."""
        return self.record.error_type

    @property
    def percentage(self) -> float | None:
        """The last progress percentage stored."""
        return self.record.percentage

    @property
    def message(self) -> str | None:
        """The last progress message stored."""
        return self.record.message

    @property
    def created_by(self) -> str | None:
        """The identity that submitted the job, if the app has an identity function."""
        return self.record.created_by

    def refresh(self) -> Job:
        """Read the job again from the backend; returns the handle itself.

        :raises JobNotFound: if the job expired or was purged.
        """
        record = self._backend.get(self.id)
        if record is None:
            raise JobNotFound(f"Job '{self.id}' no longer exists; finished jobs expire.")
        self.record = record
        return self

    def wait(self, timeout: float | None = None) -> Job:
        """Block until the job is finished; returns the handle itself.

        :param timeout: Seconds to wait at most; ``None`` waits as long as it takes.
        :raises TimeoutError: if the job is not finished in time.
        :raises JobNotFound: if the job expired or was purged.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_finished:
            remaining = 60.0 if deadline is None else deadline - time.monotonic()
            # Read at least once, even with no time left: the handle may be stale.
            record = self._backend.wait_finished(self.id, min(max(remaining, 0.0), 60.0))
            if record is None:
                raise JobNotFound(f"Job '{self.id}' no longer exists; finished jobs expire.")
            self.record = record
            if not self.is_finished and deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"Job '{self.id}' is still {self.status.value} after {timeout:g} seconds."
                )
        return self

    def to_dict(self, polling_url: str | None = None) -> dict[str, Any]:
        """The status document, as ``GET /api/jobs/<id>`` answers it: the fields that apply now.

        :param polling_url: Where clients read the job; added when given.
        """
        return status_document(self.record, polling_url)


def status_document(record: JobRecord, polling_url: str | None = None) -> dict[str, Any]:
    """The JSON status document of *record*; fields that do not apply are left out."""
    document: dict[str, Any] = {
        "job_id": record.id,
        "task": record.task,
        "status": record.status.value,
        "percentage": 100.0 if record.status is JobStatus.COMPLETED else record.percentage,
        "message": record.message,
        "items_processed": record.items_processed,
        "total_items": record.total_items,
        "created_at": _iso(record.created_at),
        "started_at": _iso(record.started_at),
        "updated_at": _iso(record.updated_at or record.created_at),
        "attempts": record.attempts,
    }
    if record.run_at is not None and record.started_at is None and not record.status.is_final:
        document["scheduled_for"] = _iso(record.run_at)  # a delayed job, not yet started
    if record.status.is_final:
        document[_FINISHED_AT_FIELD[record.status]] = _iso(record.finished_at)
    if record.error is not None:
        document["error"] = record.error
        document["error_type"] = record.error_type.value if record.error_type else None
        document["error_details"] = record.error_details
    if record.cancel_requested and not record.status.is_final:
        document["cancel_requested"] = True
    if polling_url is not None:
        document["polling_url"] = polling_url
    document = {key: value for key, value in document.items() if value is not None}
    if record.status is JobStatus.COMPLETED:
        document["result"] = record.result
    return document


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.isoformat().replace("+00:00", "Z")
