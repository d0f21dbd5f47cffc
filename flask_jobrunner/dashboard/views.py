"""The dashboard's pages, served by one blueprint at ``JOBRUNNER_DASHBOARD_URL``.

Pages are rendered on the server and readable without JavaScript; a static
script makes their progress bars live through the API's events stream.
Access goes through the HTTP API's own rules (:mod:`flask_jobrunner.api`),
so the dashboard shows and changes exactly what the API would.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ..access import authorize, current_state, http_task, require_open, visible_job, visible_page
from ..api import ERROR_STATUS
from ..errors import BackendUnavailable, InvalidArguments, JobConflict, JobRunnerError
from ..extension import AppState
from ..job import Job
from ..record import JobStatus
from ..task import Task
from . import protection
from .forms import form_fields, read_form, show_errors

#: The blueprint's name, the start of every dashboard endpoint.
BLUEPRINT = "jobrunner_dashboard"
#: Jobs on one page of the list.
PAGE_SIZE = 20
_TEMPLATES = "jobrunner_dashboard"


def create_blueprint(url: str) -> Blueprint:
    """The dashboard blueprint, mounted at *url*.

    Its templates are looked up as ``jobrunner_dashboard/<page>.html``, after
    the app's own, so an app can override any of them.
    """
    prefix = url.rstrip("/")
    blueprint = Blueprint(
        BLUEPRINT,
        __name__,
        url_prefix=prefix,
        template_folder="templates",
        static_folder="static",
        # At the root, '/static' is the app's own.
        static_url_path="/static" if prefix else "/jobrunner-static",
    )
    blueprint.add_url_rule("/", "index", list_page)
    blueprint.add_url_rule("/submit/", "tasks", tasks_page)
    blueprint.add_url_rule("/submit/<task_name>", "submit", submit_page, methods=["GET", "POST"])
    blueprint.add_url_rule("/<job_id>", "job", job_page)
    blueprint.add_url_rule("/<job_id>/cancel", "cancel", cancel_job, methods=["POST"])
    blueprint.before_request(_guard)
    blueprint.context_processor(_template_helpers)
    blueprint.register_error_handler(JobRunnerError, _error_page)
    blueprint.register_error_handler(HTTPException, _http_error_page)

    # App-wide, so a path under the dashboard that no route matches gets the headers too.
    @blueprint.after_app_request
    def secure(response: Response) -> Response:
        if not prefix or request.path == prefix or request.path.startswith(prefix + "/"):
            protection.add_security_headers(response)
        return response

    return blueprint


# -- views ---------------------------------------------------------------------------------------


def list_page() -> str:
    """The recent jobs, newest first, filtered by ``status`` and ``task``, a page at a time."""
    state = require_open()
    status = request.args.get("status") or None
    if status is not None and status not in {item.value for item in JobStatus}:
        raise InvalidArguments(
            f"Unknown status {status!r}. Use one of: {', '.join(s.value for s in JobStatus)}."
        )
    task = request.args.get("task") or None
    cursor = request.args.get("cursor") or None
    authorize(state, "list", task, None)
    jobs, next_cursor = visible_page(state, status, task, PAGE_SIZE, cursor)
    task_names = sorted({*state.runner.tasks, *([task] if task else [])})
    return render_template(
        f"{_TEMPLATES}/jobs.html",
        jobs=[_document(state, job) for job in jobs],
        status=status,
        task=task,
        cursor=cursor,
        next_cursor=next_cursor,
        statuses=[item.value for item in JobStatus],
        task_names=task_names,
        submittable=_submittable(state),
    )


def job_page(job_id: str) -> str:
    """One job: its status, progress, times, attempts, and its result or error."""
    state = require_open()
    job = visible_job(state, job_id, "read")
    return render_template(
        f"{_TEMPLATES}/job.html",
        job=_document(state, job),
        created_by=job.created_by,
        max_attempts=job.record.max_retries + 1,
    )


def cancel_job(job_id: str) -> ResponseReturnValue:
    """Cancel the job (a POST from its page), then show its page again."""
    state = require_open()
    job = visible_job(state, job_id, "cancel")
    if job.is_finished:
        flash(f"The job already ended {job.status.value}; it cannot be cancelled.", "error")
    else:
        state.runner.cancel(job.id)
        flash("Cancel requested: a running job stops at its next progress report or check.")
    return redirect(url_for(".job", job_id=job.id), 303)


def tasks_page() -> str:
    """The tasks the client may submit, each with a link to its form."""
    state = require_open()
    return render_template(f"{_TEMPLATES}/tasks.html", tasks=_submittable(state))


def submit_page(task_name: str) -> ResponseReturnValue:
    """The submit form of an ``http=True`` task; a valid POST submits and shows the job."""
    state = require_open()
    task = http_task(state, task_name)
    authorize(state, "submit", task.name, None)
    fields = form_fields(task)
    problems: list[str] = []
    existing: str | None = None
    code = 200
    if request.method == "POST":
        kwargs, errors = read_form(fields, request.form)
        for field in fields:
            field.error = errors.get(field.name)
        code = 400
        if errors:
            problems.append("Some values cannot be read; see the fields below.")
        else:
            try:
                job = state.runner.enqueue(task, [], kwargs)
            except InvalidArguments as error:
                problems = [error.message, *show_errors(fields, error.details)]
            except JobConflict as error:
                code, existing = 409, error.existing.id
                problems.append(error.message)
            else:
                flash("Job submitted.")
                return redirect(url_for(".job", job_id=job.id), 303)
    page = render_template(
        f"{_TEMPLATES}/submit.html",
        task=task,
        fields=fields,
        problems=problems,
        existing=existing,
        summary=_summary(task),
    )
    return page, code


# -- errors --------------------------------------------------------------------------------------


def _error_page(error: JobRunnerError) -> Response:
    code = next((ERROR_STATUS[cls] for cls in type(error).__mro__ if cls in ERROR_STATUS), 500)
    response = Response(_render_error(code, error.message), code, mimetype="text/html")
    if isinstance(error, BackendUnavailable):
        response.headers["Retry-After"] = str(current_state().settings.retry_after_initial)
    return response


def _http_error_page(error: HTTPException) -> Response:
    code = error.code or 500
    return Response(
        _render_error(code, error.description or error.name), code, mimetype="text/html"
    )


def _render_error(code: int, message: str) -> str:
    return render_template(f"{_TEMPLATES}/error.html", code=code, message=message)


# -- helpers -------------------------------------------------------------------------------------


def _guard() -> None:
    if request.endpoint == f"{BLUEPRINT}.static":
        return
    state = require_open()
    if request.method == "POST":
        limit = state.settings.max_payload
        # Before the form is parsed: the same bound as a submit to the API.
        if request.content_length is not None and request.content_length > limit:
            raise RequestEntityTooLarge(f"The form is larger than {limit} bytes.")
        protection.check_post()


def _document(state: AppState, job: Job) -> dict[str, Any]:
    """The job's status document, with the URLs the page's script reads it from."""
    polling_url = state.runner.polling_url(job.id)
    document = job.to_dict(polling_url)
    document["events_url"] = f"{polling_url}/events"
    return document


def _submittable(state: AppState) -> list[Task[Any, Any]]:
    callback = state.runner.authorize_callback
    return [
        task
        for name, task in sorted(state.runner.tasks.items())
        if task.http and (callback is None or callback("submit", name, None))
    ]


def _summary(task: Task[Any, Any]) -> str | None:
    doc = (task.func.__doc__ or "").strip()
    return doc.split("\n\n", 1)[0] if doc else None


def _template_helpers() -> dict[str, Any]:
    return {
        "csrf_field": protection.CSRF_FIELD,
        "csrf_token": protection.csrf_token,
        "can_change": protection.can_change(),
        "no_secret_key": protection.NO_SECRET_KEY,
        "timestamp": _timestamp,
        "pretty_json": _pretty_json,
        "final_statuses": [status.value for status in JobStatus if status.is_final],
    }


def _timestamp(iso: str | None) -> str:
    """An ISO time of a status document as people read it: ``2026-01-31 09:30:00 UTC``."""
    if not iso:
        return ""
    text = iso.replace("T", " ").replace("Z", "")
    return f"{text.split('.', 1)[0].split('+', 1)[0]} UTC"


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)
