"""The dashboard through the Flask test client: pages, forms, access rules, CSRF, CSP, escaping."""

from __future__ import annotations

import datetime
import enum
import html
import re
import threading
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from pydantic import Field
from werkzeug.test import TestResponse

from conftest import settings, wait_until
from flask_jobrunner import Job, JobRunner, JobStatus, current_job
from flask_jobrunner.dashboard.protection import CONTENT_SECURITY_POLICY

URL = "/jobs"
SCRIPT = "<script>alert('owned')</script>"
ESCAPED = html.escape(SCRIPT)

dashboard = settings(dashboard=True, run_workers=False)


@pytest.fixture
def make_app(jobs: JobRunner) -> Iterator[Callable[..., Flask]]:
    """Build a memory-backed app with the dashboard, not in testing mode unless asked."""
    apps: list[Flask] = []

    def make(
        *,
        testing: bool = True,
        debug: bool = False,
        secret_key: str | None = "test-secret",
        **config: Any,
    ) -> Flask:
        app = Flask("jobrunner_dashboard_test")
        app.testing = testing
        app.debug = debug
        app.secret_key = secret_key
        app.config.update({"JOBRUNNER_DASHBOARD": True, "JOBRUNNER_RUN_WORKERS": False, **config})
        jobs.init_app(app)
        apps.append(app)
        return app

    yield make
    for app in apps:
        jobs.shutdown(app, timeout=10)


def register_report(jobs: JobRunner) -> None:
    @jobs.task(http=True)
    def report(year: int = 2024) -> int:
        """Build the yearly report."""
        return year


def submit_in(app: Flask, jobs: JobRunner, name: str = "report", **kwargs: Any) -> str:
    with app.app_context():
        return jobs.submit(name, **kwargs).id


def token_from(response: TestResponse) -> str:
    """The CSRF token in the page's form."""
    match = re.search(r'name="csrf_token" value="([^"]*)"', response.get_data(as_text=True))
    assert match, "the page has no CSRF field"
    return match.group(1)


def form_token(client: FlaskClient, path: str = f"{URL}/submit/report") -> str:
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    return token_from(response)


def text(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def stored(app: Flask, jobs: JobRunner) -> list[Job]:
    with app.app_context():
        return jobs.list().jobs


# -- mounted, closed by default, opened as the API is -------------------------------------------


def test_dashboard_is_not_mounted_unless_enabled(jobs: JobRunner) -> None:
    app = Flask("no_dashboard")
    app.testing = True
    app.config["JOBRUNNER_RUN_WORKERS"] = False
    jobs.init_app(app)

    assert app.test_client().get(f"{URL}/").status_code == 404


def test_dashboard_is_mounted_at_dashboard_url(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_report(jobs)
    app = make_app(JOBRUNNER_DASHBOARD_URL="/admin/work/")
    client = app.test_client()

    assert client.get("/admin/work/").status_code == 200
    assert 'href="/admin/work/static/dashboard.css"' in text(client.get("/admin/work/"))
    assert client.get(f"{URL}/").status_code == 404


def test_dashboard_is_closed_by_default_with_the_apis_message(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_report(jobs)
    app = make_app(testing=False)
    job_id = submit_in(app, jobs)
    client = app.test_client()

    responses = {
        "list": client.get(f"{URL}/"),
        "job": client.get(f"{URL}/{job_id}"),
        "tasks": client.get(f"{URL}/submit/"),
        "form": client.get(f"{URL}/submit/report"),
        "submit": client.post(f"{URL}/submit/report", data={}),
        "cancel": client.post(f"{URL}/{job_id}/cancel", data={}),
    }

    for page, response in responses.items():
        assert response.status_code == 403, page
        assert response.mimetype == "text/html", page
        assert "@jobs.authorize" in html.unescape(text(response)), page
        assert "JOBRUNNER_API_OPEN" in text(response), page
    assert [job.id for job in stored(app, jobs)] == [job_id]
    assert stored(app, jobs)[0].status is JobStatus.PENDING


@pytest.mark.parametrize(
    "mode",
    [{"testing": True}, {"debug": True}, {"JOBRUNNER_API_OPEN": True}],
    ids=["testing", "debug", "api-open"],
)
def test_dashboard_is_open_in_testing_debug_or_with_api_open(
    jobs: JobRunner, make_app: Callable[..., Flask], mode: dict[str, Any]
) -> None:
    register_report(jobs)
    app = make_app(**{"testing": False, **mode})

    assert app.test_client().get(f"{URL}/").status_code == 200


def test_authorize_is_asked_with_the_apis_actions(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_report(jobs)
    calls: list[tuple[str, str | None, str | None]] = []

    @jobs.authorize
    def record_calls(action: str, task_name: str | None, job: Job | None) -> bool:
        calls.append((action, task_name, None if job is None else job.id))
        return True

    app = make_app(testing=False)
    client = app.test_client()
    token = form_token(client)
    calls.clear()
    response = client.post(f"{URL}/submit/report", data={"csrf_token": token})
    job_id = response.headers["Location"].rsplit("/", 1)[1]
    client.get(f"{URL}/{job_id}")
    client.get(f"{URL}/?task=report")
    client.post(f"{URL}/{job_id}/cancel", data={"csrf_token": token})

    assert ("submit", "report", None) in calls
    assert ("read", "report", job_id) in calls
    assert ("list", "report", None) in calls
    assert ("cancel", "report", job_id) in calls


@pytest.mark.parametrize("refused", ["submit", "read", "list", "cancel"])
def test_authorize_answering_false_refuses_that_action_with_403(
    jobs: JobRunner, make_app: Callable[..., Flask], refused: str
) -> None:
    register_report(jobs)

    @jobs.authorize
    def refuse_one(action: str, task_name: str | None, job: Job | None) -> bool:
        return action != refused

    app = make_app(testing=False)
    job_id = submit_in(app, jobs)
    client = app.test_client()
    form_page = f"{URL}/{job_id}" if refused == "submit" else f"{URL}/submit/report"
    token = token_from(client.get(form_page))

    responses = {
        "submit": client.post(f"{URL}/submit/report", data={"csrf_token": token}),
        "read": client.get(f"{URL}/{job_id}"),
        "list": client.get(f"{URL}/"),
        "cancel": client.post(f"{URL}/{job_id}/cancel", data={"csrf_token": token}),
    }

    for action, response in responses.items():
        if action == refused:
            assert response.status_code == 403, action
            assert f"not allowed to {action}" in text(response)
        else:
            assert response.status_code in {200, 303}, action
    assert (stored(app, jobs)[-1].status is JobStatus.CANCELLED) == (refused != "cancel")


def test_a_task_the_client_may_not_submit_gets_no_button(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_report(jobs)

    @jobs.task(http=True)
    def purge() -> None: ...

    @jobs.authorize
    def no_purging(action: str, task_name: str | None, job: Job | None) -> bool:
        return not (action == "submit" and task_name == "purge")

    client = make_app(testing=False).test_client()

    assert f'href="{URL}/submit/report"' in text(client.get(f"{URL}/"))
    assert f'href="{URL}/submit/purge"' not in text(client.get(f"{URL}/"))
    assert f'href="{URL}/submit/purge"' not in text(client.get(f"{URL}/submit/"))
    assert client.get(f"{URL}/submit/purge").status_code == 403


# -- identity ------------------------------------------------------------------------------------


@dashboard
def test_a_user_sees_only_their_own_jobs_when_identity_is_set(app: Flask, jobs: JobRunner) -> None:
    register_report(jobs)
    app.secret_key = "test-secret"

    @jobs.identity
    def who() -> str | None:
        return request.headers.get("X-User")

    alice = app.test_client()
    alice.environ_base["HTTP_X_USER"] = "alice"
    bob = app.test_client()
    bob.environ_base["HTTP_X_USER"] = "bob"
    token = form_token(alice)
    submitted = alice.post(f"{URL}/submit/report", data={"csrf_token": token, "arg-year": "2001"})
    assert submitted.status_code == 303
    alices_job = submitted.headers["Location"].rsplit("/", 1)[1]
    bobs_job = (
        bob.post(f"{URL}/submit/report", data={"csrf_token": form_token(bob), "arg-year": "2002"})
        .headers["Location"]
        .rsplit("/", 1)[1]
    )

    alices_list = text(alice.get(f"{URL}/"))
    assert alices_job in alices_list
    assert bobs_job not in alices_list
    assert alice.get(f"{URL}/{bobs_job}").status_code == 404
    assert alice.post(f"{URL}/{bobs_job}/cancel", data={"csrf_token": token}).status_code == 404
    assert "alice" in text(alice.get(f"{URL}/{alices_job}"))
    with app.app_context():
        assert jobs.get(bobs_job).status is JobStatus.PENDING  # type: ignore[union-attr]
        assert jobs.get(alices_job).created_by == "alice"  # type: ignore[union-attr]


# -- CSRF ------------------------------------------------------------------------------------------


def test_a_cross_site_post_without_the_token_is_refused(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_report(jobs)
    app = make_app()
    job_id = submit_in(app, jobs)
    client = app.test_client()
    form_token(client)  # the victim has a session with a token

    submit = client.post(
        f"{URL}/submit/report",
        data={"arg-year": "1999"},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    cancel = client.post(f"{URL}/{job_id}/cancel", data={})

    assert submit.status_code == 403
    assert cancel.status_code == 403
    assert "security token" in text(cancel)
    assert [(job.id, job.status) for job in stored(app, jobs)] == [(job_id, JobStatus.PENDING)]


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://localhost:8080"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
    ids=["other-origin", "null-origin", "other-port", "cross-site", "same-site"],
)
def test_a_post_with_the_token_from_another_origin_is_refused(
    jobs: JobRunner, make_app: Callable[..., Flask], headers: dict[str, str]
) -> None:
    register_report(jobs)
    app = make_app()
    job_id = submit_in(app, jobs)
    client = app.test_client()
    token = form_token(client)

    response = client.post(f"{URL}/{job_id}/cancel", data={"csrf_token": token}, headers=headers)

    assert response.status_code == 403
    assert stored(app, jobs)[0].status is JobStatus.PENDING


def test_a_post_with_a_wrong_token_is_refused(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_report(jobs)
    app = make_app()
    job_id = submit_in(app, jobs)
    client = app.test_client()
    form_token(client)

    response = client.post(f"{URL}/{job_id}/cancel", data={"csrf_token": "guessed-ünïcode"})

    assert response.status_code == 403
    assert stored(app, jobs)[0].status is JobStatus.PENDING


def test_a_same_origin_post_with_the_token_is_accepted(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_report(jobs)
    app = make_app()
    job_id = submit_in(app, jobs)
    client = app.test_client()
    token = form_token(client)

    response = client.post(
        f"{URL}/{job_id}/cancel",
        data={"csrf_token": token},
        headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"},
    )

    assert response.status_code == 303
    assert response.headers["Location"] == f"{URL}/{job_id}"
    assert stored(app, jobs)[0].status is JobStatus.CANCELLED
    assert "Cancel requested" in text(client.get(f"{URL}/{job_id}"))


def test_the_token_of_one_session_does_not_work_in_another(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_report(jobs)
    app = make_app()
    job_id = submit_in(app, jobs)
    token = form_token(app.test_client())

    other = app.test_client()
    form_token(other)
    response = other.post(f"{URL}/{job_id}/cancel", data={"csrf_token": token})

    assert response.status_code == 403


def test_without_a_secret_key_pages_read_but_forms_are_off(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_report(jobs)
    app = make_app(secret_key=None)
    job_id = submit_in(app, jobs)
    client = app.test_client()

    form = client.get(f"{URL}/submit/report")
    page = client.get(f"{URL}/{job_id}")
    post = client.post(f"{URL}/submit/report", data={"csrf_token": ""})

    assert form.status_code == page.status_code == 200
    assert "SECRET_KEY" in text(form)
    assert "disabled" in text(form)
    assert "SECRET_KEY" in text(page)
    assert "Cancel job" not in text(page)
    assert post.status_code == 403
    assert "SECRET_KEY" in text(post)
    assert len(stored(app, jobs)) == 1


# -- headers and escaping --------------------------------------------------------------------------


def test_every_dashboard_response_has_the_strict_csp_and_nosniff(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_report(jobs)
    app = make_app()
    job_id = submit_in(app, jobs)
    client = app.test_client()
    token = form_token(client)

    responses = {
        "list": client.get(f"{URL}/"),
        "job": client.get(f"{URL}/{job_id}"),
        "tasks": client.get(f"{URL}/submit/"),
        "form": client.get(f"{URL}/submit/report"),
        "bad-input": client.post(
            f"{URL}/submit/report", data={"csrf_token": token, "arg-year": "x"}
        ),
        "submitted": client.post(f"{URL}/submit/report", data={"csrf_token": token}),
        "refused": client.post(f"{URL}/{job_id}/cancel", data={}),
        "unknown-job": client.get(f"{URL}/not-a-job"),
        "unknown-path": client.get(f"{URL}/a/b/c"),
        "wrong-method": client.get(f"{URL}/{job_id}/cancel"),
        "stylesheet": client.get(f"{URL}/static/dashboard.css"),
        "script": client.get(f"{URL}/static/dashboard.js"),
    }

    for page, response in responses.items():
        assert response.headers.get("Content-Security-Policy") == CONTENT_SECURITY_POLICY, page
        assert response.headers.get("X-Content-Type-Options") == "nosniff", page
        response.close()  # the static files are streamed
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "Content-Security-Policy" not in client.get("/api/jobs").headers


def test_pages_have_no_inline_script_or_style(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_report(jobs)
    app = make_app()
    job_id = submit_in(app, jobs)
    client = app.test_client()

    for path in (f"{URL}/", f"{URL}/{job_id}", f"{URL}/submit/", f"{URL}/submit/report"):
        page = text(client.get(path))
        assert re.findall(r"<script[^>]*>", page) == [
            f'<script src="{URL}/static/dashboard.js" defer>'
        ], path
        assert " style=" not in page, path
        assert "<style" not in page, path
        assert re.search(r" on[a-z]+=", page) is None, path


def test_a_task_name_message_result_or_error_carrying_script_renders_as_text(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    @jobs.task(name=SCRIPT, http=True)
    def hostile(fail: bool = False) -> dict[str, str]:
        current_job.progress(done=1, total=2, message=SCRIPT)
        if fail:
            raise RuntimeError(SCRIPT)
        return {SCRIPT: SCRIPT}

    app = make_app(JOBRUNNER_EAGER=True, JOBRUNNER_PROGRESS_INTERVAL=0)
    completed = submit_in(app, jobs, SCRIPT)
    failed = submit_in(app, jobs, SCRIPT, fail=True)
    client = app.test_client()

    pages = {
        "list": client.get(f"{URL}/"),
        "completed": client.get(f"{URL}/{completed}"),
        "failed": client.get(f"{URL}/{failed}"),
        "tasks": client.get(f"{URL}/submit/"),
        "filtered": client.get(f"{URL}/", query_string={"task": SCRIPT}),
        "unknown-task": client.get(f"{URL}/submit/{SCRIPT}x"),
    }

    for page, response in pages.items():
        body = text(response)
        assert "alert('owned')" not in body, page
        assert "<script>alert" not in body, page
    for page in ("list", "completed", "failed", "tasks", "filtered"):
        assert ESCAPED.replace("&#x27;", "&#39;") in text(pages[page]), page
    assert "RuntimeError" in text(pages["failed"])


# -- pages -----------------------------------------------------------------------------------------


def test_list_shows_each_job_with_its_progress_bar_and_message(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    release = threading.Event()

    @jobs.task(http=True)
    def crawl(pages: int = 4) -> None:
        current_job.progress(done=1, total=pages, message="Page 1 of 4")
        release.wait(10)

    app = make_app(JOBRUNNER_RUN_WORKERS=True, JOBRUNNER_PROGRESS_INTERVAL=0)
    job_id = submit_in(app, jobs, "crawl")
    with app.app_context():
        wait_until(lambda: jobs.get(job_id).percentage == 25, what="progress")  # type: ignore[union-attr]
    try:
        page = text(app.test_client().get(f"{URL}/"))
    finally:
        release.set()

    assert f'data-events-url="/api/jobs/{job_id}/events"' in page
    assert '<progress max="100" data-field="progress"' in page
    assert 'value="25.0"' in page
    assert "25 %" in page
    assert "Page 1 of 4" in page
    assert "in progress" in page


def test_list_filters_by_status_and_task_and_pages_by_cursor(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_report(jobs)

    @jobs.task
    def other() -> None: ...

    app = make_app()
    reports = [submit_in(app, jobs, year=2000 + i) for i in range(25)]
    other_id = submit_in(app, jobs, "other")
    with app.app_context():
        jobs.cancel(reports[0])
    client = app.test_client()

    first = text(client.get(f"{URL}/", query_string={"task": "report"}))
    next_link = re.search(r'href="([^"]*cursor=[^"]*)">Next page', first)
    assert next_link
    second = text(client.get(html.unescape(next_link.group(1))))
    cancelled = text(client.get(f"{URL}/", query_string={"status": "cancelled"}))

    def ids(page: str) -> list[str]:
        return re.findall(r'<tr class="job" data-job-id="([^"]+)"', page)

    assert ids(first) == reports[::-1][:20]
    assert ids(second) == reports[::-1][20:]
    assert other_id not in first + second
    assert "Next page" not in second
    assert "First page" in second
    assert ids(cancelled) == [reports[0]]


def test_list_with_an_unknown_status_answers_400_naming_the_statuses(
    make_app: Callable[..., Flask],
) -> None:
    response = make_app().test_client().get(f"{URL}/", query_string={"status": "done"})

    assert response.status_code == 400
    assert "in_progress" in text(response)


def test_job_page_shows_times_attempts_and_the_result_as_pretty_json(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    @jobs.task(retries=2)
    def summary(n: int) -> dict[str, Any]:
        return {"count": n, "items": [1, 2]}

    app = make_app(JOBRUNNER_EAGER=True)
    job_id = submit_in(app, jobs, "summary", n=3)

    page = text(app.test_client().get(f"{URL}/{job_id}"))

    for label in ("Created", "Started", "Updated", "Completed", "Attempts", "Tries allowed"):
        assert f"<dt>{label}</dt>" in page
    assert "<dd>3</dd>" in page  # tries allowed: 1 + 2 retries
    assert '<dd data-field="attempts">1</dd>' in page
    assert "&#34;count&#34;: 3,\n" in page
    assert " UTC</time>" in page
    assert "Cancel job" not in page


def test_job_page_of_a_failed_job_shows_its_error(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    @jobs.task
    def broken() -> None:
        raise ValueError("The symbol list is empty.")

    app = make_app(JOBRUNNER_EAGER=True)
    job_id = submit_in(app, jobs, "broken")

    page = text(app.test_client().get(f"{URL}/{job_id}"))

    assert "The symbol list is empty." in page
    assert "validation" in page
    assert "<dt>Failed</dt>" in page


def test_job_page_of_an_unknown_or_malformed_id_answers_404(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()

    for job_id in ("00000000-0000-4000-8000-000000000000", "nope", "' OR 1=1 --"):
        response = client.get(f"{URL}/{job_id}")
        assert response.status_code == 404
        assert response.mimetype == "text/html"


def test_cancel_button_cancels_a_pending_job_and_refuses_a_finished_one(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_report(jobs)
    app = make_app()
    job_id = submit_in(app, jobs)
    client = app.test_client()
    page = client.get(f"{URL}/{job_id}")
    assert "Cancel job" in text(page)
    token = token_from(page)

    first = client.post(f"{URL}/{job_id}/cancel", data={"csrf_token": token})
    again = client.post(f"{URL}/{job_id}/cancel", data={"csrf_token": token}, follow_redirects=True)

    assert first.status_code == 303
    assert stored(app, jobs)[0].status is JobStatus.CANCELLED
    assert "already ended cancelled" in text(again)
    assert "Cancel job" not in text(again)


# -- the submit form -------------------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


def register_typed(jobs: JobRunner) -> None:
    @jobs.task(http=True)
    def typed(
        name: str,
        count: Annotated[int, Field(ge=1, le=10, description="How many pages")] = 3,
        ratio: float = 0.5,
        loud: bool = False,
        mode: Literal["fast", "slow"] = "fast",
        colour: Colour = Colour.RED,
        symbols: list[str] = ["SPY", "QQQ"],  # noqa: B006
        sizes: list[int] | None = None,
        picks: list[Literal["x", "y", "z"]] = ["x"],  # noqa: B006
        options: dict[str, int] = {},  # noqa: B006
    ) -> dict[str, Any]:
        return {}


def test_the_form_has_an_input_for_each_parameter_from_its_schema(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_typed(jobs)
    page = text(make_app().test_client().get(f"{URL}/submit/typed"))

    assert re.search(r'<input type="text" id="arg-name" name="arg-name" value="">', page)
    assert '<span class="required">required</span>' in page
    assert re.search(
        r'type="number" id="arg-count" name="arg-count" value="3" step="1" min="1" max="10"', page
    )
    assert "How many pages" in page
    assert re.search(r'type="number" id="arg-ratio" name="arg-ratio" value="0.5" step="any"', page)
    assert '<input type="checkbox" id="arg-loud" name="arg-loud">' in page
    assert '<option value="&#34;fast&#34;" selected>fast</option>' in page
    assert '<option value="&#34;red&#34;" selected>red</option>' in page
    assert 'id="arg-symbols" name="arg-symbols" value="SPY, QQQ"' in page
    assert 'id="arg-sizes" name="arg-sizes" value=""' in page
    assert re.search(r'<select id="arg-picks" name="arg-picks" multiple', page)
    assert re.search(r'<textarea id="arg-options" name="arg-options"[^>]*>\{\}</textarea>', page)


def test_a_form_submit_converts_each_input_to_the_parameters_type(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_typed(jobs)
    app = make_app()
    client = app.test_client()
    token = form_token(client, f"{URL}/submit/typed")

    response = client.post(
        f"{URL}/submit/typed",
        data={
            "csrf_token": token,
            "arg-name": "Q3 <report>",
            "arg-count": "7",
            "arg-ratio": "0.25",
            "arg-loud": "on",
            "arg-mode": '"slow"',
            "arg-colour": '"blue"',
            "arg-symbols": " AAPL,MSFT , ,NVDA",
            "arg-sizes": "1, 2,3",
            "arg-picks": ['"y"', '"z"'],
            "arg-options": '{"depth": 2}',
        },
    )

    assert response.status_code == 303, text(response)
    [job] = stored(app, jobs)
    assert job.record.kwargs == {
        "name": "Q3 <report>",
        "count": 7,
        "ratio": 0.25,
        "loud": True,
        "mode": "slow",
        "colour": "blue",
        "symbols": ["AAPL", "MSFT", "NVDA"],
        "sizes": [1, 2, 3],
        "picks": ["y", "z"],
        "options": {"depth": 2},
    }
    assert response.headers["Location"] == f"{URL}/{job.id}"


def test_empty_inputs_keep_the_defaults_and_a_list_can_be_json(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_typed(jobs)
    app = make_app()
    client = app.test_client()
    token = form_token(client, f"{URL}/submit/typed")

    response = client.post(
        f"{URL}/submit/typed",
        data={
            "csrf_token": token,
            "arg-name": "x",
            "arg-count": "",
            "arg-mode": "",
            "arg-symbols": '["A,B", "C"]',
            "arg-options": "  ",
        },
    )

    assert response.status_code == 303, text(response)
    assert stored(app, jobs)[0].record.kwargs == {
        "name": "x",
        "loud": False,
        "symbols": ["A,B", "C"],
        "picks": [],
    }


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"arg-count": "7"}, "name", "missing a required argument"),
        ({"arg-name": "x", "arg-count": "lots"}, "count", "valid integer"),
        ({"arg-name": "x", "arg-count": "11"}, "count", "less than or equal to 10"),
        ({"arg-name": "x", "arg-ratio": "1e400"}, "ratio", "finite"),
        ({"arg-name": "x", "arg-mode": '"medium"'}, "mode", "'fast' or 'slow'"),
        ({"arg-name": "x", "arg-sizes": "1, two"}, "sizes", "valid integer"),
        ({"arg-name": "x", "arg-options": "{depth: 2}"}, "options", "not valid JSON"),
        ({"arg-name": "x", "arg-options": '{"depth": "deep"}'}, "options", "valid integer"),
        ({"arg-name": "x", "arg-symbols": "[1,"}, "symbols", "not valid JSON"),
        ({"arg-name": "x", "arg-options": "NaN"}, "options", "not valid JSON"),
        ({"arg-name": "x", "arg-options": '{"depth": 1e400}'}, "options", "too large"),
    ],
    ids=[
        "missing",
        "not-a-number",
        "too-large",
        "infinite",
        "not-a-choice",
        "bad-item",
        "bad-json",
        "bad-nested",
        "bad-json-list",
        "nan",
        "infinite-in-json",
    ],
)
def test_a_submit_with_bad_input_shows_the_error_on_the_form_and_stores_nothing(
    jobs: JobRunner,
    make_app: Callable[..., Flask],
    data: dict[str, str],
    field: str,
    message: str,
) -> None:
    register_typed(jobs)
    app = make_app()
    client = app.test_client()
    token = form_token(client, f"{URL}/submit/typed")

    response = client.post(f"{URL}/submit/typed", data={"csrf_token": token, **data})

    assert response.status_code == 400
    page = html.unescape(text(response))
    error = re.search(
        rf'<div class="field invalid">(?:(?!<div class="field).)*?id="arg-{field}"'
        r'(?:(?!<div class="field).)*?<p class="field-error">([^<]*)</p>',
        page,
        re.S,
    )
    assert error, page
    assert message in error.group(1)
    assert 'role="alert"' in page
    for name, value in data.items():
        if name != "arg-mode":
            assert f'value="{value}"' in page or f">{value}</textarea>" in page, name
    assert stored(app, jobs) == []


def test_a_task_taking_kwargs_gets_one_json_text_area(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    @jobs.task(http=True)
    def flexible(base: int, **extra: str) -> None: ...

    app = make_app()
    client = app.test_client()
    token = form_token(client, f"{URL}/submit/flexible")

    refused = client.post(f"{URL}/submit/flexible", data={"csrf_token": token, "arg-kwargs": "[1]"})
    wrong = client.post(
        f"{URL}/submit/flexible", data={"csrf_token": token, "arg-kwargs": '{"base": "x"}'}
    )
    accepted = client.post(
        f"{URL}/submit/flexible",
        data={"csrf_token": token, "arg-kwargs": '{"base": 2, "tag": "t"}'},
    )

    assert refused.status_code == 400
    assert "JSON object" in text(refused)
    assert wrong.status_code == 400
    assert "&#39;base&#39;: Input should be a valid integer" in text(wrong)
    assert accepted.status_code == 303
    assert stored(app, jobs)[0].record.kwargs == {"base": 2, "tag": "t"}


def test_a_unique_task_with_a_job_answers_409_linking_to_it(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    @jobs.task(http=True, unique=True)
    def rebuild() -> None: ...

    app = make_app()
    existing = submit_in(app, jobs, "rebuild")
    client = app.test_client()

    response = client.post(
        f"{URL}/submit/rebuild", data={"csrf_token": form_token(client, f"{URL}/submit/rebuild")}
    )

    assert response.status_code == 409
    assert f'href="{URL}/{existing}"' in text(response)
    assert len(stored(app, jobs)) == 1


def test_only_http_tasks_have_a_form(jobs: JobRunner, make_app: Callable[..., Flask]) -> None:
    register_report(jobs)

    @jobs.task
    def internal() -> None: ...

    client = make_app().test_client()

    assert client.get(f"{URL}/submit/internal").status_code == 404
    assert client.get(f"{URL}/submit/nothing").status_code == 404
    tasks = text(client.get(f"{URL}/submit/"))
    assert "report" in tasks
    assert "Build the yearly report." in tasks
    assert "internal" not in tasks


def test_dates_get_date_inputs_and_lists_holding_commas_are_shown_as_json(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    @jobs.task(http=True)
    def backfill(
        day: datetime.date,
        until: datetime.datetime | None = None,
        names: list[str] = ["a,b", "c"],  # noqa: B006
    ) -> None: ...

    app = make_app()
    client = app.test_client()
    form = client.get(f"{URL}/submit/backfill")
    page = text(form)

    assert '<input type="date" id="arg-day" name="arg-day" value="">' in page
    assert '<input type="datetime-local" id="arg-until" name="arg-until" value="">' in page
    assert 'value="[&#34;a,b&#34;, &#34;c&#34;]"' in page
    response = client.post(
        f"{URL}/submit/backfill",
        data={
            "csrf_token": token_from(form),
            "arg-day": "2024-02-29",
            "arg-until": "2024-03-01T12:30",
            "arg-names": '["a,b", "c"]',
        },
    )
    assert response.status_code == 303, text(response)
    assert stored(app, jobs)[0].record.kwargs == {
        "day": "2024-02-29",
        "until": "2024-03-01T12:30:00",
        "names": ["a,b", "c"],
    }


def test_a_form_larger_than_max_payload_answers_413_and_stores_nothing(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_typed(jobs)
    app = make_app(JOBRUNNER_MAX_PAYLOAD=1000)
    client = app.test_client()
    token = form_token(client, f"{URL}/submit/typed")

    response = client.post(
        f"{URL}/submit/typed", data={"csrf_token": token, "arg-name": "x" * 2000}
    )

    assert response.status_code == 413
    assert "larger than 1000 bytes" in text(response)
    assert stored(app, jobs) == []


def test_a_parameter_named_kwargs_is_a_parameter_like_any_other(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    @jobs.task(http=True)
    def configure(kwargs: dict[str, int]) -> None: ...

    app = make_app()
    client = app.test_client()
    token = form_token(client, f"{URL}/submit/configure")

    response = client.post(
        f"{URL}/submit/configure", data={"csrf_token": token, "arg-kwargs": '{"a": 1}'}
    )

    assert response.status_code == 303, text(response)
    assert stored(app, jobs)[0].record.kwargs == {"kwargs": {"a": 1}}
