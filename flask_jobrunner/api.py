"""The HTTP API: a blueprint at ``JOBRUNNER_URL_PREFIX`` (default ``/api/jobs``).

Views parse and check the request, then call :class:`~flask_jobrunner.JobRunner`;
every error, ours or the client's, answers JSON ``{"error", "details"}`` with
the status code that :data:`ERROR_STATUS` gives its class.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    RequestEntityTooLarge,
    UnsupportedMediaType,
)
from werkzeug.routing import RequestRedirect

from .errors import (
    BackendUnavailable,
    ConfigurationError,
    InvalidArguments,
    JobConflict,
    JobNotFound,
    JobRunnerError,
    NotAuthorized,
    TaskNotFound,
)
from .extension import AppState
from .job import Job
from .openapi import openapi_document
from .record import JobRecord, JobStatus, is_job_id
from .task import Task

#: The status code of each error class; the first match in the MRO wins.
ERROR_STATUS: dict[type[JobRunnerError], int] = {
    InvalidArguments: 400,
    NotAuthorized: 403,
    TaskNotFound: 404,
    JobNotFound: 404,
    JobConflict: 409,
    BackendUnavailable: 503,
    ConfigurationError: 500,
}

#: The largest page ``GET /api/jobs`` answers.
MAX_PAGE = 100
#: Backend pages read at most to fill one page of jobs a client may see.
_MAX_LIST_SCANS = 10
_SUBMIT_KEYS = frozenset({"task", "args", "kwargs"})


def create_blueprint(url_prefix: str) -> Blueprint:
    """The API blueprint, mounted at *url_prefix*."""
    blueprint = Blueprint("jobrunner", __name__, url_prefix=url_prefix.rstrip("/"))
    blueprint.add_url_rule("", "submit", submit_job, methods=["POST"])
    blueprint.add_url_rule("", "list", list_jobs, methods=["GET"])
    blueprint.add_url_rule("/openapi.json", "openapi", openapi, methods=["GET"])
    blueprint.add_url_rule("/<job_id>", "get", get_job, methods=["GET"])
    blueprint.add_url_rule("/<task_name>", "submit_task", submit_task, methods=["POST"])
    blueprint.add_url_rule("/<job_id>/cancel", "cancel", cancel_job, methods=["POST"])
    blueprint.register_error_handler(JobRunnerError, error_response)
    blueprint.register_error_handler(HTTPException, http_error_response)
    return blueprint


# -- views ---------------------------------------------------------------------


def submit_job() -> Response:
    """``POST /api/jobs`` with ``{"task", "args", "kwargs"}``."""
    state = _require_open()
    body = _json_body(state, allow_empty=False)
    if not isinstance(body, dict):
        raise InvalidArguments("The request body must be a JSON object with a 'task' key.")
    unknown = set(body) - _SUBMIT_KEYS
    if unknown:
        raise InvalidArguments(
            f"Unknown keys in the request body: {sorted(unknown)}. Send 'task', 'args', 'kwargs'.",
            {"unknown": sorted(unknown)},
        )
    name, args, kwargs = body.get("task"), body.get("args", []), body.get("kwargs", {})
    if not isinstance(name, str):
        raise InvalidArguments("'task' must be the name of a task, as a string.")
    if not isinstance(args, list):
        raise InvalidArguments("'args' must be a JSON array.")
    if not isinstance(kwargs, dict):
        raise InvalidArguments("'kwargs' must be a JSON object.")
    return _submit(state, _http_task(state, name), args, kwargs)


def submit_task(task_name: str) -> Response:
    """``POST /api/jobs/<task-name>`` with the keyword arguments as the body."""
    state = _require_open()
    kwargs = _json_body(state, allow_empty=True)
    if not isinstance(kwargs, dict):
        raise InvalidArguments("The request body must be a JSON object of keyword arguments.")
    return _submit(state, _http_task(state, task_name), [], kwargs)


def get_job(job_id: str) -> Response:
    """``GET /api/jobs/<id>``: the status document."""
    state = _require_open()
    job = _visible_job(state, job_id, "read")
    response = jsonify(job.to_dict(state.runner.polling_url(job.id)))
    if not job.is_finished:
        response.headers["Retry-After"] = str(_retry_after(state, job.record))
    return response


def list_jobs() -> Response:
    """``GET /api/jobs?status=&task=&limit=&cursor=``: a page of status documents."""
    state = _require_open()
    status = request.args.get("status")
    if status is not None and status not in {item.value for item in JobStatus}:
        raise InvalidArguments(
            f"Unknown status {status!r}. Use one of: {', '.join(s.value for s in JobStatus)}."
        )
    limit_text = request.args.get("limit", "20")
    # ASCII digits only, and few of them: int() refuses '²' and numbers of thousands of digits.
    is_number = limit_text.isascii() and limit_text.isdigit() and len(limit_text) <= 9
    if not is_number or not 1 <= int(limit_text) <= MAX_PAGE:
        raise InvalidArguments(f"'limit' must be a whole number from 1 to {MAX_PAGE}.")
    task = request.args.get("task")
    _authorize(state, "list", task, None)
    jobs, next_cursor = _visible_page(
        state, status, task, int(limit_text), request.args.get("cursor") or None
    )
    return jsonify(
        jobs=[job.to_dict(state.runner.polling_url(job.id)) for job in jobs],
        next_cursor=next_cursor,
    )


def cancel_job(job_id: str) -> Response:
    """``POST /api/jobs/<id>/cancel``: 202 once requested, 409 if already finished."""
    state = _require_open()
    job = _visible_job(state, job_id, "cancel")
    if job.is_finished:
        raise JobConflict(
            f"Job '{job.id}' already ended {job.status.value}; it cannot be cancelled.",
            job.record,
        )
    job = state.runner.cancel(job.id)
    response = jsonify(job.to_dict(state.runner.polling_url(job.id)))
    response.status_code = 202
    return response


def openapi() -> Response:
    """``GET /api/jobs/openapi.json``: the OpenAPI 3.1 document of this API."""
    state = _require_open()
    tasks = [task for task in state.runner.tasks.values() if task.http]
    return jsonify(openapi_document(state.settings.url_prefix, tasks))


# -- errors --------------------------------------------------------------------


def error_response(error: JobRunnerError) -> Response:
    """The JSON answer for one of our errors."""
    status = next((ERROR_STATUS[cls] for cls in type(error).__mro__ if cls in ERROR_STATUS), 500)
    response = jsonify(error=error.message, details=error.details)
    response.status_code = status
    if isinstance(error, JobConflict):
        response.headers["Location"] = _state().runner.polling_url(error.existing.id)
    if isinstance(error, BackendUnavailable):
        response.headers["Retry-After"] = str(_state().settings.retry_after_initial)
    return response


def http_error_response(error: HTTPException) -> Response:
    """The JSON answer for an HTTP error (bad body, wrong method, unknown path)."""
    response = jsonify(error=error.description or error.name, details=None)
    response.status_code = error.code or 500
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def json_routing_errors() -> Response | None:
    """Answer JSON, not HTML, for an unknown path or a wrong method under the API prefix.

    Routing fails before any blueprint is chosen, so this runs as an app-wide
    ``before_request`` hook and leaves the app's other paths alone.
    """
    error = request.routing_exception
    state = current_app.extensions.get("jobrunner")
    if error is None or not isinstance(state, AppState) or isinstance(error, RequestRedirect):
        return None
    prefix = state.settings.url_prefix.rstrip("/")
    if not isinstance(error, HTTPException):
        return None
    if request.path == prefix or request.path.startswith(prefix + "/"):
        if error.code == 404:
            error.description = f"There is no API route at {request.path}."
        return http_error_response(error)
    return None


# -- helpers ---------------------------------------------------------------------


def _state() -> AppState:
    state: AppState = current_app.extensions["jobrunner"]
    return state


def _require_open() -> AppState:
    state = _state()
    if state.runner.authorize_callback is None and not (
        current_app.testing or current_app.debug or state.settings.api_open
    ):
        raise NotAuthorized(
            "The jobs API is closed. Register a policy with '@jobs.authorize', or set"
            " JOBRUNNER_API_OPEN = True to open it to every client."
        )
    return state


def _authorize(state: AppState, action: str, task_name: str | None, job: Job | None) -> None:
    callback = state.runner.authorize_callback
    if callback is not None and not callback(action, task_name, job):
        raise NotAuthorized(f"You are not allowed to {action} this job.")


def _visible_job(state: AppState, job_id: str, action: str) -> Job:
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
    _authorize(state, action, record.task, job)
    return job


def _visible_page(
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
    for _ in range(_MAX_LIST_SCANS):
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


def _http_task(state: AppState, name: str) -> Task[Any, Any]:
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


def _submit(
    state: AppState, task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any]
) -> Response:
    _authorize(state, "submit", task.name, None)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise InvalidArguments("The 'Idempotency-Key' header must be 1 to 255 characters long.")
    job = state.runner.enqueue(task, args, kwargs, idempotency_key=key)
    return state.runner.accepted(job)


def _json_body(state: AppState, *, allow_empty: bool) -> Any:
    limit = state.settings.max_payload
    if request.content_length is not None and request.content_length > limit:
        raise RequestEntityTooLarge(f"The request body is larger than {limit} bytes.")
    data = request.stream.read(limit + 1)
    if len(data) > limit:
        raise RequestEntityTooLarge(f"The request body is larger than {limit} bytes.")
    if not data.strip():
        if allow_empty:
            return {}
        raise BadRequest("The request body is empty. Send a JSON object.")
    if not request.is_json:
        raise UnsupportedMediaType(
            "The request body must be JSON, sent with 'Content-Type: application/json'."
        )
    try:
        return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except ValueError as error:
        raise BadRequest(f"The request body is not valid JSON: {error}.") from None
    except RecursionError:
        raise BadRequest("The request body is nested too deeply.") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    # 1e400 would become infinity, which JSON cannot carry back (it is stored as null).
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is too large")
    return value


def _retry_after(state: AppState, record: JobRecord) -> int:
    """Seconds a client should wait before polling again.

    It starts at ``JOBRUNNER_RETRY_AFTER_INITIAL`` and grows by a tenth of the
    job's age; once progress allows an estimate of the remaining time, it is
    half that estimate, within the same bounds. Never above the maximum.
    """
    settings = state.settings
    now = state.backend.now()
    initial = settings.retry_after_initial
    # Whole seconds of growth only, so a job polled in its first ten seconds gets the initial value.
    delay = initial + math.floor(_seconds(now, record.created_at) / 10)
    percentage = record.percentage or 0
    if record.started_at is not None and 0 < percentage < 100:
        remaining = _seconds(now, record.started_at) * (100 - percentage) / percentage
        delay = min(delay, max(initial, math.ceil(remaining / 2)))
    return int(min(settings.retry_after_max, max(initial, delay)))


def _seconds(now: datetime, then: datetime) -> float:
    return max((now - then).total_seconds(), 0.0)
