"""The HTTP API: a blueprint at ``JOBRUNNER_URL_PREFIX`` (default ``/api/jobs``).

Views parse and check the request, then call :class:`~flask_jobrunner.JobRunner`;
every error, ours or the client's, answers JSON ``{"error", "details"}`` with
the status code that :data:`ERROR_STATUS` gives its class.
"""

from __future__ import annotations

import math
import re
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

from . import json_input
from .access import (
    authorize,
    current_state,
    http_task,
    require_open,
    visible_job,
    visible_page,
)
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
from .record import JobRecord, JobStatus
from .schedule import SCHEDULE_KEY_PREFIX
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
_SUBMIT_KEYS = frozenset({"task", "args", "kwargs", "delay", "run_at"})
#: Seconds as ``?delay=`` takes them: plain decimal digits, at most 15 characters.
_QUERY_SECONDS = re.compile(r"[0-9]{1,15}(\.[0-9]{1,15})?")


def create_blueprint(url_prefix: str) -> Blueprint:
    """The API blueprint, mounted at *url_prefix*."""
    blueprint = Blueprint("jobrunner", __name__, url_prefix=url_prefix.rstrip("/"))
    blueprint.add_url_rule("", "submit", submit_job, methods=["POST"])
    blueprint.add_url_rule("", "list", list_jobs, methods=["GET"])
    blueprint.add_url_rule("/openapi.json", "openapi", openapi, methods=["GET"])
    blueprint.add_url_rule("/<job_id>", "get", get_job, methods=["GET"])
    blueprint.add_url_rule("/<task_name>", "submit_task", submit_task, methods=["POST"])
    blueprint.add_url_rule("/<job_id>/cancel", "cancel", cancel_job, methods=["POST"])
    blueprint.add_url_rule("/<job_id>/events", "events", job_events, methods=["GET"])
    blueprint.before_request(refuse_cross_site_posts)
    blueprint.register_error_handler(JobRunnerError, error_response)
    blueprint.register_error_handler(HTTPException, http_error_response)
    return blueprint


#: Content types a page of another site can make a browser POST without asking
#: the app first (no CORS preflight): an HTML form's, or ``fetch``'s defaults.
FORM_CONTENT_TYPES = frozenset(
    {"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
)


def refuse_cross_site_posts() -> None:
    """Refuse a POST that a page of another site could have made the browser send.

    The API reads only JSON, so a form's content type answers 415. A POST
    without JSON (an empty submit, a cancel) from another origin answers 403:
    unlike a JSON request, the browser sends it without asking the app's CORS
    policy first, with the user's cookies. A JSON request from another
    origin is left to that policy, and clients that are not browsers send
    neither ``Origin`` nor ``Sec-Fetch-Site``.

    :raises UnsupportedMediaType: for a form's content type.
    :raises NotAuthorized: for a POST without JSON from another origin.
    """
    if request.method != "POST":
        return
    if request.mimetype in FORM_CONTENT_TYPES:
        raise UnsupportedMediaType(
            f"The API reads JSON only, not {request.mimetype}: send"
            " 'Content-Type: application/json', or no body."
        )
    if request.is_json:
        return
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    own = f"{request.scheme}://{request.host}"
    if site not in (None, "same-origin", "none") or origin not in (None, own):
        raise NotAuthorized(
            "A POST without a JSON body from another site is refused, since a page could"
            " send it in a user's name. Send it from this site, or with"
            " 'Content-Type: application/json'."
        )


# -- views ---------------------------------------------------------------------


def submit_job() -> Response:
    """``POST /api/jobs`` with ``{"task", "args", "kwargs"}``, and ``"delay"`` or ``"run_at"``."""
    state = require_open()
    body = _json_body(state, allow_empty=False)
    if not isinstance(body, dict):
        raise InvalidArguments("The request body must be a JSON object with a 'task' key.")
    unknown = set(body) - _SUBMIT_KEYS
    if unknown:
        raise InvalidArguments(
            f"Unknown keys in the request body: {sorted(unknown)}. Send 'task', 'args',"
            " 'kwargs', and 'delay' or 'run_at' for a job that starts later.",
            {"unknown": sorted(unknown)},
        )
    name, args, kwargs = body.get("task"), body.get("args", []), body.get("kwargs", {})
    if not isinstance(name, str):
        raise InvalidArguments("'task' must be the name of a task, as a string.")
    if not isinstance(args, list):
        raise InvalidArguments("'args' must be a JSON array.")
    if not isinstance(kwargs, dict):
        raise InvalidArguments("'kwargs' must be a JSON object.")
    delay = body.get("delay")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, (int, float))):
        raise _bad_start("delay", "'delay' must be a JSON number of seconds, such as 30 or 1.5.")
    run_at = _parse_run_at(body.get("run_at"))
    return _submit(state, http_task(state, name), args, kwargs, delay=delay, run_at=run_at)


def submit_task(task_name: str) -> Response:
    """``POST /api/jobs/<task-name>`` with the keyword arguments as the body.

    The body is the task's own arguments, so a job that starts later takes
    ``?delay=<seconds>`` or ``?run_at=<ISO-8601 time>`` in the query string.
    """
    state = require_open()
    kwargs = _json_body(state, allow_empty=True)
    if not isinstance(kwargs, dict):
        raise InvalidArguments("The request body must be a JSON object of keyword arguments.")
    delay: float | None = None
    delay_text = request.args.get("delay")
    if delay_text is not None:
        if not _QUERY_SECONDS.fullmatch(delay_text):
            raise _bad_start("delay", "'?delay=' must be a number of seconds, such as 30 or 1.5.")
        delay = float(delay_text)
    run_at = _parse_run_at(request.args.get("run_at"))
    return _submit(state, http_task(state, task_name), [], kwargs, delay=delay, run_at=run_at)


def get_job(job_id: str) -> Response:
    """``GET /api/jobs/<id>``: the status document."""
    state = require_open()
    job = visible_job(state, job_id, "read")
    response = jsonify(job.to_dict(state.runner.polling_url(job.id)))
    if not job.is_finished:
        response.headers["Retry-After"] = str(_retry_after(state, job.record))
    return response


def list_jobs() -> Response:
    """``GET /api/jobs?status=&task=&limit=&cursor=``: a page of status documents."""
    state = require_open()
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
    authorize(state, "list", task, None)
    jobs, next_cursor = visible_page(
        state, status, task, int(limit_text), request.args.get("cursor") or None
    )
    return jsonify(
        jobs=[job.to_dict(state.runner.polling_url(job.id)) for job in jobs],
        next_cursor=next_cursor,
    )


def cancel_job(job_id: str) -> Response:
    """``POST /api/jobs/<id>/cancel``: 202 once requested, 409 if already finished."""
    state = require_open()
    job = visible_job(state, job_id, "cancel")
    if job.is_finished:
        raise JobConflict(
            f"Job '{job.id}' already ended {job.status.value}; it cannot be cancelled.",
            job.record,
        )
    job = state.runner.cancel(job.id)
    response = jsonify(job.to_dict(state.runner.polling_url(job.id)))
    response.status_code = 202
    return response


def job_events(job_id: str) -> Response:
    """``GET /api/jobs/<id>/events``: Server-Sent Events of the job's status until it ends.

    Errors (403, 404, 400 for a bad ``Last-Event-ID``, 503) answer JSON
    before the stream starts. A client that resumes after the final state
    gets ``204``, which tells a browser to stop reconnecting.
    """
    # Loaded by the first request: a worker process mounts the API but serves none of it.
    from .events import has_seen_the_end, parse_event_id, status_stream

    state = require_open()
    job = visible_job(state, job_id, "read")
    last_event_id = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    after = None if last_event_id is None else parse_event_id(last_event_id)
    if has_seen_the_end(job.record, after):
        return Response(status=204)
    stream = status_stream(
        state.backend,
        job.record,
        polling_url=state.runner.polling_url(job.id),
        after=after,
        heartbeat=state.settings.events_heartbeat,
        max_duration=state.settings.events_max_duration,
    )
    # The stream needs no request context (it holds only the backend and plain
    # values), so it is not wrapped in stream_with_context.
    return Response(
        stream,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def openapi() -> Response:
    """``GET /api/jobs/openapi.json``: the OpenAPI 3.1 document of this API."""
    from .openapi import openapi_document  # by the first request, as for job_events

    state = require_open()
    tasks = [task for task in state.runner.tasks.values() if task.http]
    return jsonify(openapi_document(state.settings.url_prefix, tasks))


# -- errors --------------------------------------------------------------------


def error_response(error: JobRunnerError) -> Response:
    """The JSON answer for one of our errors."""
    status = next((ERROR_STATUS[cls] for cls in type(error).__mro__ if cls in ERROR_STATUS), 500)
    response = jsonify(error=error.message, details=error.details)
    response.status_code = status
    if isinstance(error, JobConflict):
        response.headers["Location"] = current_state().runner.polling_url(error.existing.id)
    if isinstance(error, BackendUnavailable):
        response.headers["Retry-After"] = str(current_state().settings.retry_after_initial)
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


def _submit(
    state: AppState,
    task: Task[Any, Any],
    args: list[Any],
    kwargs: dict[str, Any],
    *,
    delay: float | None,
    run_at: datetime | None,
) -> Response:
    authorize(state, "submit", task.name, None)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise InvalidArguments("The 'Idempotency-Key' header must be 1 to 255 characters long.")
    if key is not None and key.startswith(SCHEDULE_KEY_PREFIX):
        # The keys of scheduled jobs: a client must not take a tick's place.
        raise InvalidArguments(
            f"Idempotency keys starting with '{SCHEDULE_KEY_PREFIX}' are reserved for"
            " periodic schedules. Use another key."
        )
    job = state.runner.enqueue(task, args, kwargs, idempotency_key=key, delay=delay, run_at=run_at)
    return state.runner.accepted(job)


def _parse_run_at(value: Any) -> datetime | None:
    """A ``run_at`` sent by a client: ISO-8601 text with a UTC offset (or ``Z``)."""
    if value is None:
        return None
    example = "such as '2030-01-31T02:00:00Z' or '2030-01-30T21:00:00-05:00'"
    if not isinstance(value, str) or len(value) > 64:
        raise _bad_start("run_at", f"'run_at' must be an ISO-8601 time as a string, {example}.")
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value  # 3.10 reads no 'Z'
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _bad_start(
            "run_at", f"'run_at' {value!r} is not an ISO-8601 time; send one {example}."
        ) from None
    if moment.utcoffset() is None:
        raise _bad_start("run_at", f"'run_at' {value!r} has no UTC offset; send one {example}.")
    return moment


def _bad_start(parameter: str, message: str) -> InvalidArguments:
    return InvalidArguments(message, [{"parameter": parameter, "message": message}])


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
        return json_input.loads(data)
    except ValueError as error:
        raise BadRequest(f"The request body is not valid JSON: {error}.") from None


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
    if record.run_at is not None and record.started_at is None:
        # A delayed job changes no sooner than when it may start.
        delay = max(delay, math.ceil(_seconds(record.run_at, now)))
    return int(min(settings.retry_after_max, max(initial, delay)))


def _seconds(now: datetime, then: datetime) -> float:
    return max((now - then).total_seconds(), 0.0)
