"""The stored form of a job: the one module that knows the record format.

Backends keep :class:`JobRecord` values (or their :meth:`~JobRecord.to_dict`
form) and know nothing else of jobs. Every field has a default so that a
record stored by an older version still loads.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from copy import deepcopy
from datetime import datetime, timezone
from typing import Any


class JobStatus(str, enum.Enum):
    """The states of a job. ``completed``, ``failed`` and ``cancelled`` are final."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """Whether the job can no longer change."""
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class ErrorType(str, enum.Enum):
    """Why a job failed."""

    #: The task raised :class:`ValueError`: its input was wrong. Not retried.
    VALIDATION = "validation"
    #: Anything else the task raised; the message starts with "Internal error:".
    SYSTEM = "system"
    #: The job ran past its timeout.
    TIMEOUT = "timeout"
    #: The job was lost with its process and not retried.
    INTERRUPTED = "interrupted"


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(timezone.utc)


def new_job_id() -> str:
    """A fresh random job id (UUID4, canonical text form)."""
    return str(uuid.uuid4())


def is_job_id(value: str) -> bool:
    """Whether *value* is a job id in canonical UUID4 form; checked before any look-up."""
    if len(value) != 36:
        return False
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return False
    return parsed.version == 4 and str(parsed) == value


@dataclasses.dataclass
class JobRecord:
    """Everything stored about one job.

    Times are timezone-aware UTC. ``token`` and ``lease_expires_at`` belong to
    the current claim; ``cancel_requested`` is set when a running job is asked
    to stop.
    """

    id: str
    task: str
    queue: str = "default"
    args: list[Any] = dataclasses.field(default_factory=list)
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    status: JobStatus = JobStatus.PENDING
    created_at: datetime = dataclasses.field(default_factory=utcnow)
    started_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    run_at: datetime | None = None
    percentage: float | None = None
    message: str | None = None
    items_processed: int | None = None
    total_items: int | None = None
    result: Any = None
    error: str | None = None
    error_type: ErrorType | None = None
    error_details: str | None = None
    attempts: int = 0
    max_retries: int = 0
    recoveries: int = 0
    timeout: float | None = None
    created_by: str | None = None
    unique_key: str | None = None
    idempotency_key: str | None = None
    cancel_requested: bool = False
    token: str | None = None
    lease_expires_at: datetime | None = None

    @property
    def is_finished(self) -> bool:
        """Whether the job reached a final state."""
        return self.status.is_final

    def copy(self) -> JobRecord:
        """A deep copy: changing it, down to nested arguments and result, changes nothing here."""
        # Backends copy on every read and write, so this is the fast path of
        # dataclasses.replace (JobRecord has no __post_init__ or slots).
        record = object.__new__(type(self))
        record.__dict__.update(self.__dict__)
        record.args = copy_data(self.args)
        record.kwargs = copy_data(self.kwargs)
        record.result = copy_data(self.result)
        return record

    def apply_progress(self, progress: Progress) -> None:
        """Copy the fields that *progress* reports onto this record."""
        for name in ("percentage", "message", "items_processed", "total_items"):
            value = getattr(progress, name)
            if value is not None:
                setattr(self, name, value)

    def apply_outcome(self, outcome: Outcome) -> None:
        """Copy the result or error of *outcome* (and its last progress) onto this record."""
        if outcome.progress is not None:
            self.apply_progress(outcome.progress)
        self.result = copy_data(outcome.result)  # the caller may go on changing its object
        self.error = outcome.error
        self.error_type = outcome.error_type
        self.error_details = outcome.error_details

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-compatible data (times as ISO-8601 strings)."""
        data: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, enum.Enum):
                value = value.value
            data[field.name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        """Load a record from :meth:`to_dict` data; unknown keys are ignored."""
        known = _FIELD_NAMES if cls is JobRecord else {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        for name in _TIME_FIELDS:
            if isinstance(values.get(name), str):
                values[name] = datetime.fromisoformat(values[name])
        if values.get("status") is not None:
            values["status"] = JobStatus(values["status"])
        if values.get("error_type") is not None:
            values["error_type"] = ErrorType(values["error_type"])
        return cls(**values)


def copy_data(value: Any) -> Any:
    """A deep copy of JSON-like *value*; quick for the lists, dicts and scalars jobs hold."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if type(value) is list:
        return [copy_data(item) for item in value]
    if type(value) is dict:
        return {key: copy_data(item) for key, item in value.items()}
    return deepcopy(value)


# Read on every load of a record (each claim): computed once.
_FIELD_NAMES = frozenset(field.name for field in dataclasses.fields(JobRecord))
_TIME_FIELDS = tuple(
    field.name for field in dataclasses.fields(JobRecord) if "datetime" in str(field.type)
)


@dataclasses.dataclass(frozen=True)
class Claim:
    """A job handed to one worker: the record and the token every write must carry."""

    record: JobRecord
    token: str


class LeaseState(str, enum.Enum):
    """What a worker learns when it renews its lease or stores progress."""

    #: The lease is held and nobody asked the job to stop.
    HELD = "held"
    #: The lease is held, but a cancel was requested.
    CANCEL_REQUESTED = "cancel_requested"
    #: The job was taken back or finished by someone else; stop writing.
    LOST = "lost"


@dataclasses.dataclass(frozen=True)
class Progress:
    """One progress report of a running job."""

    percentage: float | None = None
    message: str | None = None
    items_processed: int | None = None
    total_items: int | None = None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The final state a worker writes for a job it holds."""

    status: JobStatus
    result: Any = None
    error: str | None = None
    error_type: ErrorType | None = None
    error_details: str | None = None
    progress: Progress | None = None
