"""Who may see and change which job: the access rules the API and the dashboard share.

The HTTP API (:mod:`flask_jobrunner.api`) and the dashboard both go through
these functions, so they show and change exactly the same jobs: the API is
closed until a policy is registered, ``authorize`` decides each action, and
with ``identity`` a client sees only its own jobs unless the policy grants
more (DESIGN §3).
"""

from __future__ import annotations

from typing import Any

from flask import current_app

from .errors import JobNotFound, NotAuthorized, TaskNotFound
from .extension import AppState
from .job import Job
from .record import is_job_id
from .task import Task

#: Backend pages read at most to fill one page of jobs a client may see.
MAX_LIST_SCANS = 10


def current_state() -> AppState:
    """The jobrunner state of the current app."""
    state: AppState = current_app.extensions["jobrunner"]
    return state


def require_open() -> AppState:
    """The current app's state, unless its API is closed (no policy, not testing or debug).

    :raises NotAuthorized: with how to open it.
    """
    state = current_state()
    if state.runner.authorize_callback is None and not (
        current_app.testing or current_app.debug or state.settings.api_open
    ):
        raise NotAuthorized(
            "The jobs API is closed. Register a policy with '@jobs.authorize', or set"
            " JOBRUNNER_API_OPEN = True to open it to every client."
        )
    return state


def authorize(state: AppState, action: str, task_name: str | None, job: Job | None) -> None:
    """Ask the app's ``authorize`` policy, if any, whether *action* is allowed.

    :raises NotAuthorized: if it is not.
    """
    callback = state.runner.authorize_callback
    if callback is not None and not callback(action, task_name, job):
        raise NotAuthorized(f"You are not allowed to {action} this job.")


def visible_job(state: AppState, job_id: str, action: str) -> Job:
    """The job *job_id* if the client may do *action* to it.

    Another client's job (with ``identity`` set) is reported unknown, unless
    the policy grants it.

    :raises JobNotFound: if it is unknown, not a job id, or hidden from the client.
    :raises NotAuthorized: if the policy refuses *action*.
    """
    record = state.backend.get(job_id) if is_job_id(job_id) else None
    if record is None:
        raise JobNotFound(f"There is no job with id '{job_id}'.")
    job = Job(record, state.backend)
    identity = state.runner.current_identity()
    # With an identity function, a client without an identity is a client too, not everyone.
    if state.runner.identity_callback is not None and record.created_by != identity:
        # Another client's job: hidden as unknown, unless the policy grants it.
        callback = state.runner.authorize_callback
        if callback is None or not callback(action, record.task, job):
            raise JobNotFound(f"There is no job with id '{job_id}'.")
        return job
    authorize(state, action, record.task, job)
    return job


def visible_page(
    state: AppState, status: str | None, task: str | None, limit: int, cursor: str | None
) -> tuple[list[Job], str | None]:
    """A page of the jobs the client may list, and the cursor of the next page.

    With an identity function, that is the client's own jobs and those of
    others the policy grants it (``authorize("list", task, job)``). Jobs
    left out still move the cursor, so a page may come back short.
    """
    runner = state.runner
    if runner.identity_callback is None:
        page = runner.list(status=status, task=task, limit=limit, cursor=cursor)
        return page.jobs, page.next_cursor
    identity = runner.current_identity()
    callback = runner.authorize_callback
    # Without a policy nobody sees another's jobs, so a known identity filters in the backend.
    created_by = identity if callback is None else None
    visible: list[Job] = []
    for _ in range(MAX_LIST_SCANS):
        page = runner.list(
            status=status,
            task=task,
            created_by=created_by,
            limit=limit - len(visible),
            cursor=cursor,
        )
        for job in page:
            if job.created_by == identity or (
                callback is not None and callback("list", job.task, job)
            ):
                visible.append(job)
        cursor = page.next_cursor
        if cursor is None or len(visible) >= limit:
            break
    return visible, cursor


def http_task(state: AppState, name: str) -> Task[Any, Any]:
    """The ``http=True`` task named *name* (``-`` or ``_`` between words).

    :raises TaskNotFound: if there is none, or it is not open to HTTP.
    """
    tasks = state.runner.tasks
    for candidate in (name, name.replace("-", "_")):
        task = tasks.get(candidate)
        if task is not None and task.http:
            return task
    # The path the OpenAPI document gives: every '_' as '-', even in a name that has both.
    for task in tasks.values():
        if task.http and task.name.replace("_", "-") == name:
            return task
    raise TaskNotFound(f"There is no task named '{name}'.")
