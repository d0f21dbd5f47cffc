"""Running one claimed job: inside the real app's app context, to one final write.

The executor turns whatever the task does into exactly one
:class:`~flask_jobrunner.record.Outcome`: a result, a cancel, a timeout, a
validation error (the task raised :class:`ValueError`), or a system error,
which is retried while the task has retries left.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import inspect
import logging
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from flask import Flask, has_app_context

from .context import JobContext, _current
from .errors import BackendUnavailable, JobNotFound
from .job import Job
from .record import Claim, ErrorType, JobRecord, JobStatus, Outcome
from .signals import job_finished, job_progress, job_started

if TYPE_CHECKING:
    from .backends.base import Backend
    from .extension import AppState

logger = logging.getLogger("flask_jobrunner")

#: The longest wait before a retry, whatever the backoff.
MAX_RETRY_DELAY = 3600.0

# Results that are never awaitable: their check costs a tenth of inspect.isawaitable's.
_PLAIN_TYPES = frozenset({type(None), bool, int, float, str, list, dict})

#: Takes over the final write of a job: ``finish(context, job, outcome)``.
FinishCallback = Callable[[JobContext, Job, Outcome], None]


def job_context(app: Flask, state: AppState, claim: Claim) -> JobContext:
    """The context a claimed job runs with, from the app's settings.

    Each progress report it stores sends
    :data:`~flask_jobrunner.signals.job_progress`.
    """
    settings = state.settings
    return JobContext(
        claim,
        state.backend,
        lease=settings.lease,
        progress_interval=settings.progress_interval,
        timeout=claim.record.timeout or settings.timeout,
        on_stored=lambda stored: send_progress(app, state.backend, stored.id),
    )


def execute(
    app: Flask,
    state: AppState,
    context: JobContext,
    job: Job,
    finish: FinishCallback | None = None,
) -> None:
    """Run the task of *job* and store its outcome (or schedule its retry).

    Never raises for anything the task does; a backend that fails during the
    final write is logged, and the lease brings the job back later.

    :param finish: Takes over the final write when given (the worker's
        :class:`~flask_jobrunner.finisher.Finisher`); a retry is always
        stored here, before this returns.
    """
    task = state.runner.tasks.get(job.task)
    reset = _current.set(context)
    try:
        if task is None:
            outcome = Outcome(
                JobStatus.FAILED,
                error=f"Internal error: no task named '{job.task}' is registered in this worker.",
                error_type=ErrorType.SYSTEM,
                error_details="TaskNotFound",
            )
        else:
            with app.app_context():
                if job_started.receivers:  # a send costs more than the check
                    job_started.send(app, job=job)
                record = job.record
                if record.args or record.kwargs:
                    args, kwargs = task.load_arguments(record.args, record.kwargs)
                else:  # nothing to convert: the function's own defaults apply
                    args, kwargs = [], {}
                value: Any = task.func(*args, **kwargs)
                if type(value) not in _PLAIN_TYPES and inspect.isawaitable(value):
                    value = _run_awaitable(value)
                result = None if value is None else task.dump_result(value)
                outcome = Outcome(JobStatus.COMPLETED, result=result)
    except (Exception, SystemExit) as error:  # sys.exit() in a task fails the job, not the thread
        outcome = _outcome_of_error(context, job, error)
    finally:
        _current.reset(reset)
    if context.timed_out and outcome.status is JobStatus.COMPLETED:
        # Too late: the monitor ends such a job, and in eager mode there is none.
        outcome = timeout_outcome(context)
    if context.cancelled and outcome.status is not JobStatus.COMPLETED:
        outcome = Outcome(JobStatus.CANCELLED)
    if (progress := context.unstored_progress) is not None:  # most jobs: none to carry
        outcome = dataclasses.replace(outcome, progress=progress)
    _store(app, state, context, job, outcome, finish)


async def _awaited(value: Any) -> Any:
    return await value


def _run_awaitable(value: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_awaited(value))
    # Eager mode inside a coroutine (an async view or test): this thread's loop is
    # busy with the caller, so the task runs on a loop of its own, with this
    # thread's context (current_job, the app context).
    context = contextvars.copy_context()
    with ThreadPoolExecutor(1, thread_name_prefix="jobrunner-eager") as pool:
        return pool.submit(context.run, asyncio.run, _awaited(value)).result()


def _outcome_of_error(context: JobContext, job: Job, error: BaseException) -> Outcome:
    if context.timed_out:
        return timeout_outcome(context)
    if context.cancelled:
        return Outcome(JobStatus.CANCELLED)
    if isinstance(error, ValueError):
        logger.info("Job %s (%s) refused its input: %s", job.id, job.task, error)
        return Outcome(
            JobStatus.FAILED,
            error=str(error) or type(error).__name__,
            error_type=ErrorType.VALIDATION,
            error_details=type(error).__name__,
        )
    logger.exception("Job %s (%s) failed.", job.id, job.task)
    return Outcome(
        JobStatus.FAILED,
        error=f"Internal error: {error or type(error).__name__}",
        error_type=ErrorType.SYSTEM,
        error_details=type(error).__name__,
    )


def timeout_outcome(context: JobContext) -> Outcome:
    """The final state of a job that ran past its timeout."""
    return Outcome(
        JobStatus.FAILED,
        error=f"The job ran past its timeout of {context.timeout:g} seconds.",
        error_type=ErrorType.TIMEOUT,
        error_details="JobTimeout",
        progress=context.unstored_progress,
    )


def _store(
    app: Flask,
    state: AppState,
    context: JobContext,
    job: Job,
    outcome: Outcome,
    finish: FinishCallback | None,
) -> None:
    backend = state.backend
    task = state.runner.tasks.get(job.task)
    try:
        if (
            task is not None
            and outcome.error_type is ErrorType.SYSTEM
            and job.record.attempts <= task.retries
        ):
            delay = 0.0 if state.settings.eager else retry_delay(task.retry_backoff, job.record)
            run_at = backend.now() + timedelta(seconds=delay)
            stored = backend.retry_later(job.id, context.token, run_at, outcome)
        elif finish is not None:
            finish(context, job, outcome)
            return
        else:
            stored = backend.finish(job.id, context.token, outcome)
    except BackendUnavailable:
        logger.exception(
            "Could not store the outcome of job %s; its lease will bring it back.", job.id
        )
        return
    if stored:
        send_finished(app, job)


def send_finished(app: Flask, job: Job) -> None:
    """Send :data:`~flask_jobrunner.signals.job_finished` for *job*, read anew, in app context."""
    if not job_finished.receivers:
        return
    try:
        job.refresh()
    except JobNotFound:
        return
    with app.app_context():
        job_finished.send(app, job=job)


def send_progress(app: Flask, backend: Backend, job_id: str) -> None:
    """Send :data:`~flask_jobrunner.signals.job_progress` for the job, read anew.

    It is sent in an app context: the task's own, or a new one in the worker's monitor thread.
    """
    if not job_progress.receivers:
        return
    record = backend.get(job_id)
    if record is None:
        return
    job = Job(record, backend)
    if has_app_context():
        job_progress.send(app, job=job)
    else:
        with app.app_context():
            job_progress.send(app, job=job)


def retry_delay(backoff: float, record: JobRecord) -> float:
    """Seconds before the next try: exponential in the attempts, with equal jitter."""
    delay: float = min(backoff * 2.0 ** max(record.attempts - 1, 0), MAX_RETRY_DELAY)
    return delay / 2 + random.uniform(0, delay / 2)
