"""The exceptions raised by flask-jobrunner.

Every error derives from :class:`JobRunnerError`; the HTTP API maps each class
to one status code in :mod:`flask_jobrunner.api`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .record import JobRecord


class JobRunnerError(Exception):
    """Raised for any error of flask-jobrunner; the root of the others.

    :param message: A full sentence saying what went wrong and what to do.
    :param details: Structured detail for the HTTP error body.
    """

    def __init__(self, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ConfigurationError(JobRunnerError):
    """Raised when a ``JOBRUNNER_*`` setting or a backend URL is not usable."""


class TaskNotFound(JobRunnerError):
    """Raised when no task of that name is registered (or it is not open to HTTP)."""


class InvalidArguments(JobRunnerError):
    """Raised when a task's arguments do not fit its signature and type hints."""


class JobNotFound(JobRunnerError):
    """Raised when no job has the given id, or it has expired."""


class JobConflict(JobRunnerError):
    """Raised when a ``unique`` task already has an unfinished job, or a finished job is cancelled.

    :param message: What went wrong.
    :param existing: The job in the way: the unfinished one, or the finished one.
    """

    def __init__(self, message: str, existing: JobRecord) -> None:
        super().__init__(message, details={"job_id": existing.id, "status": existing.status})
        self.existing = existing


class NotAuthorized(JobRunnerError):
    """Raised when the app's ``authorize`` function refuses a request, or none is set."""


class BackendUnavailable(JobRunnerError):
    """Raised when the job backend cannot be reached or cannot take more jobs."""


class JobInterrupted(JobRunnerError):
    """Raised inside a task by :data:`current_job` when the job must stop.

    The task may catch it to clean up, but should let it propagate.
    """


class JobCancelled(JobInterrupted):
    """Raised inside a task when a cancel of its job was requested."""


class JobTimeout(JobInterrupted):
    """Raised inside a task when its job ran past its timeout."""
