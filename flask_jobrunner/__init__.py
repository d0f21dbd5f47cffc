"""Background jobs for Flask that a client can submit, poll, watch and trust."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .backends.base import Backend
from .context import JobContext, current_job
from .errors import (
    BackendUnavailable,
    ConfigurationError,
    InvalidArguments,
    JobCancelled,
    JobConflict,
    JobInterrupted,
    JobNotFound,
    JobRunnerError,
    JobTimeout,
    NotAuthorized,
    TaskNotFound,
)
from .extension import JobPage, JobRunner
from .job import Job
from .record import ErrorType, JobStatus
from .signals import job_finished, job_progress, job_started, job_submitted
from .task import Task

try:
    __version__ = version("flask-jobrunner")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Backend",
    "BackendUnavailable",
    "ConfigurationError",
    "ErrorType",
    "InvalidArguments",
    "Job",
    "JobCancelled",
    "JobConflict",
    "JobContext",
    "JobInterrupted",
    "JobNotFound",
    "JobPage",
    "JobRunner",
    "JobRunnerError",
    "JobStatus",
    "JobTimeout",
    "NotAuthorized",
    "Task",
    "TaskNotFound",
    "current_job",
    "job_finished",
    "job_progress",
    "job_started",
    "job_submitted",
]
