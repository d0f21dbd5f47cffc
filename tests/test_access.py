"""Who may do what over HTTP (DESIGN §3): closed by default, ``authorize``, ``identity``."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, Response, request
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from conftest import assert_error, settings
from flask_jobrunner import Job, JobRunner, JobRunnerError

PREFIX = "/api/jobs"


enqueue_only = settings(run_workers=False)


@pytest.fixture
def make_app(jobs: JobRunner) -> Iterator[Callable[..., Flask]]:
    """Build an app of the test's own, not in testing mode unless asked; shut down after."""
    apps: list[Flask] = []

    def make(*, testing: bool = False, debug: bool = False, **config: Any) -> Flask:
        app = Flask("jobrunner_access_test")
        app.testing = testing
        app.debug = debug
        app.config.update({"JOBRUNNER_RUN_WORKERS": False, **config})
        jobs.init_app(app)
        apps.append(app)
        return app

    yield make
    for app in apps:
        jobs.shutdown(app, timeout=10)


def register_report(jobs: JobRunner) -> None:
    @jobs.task(http=True)
    def report(year: int = 2024) -> int:
        return year


def every_action(client: FlaskClient, job_id: str) -> dict[str, TestResponse]:
    """One request of each kind the API serves."""
    return {
        "submit": client.post(f"{PREFIX}/report", json={}),
        "submit-by-body": client.post(PREFIX, json={"task": "report"}),
        "read": client.get(f"{PREFIX}/{job_id}"),
        "list": client.get(PREFIX),
        "cancel": client.post(f"{PREFIX}/{job_id}/cancel"),
        "openapi": client.get(f"{PREFIX}/openapi.json"),
    }


def submit_in(app: Flask, jobs: JobRunner, name: str = "report") -> str:
    """Submit through the Python API, as the app's own code does; returns the job id."""
    with app.app_context():
        return jobs.submit(name).id


# -- closed until opened -----------------------------------------------------------------------


def test_api_is_closed_by_default_with_a_message_saying_how_to_open_it(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_report(jobs)
    app = make_app()
    job_id = submit_in(app, jobs)

    responses = every_action(app.test_client(), job_id)

    for action, response in responses.items():
        body = assert_error(response, 403)
        assert "jobs.authorize" in body["error"], action
        assert "JOBRUNNER_API_OPEN" in body["error"], action
    with app.app_context():
        assert [job.id for job in jobs.list()] == [job_id]
        assert jobs.get(job_id).status.value == "pending"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "mode",
    [{"testing": True}, {"debug": True}, {"JOBRUNNER_API_OPEN": True}],
    ids=["testing", "debug", "api-open"],
)
def test_api_is_open_in_testing_debug_or_with_api_open(
    jobs: JobRunner, make_app: Callable[..., Flask], mode: dict[str, Any]
) -> None:
    register_report(jobs)
    app = make_app(**mode)
    job_id = submit_in(app, jobs)

    responses = every_action(app.test_client(), job_id)

    assert {action: response.status_code for action, response in responses.items()} == {
        "submit": 202,
        "submit-by-body": 202,
        "read": 200,
        "list": 200,
        "cancel": 202,
        "openapi": 200,
    }


def test_registering_authorize_opens_the_api_outside_testing(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    register_report(jobs)

    @jobs.authorize
    def allow_everything(action: str, task_name: str | None, job: Job | None) -> bool:
        return True

    app = make_app()

    response = app.test_client().post(f"{PREFIX}/report", json={"year": 2023})

    assert response.status_code == 202


# -- authorize --------------------------------------------------------------------------------


@enqueue_only
def test_authorize_receives_the_action_the_task_name_and_the_job(
    jobs: JobRunner, client: FlaskClient
) -> None:
    register_report(jobs)
    calls: list[tuple[str, str | None, str | None]] = []

    @jobs.authorize
    def record_calls(action: str, task_name: str | None, job: Job | None) -> bool:
        assert job is None or isinstance(job, Job)
        calls.append((action, task_name, None if job is None else job.id))
        return True

    job_id = client.post(f"{PREFIX}/report", json={}).get_json()["job_id"]
    client.get(f"{PREFIX}/{job_id}")
    client.get(PREFIX)
    client.get(f"{PREFIX}?task=report")
    client.post(f"{PREFIX}/{job_id}/cancel")

    assert calls == [
        ("submit", "report", None),
        ("read", "report", job_id),
        ("list", None, None),
        ("list", "report", None),
        ("cancel", "report", job_id),
    ]


@enqueue_only
@pytest.mark.parametrize("refused", ["submit", "read", "list", "cancel"])
def test_authorize_answering_false_gives_403_for_that_action_only(
    app: Flask, jobs: JobRunner, client: FlaskClient, refused: str
) -> None:
    register_report(jobs)

    @jobs.authorize
    def refuse_one_action(action: str, task_name: str | None, job: Job | None) -> bool:
        return action != refused

    job_id = submit_in(app, jobs)

    responses = every_action(client, job_id)

    for action, response in responses.items():
        if action.startswith(refused):
            assert_error(response, 403)
        else:
            assert response.status_code < 400, action
    if refused == "cancel":
        assert jobs.get(job_id).status.value == "pending"  # type: ignore[union-attr]


@enqueue_only
def test_authorize_refusing_a_submit_stores_no_job(jobs: JobRunner, client: FlaskClient) -> None:
    register_report(jobs)

    @jobs.authorize
    def read_only(action: str, task_name: str | None, job: Job | None) -> bool:
        return action in {"read", "list"}

    assert_error(client.post(f"{PREFIX}/report", json={}), 403)

    assert len(jobs.list()) == 0


@enqueue_only
def test_authorize_can_decide_per_task(jobs: JobRunner, client: FlaskClient) -> None:
    register_report(jobs)

    @jobs.task(http=True)
    def purge() -> None:
        pass

    @jobs.authorize
    def no_purging(action: str, task_name: str | None, job: Job | None) -> bool:
        return task_name != "purge"

    assert client.post(f"{PREFIX}/report", json={}).status_code == 202
    assert_error(client.post(f"{PREFIX}/purge", json={}), 403)
    assert_error(client.post(PREFIX, json={"task": "purge"}), 403)


# -- tasks not open to HTTP ------------------------------------------------------------------


def test_task_not_open_to_http_is_404_but_the_apps_own_route_submits_it(
    app: Flask, jobs: JobRunner, client: FlaskClient
) -> None:
    @jobs.task
    def purge(days: int) -> str:
        return f"purged {days} days"

    @app.post("/admin/purge")
    def start_purge() -> Response:
        return jobs.accepted(purge.submit(days=int(request.args["days"])))

    assert_error(client.post(f"{PREFIX}/purge", json={"days": 7}), 404)
    assert_error(client.post(PREFIX, json={"task": "purge", "kwargs": {"days": 7}}), 404)

    response = client.post("/admin/purge?days=7")

    assert response.status_code == 202
    body = response.get_json()
    assert set(body) == {"job_id", "status", "message", "polling_url"}
    assert response.headers["Location"] == f"{PREFIX}/{body['job_id']}"
    assert "Retry-After" in response.headers
    jobs.get(body["job_id"]).wait(timeout=10)  # type: ignore[union-attr]
    document = client.get(response.headers["Location"]).get_json()
    assert document["task"] == "purge"
    assert document["result"] == "purged 7 days"


def test_apps_own_submit_route_answers_bad_input_as_the_api_does(
    app: Flask, jobs: JobRunner, client: FlaskClient
) -> None:
    release = threading.Event()

    @jobs.task(unique=True)
    def purge(days: int) -> None:
        release.wait(timeout=10)

    @app.post("/admin/purge")
    def start_purge() -> Response:
        return jobs.accepted(purge.submit(**request.get_json()))

    body = assert_error(client.post("/admin/purge", json={"days": "many"}), 400)
    assert "'days'" in body["error"]
    assert_error(client.post("/admin/purge", json={"weeks": 1}), 400)
    first = client.post("/admin/purge", json={"days": 7})
    assert first.status_code == 202
    try:
        conflict = client.post("/admin/purge", json={"days": 7})
    finally:
        release.set()

    assert_error(conflict, 409)
    assert conflict.headers["Location"] == first.headers["Location"]


def test_apps_own_handler_for_jobrunner_errors_is_kept(jobs: JobRunner) -> None:
    @jobs.task
    def purge(days: int) -> None:
        pass

    app = Flask("own_handler")
    app.testing = True
    app.config["JOBRUNNER_RUN_WORKERS"] = False

    @app.errorhandler(JobRunnerError)
    def own_page(error: JobRunnerError) -> tuple[str, int]:
        return f"sorry: {error.message}", 422

    jobs.init_app(app)

    @app.post("/admin/purge")
    def start_purge() -> Response:
        return jobs.accepted(purge.submit(days="many"))  # type: ignore[arg-type]

    response = app.test_client().post("/admin/purge")

    assert response.status_code == 422
    assert response.get_data(as_text=True).startswith("sorry: Invalid arguments")


def test_closed_api_does_not_stop_the_apps_own_routes(
    jobs: JobRunner, make_app: Callable[..., Flask]
) -> None:
    @jobs.task
    def purge() -> None:
        pass

    app = make_app()

    @app.post("/admin/purge")
    def start_purge() -> Response:
        return jobs.accepted(purge.submit())

    client = app.test_client()

    assert client.post("/admin/purge").status_code == 202
    assert_error(client.get(PREFIX), 403)


# -- identity -------------------------------------------------------------------------------------


@pytest.fixture
def users(jobs: JobRunner) -> JobRunner:
    """``jobs`` whose clients are named by the ``X-User`` header, with a ``report`` task."""
    register_report(jobs)

    @jobs.identity
    def user_header() -> str | None:
        return request.headers.get("X-User")

    return jobs


def as_user(user: str | None) -> dict[str, str]:
    return {} if user is None else {"X-User": user}


def submit_as(client: FlaskClient, user: str | None, **headers: str) -> str:
    response = client.post(f"{PREFIX}/report", json={}, headers={**as_user(user), **headers})
    assert response.status_code == 202
    job_id: str = response.get_json()["job_id"]
    return job_id


def listed_by(client: FlaskClient, user: str | None, query: str = "") -> list[str]:
    response = client.get(f"{PREFIX}?{query}", headers=as_user(user))
    assert response.status_code == 200
    return [document["job_id"] for document in response.get_json()["jobs"]]


@enqueue_only
def test_identity_is_recorded_as_created_by(users: JobRunner, client: FlaskClient) -> None:
    job_id = submit_as(client, "alice")

    job = users.get(job_id)
    assert job is not None
    assert job.created_by == "alice"


@enqueue_only
def test_another_clients_job_answers_404_like_an_unknown_job(
    users: JobRunner, client: FlaskClient
) -> None:
    job_id = submit_as(client, "alice")
    unknown_id = str(uuid.uuid4())

    foreign = assert_error(client.get(f"{PREFIX}/{job_id}", headers=as_user("bob")), 404)
    unknown = assert_error(client.get(f"{PREFIX}/{unknown_id}", headers=as_user("bob")), 404)

    assert foreign["error"].replace(job_id, "ID") == unknown["error"].replace(unknown_id, "ID")
    assert foreign["details"] == unknown["details"]
    assert client.get(f"{PREFIX}/{job_id}", headers=as_user("alice")).status_code == 200


@enqueue_only
def test_another_clients_job_cannot_be_cancelled(users: JobRunner, client: FlaskClient) -> None:
    job_id = submit_as(client, "alice")

    assert_error(client.post(f"{PREFIX}/{job_id}/cancel", headers=as_user("bob")), 404)

    assert users.get(job_id).status.value == "pending"  # type: ignore[union-attr]
    assert client.post(f"{PREFIX}/{job_id}/cancel", headers=as_user("alice")).status_code == 202


@enqueue_only
def test_list_shows_only_the_clients_own_jobs(users: JobRunner, client: FlaskClient) -> None:
    alices = [submit_as(client, "alice") for _ in range(3)]
    bobs = [submit_as(client, "bob") for _ in range(2)]

    assert listed_by(client, "alice") == alices[::-1]
    assert listed_by(client, "bob") == bobs[::-1]
    assert listed_by(client, "carol") == []
    assert listed_by(client, "alice", "task=report&status=pending&limit=2") == alices[:0:-1]


@enqueue_only
def test_client_without_an_identity_sees_no_identified_clients_jobs(
    users: JobRunner, client: FlaskClient
) -> None:
    alices = submit_as(client, "alice")
    anonymous = submit_as(client, None)

    assert client.get(f"{PREFIX}/{alices}").status_code == 404
    assert client.post(f"{PREFIX}/{alices}/cancel").status_code == 404
    assert listed_by(client, None) == [anonymous]
    assert listed_by(client, "alice") == [alices]


@pytest.fixture
def admin_policy(users: JobRunner) -> JobRunner:
    """``users`` with a policy that lets the ``admin`` client at every job."""

    @users.authorize
    def admins_see_everything(action: str, task_name: str | None, job: Job | None) -> bool:
        user = request.headers.get("X-User")
        return job is None or job.created_by == user or user == "admin"

    return users


@enqueue_only
def test_authorize_can_grant_another_clients_job(
    admin_policy: JobRunner, client: FlaskClient
) -> None:
    alices = submit_as(client, "alice")
    bobs = submit_as(client, "bob")

    assert client.get(f"{PREFIX}/{alices}", headers=as_user("admin")).status_code == 200
    assert listed_by(client, "admin") == [bobs, alices]
    assert client.post(f"{PREFIX}/{alices}/cancel", headers=as_user("admin")).status_code == 202
    assert admin_policy.get(alices).status.value == "cancelled"  # type: ignore[union-attr]


@enqueue_only
def test_policy_that_does_not_grant_a_foreign_job_keeps_it_hidden(
    admin_policy: JobRunner, client: FlaskClient
) -> None:
    alices = submit_as(client, "alice")
    bobs = submit_as(client, "bob")

    assert_error(client.get(f"{PREFIX}/{alices}", headers=as_user("bob")), 404)
    assert_error(client.post(f"{PREFIX}/{alices}/cancel", headers=as_user("bob")), 404)
    assert listed_by(client, "bob") == [bobs]
    assert listed_by(client, "alice") == [alices]


def page_through(client: FlaskClient, user: str, limit: int) -> list[str]:
    """Every job id *user* lists, following ``next_cursor`` to the end."""
    seen: list[str] = []
    cursor = None
    for _ in range(50):
        query = f"limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"{PREFIX}?{query}", headers=as_user(user)).get_json()
        assert len(page["jobs"]) <= limit
        seen += [document["job_id"] for document in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return seen
    pytest.fail("the cursor never ran out")


@enqueue_only
@pytest.mark.parametrize("limit", [1, 2, 5, 100])
def test_list_under_a_policy_pages_through_every_visible_job_once(
    admin_policy: JobRunner, client: FlaskClient, limit: int
) -> None:
    submitted = [(user, submit_as(client, user)) for user in ["alice", "bob", "carol"] * 4]

    assert page_through(client, "admin", limit) == [job_id for _, job_id in submitted[::-1]]
    bobs = [job_id for user, job_id in submitted[::-1] if user == "bob"]
    assert page_through(client, "bob", limit) == bobs


@enqueue_only
def test_idempotency_key_is_per_identity(users: JobRunner, client: FlaskClient) -> None:
    alices = submit_as(client, "alice", **{"Idempotency-Key": "monthly-2024-05"})
    bobs = submit_as(client, "bob", **{"Idempotency-Key": "monthly-2024-05"})

    assert bobs != alices
    assert submit_as(client, "alice", **{"Idempotency-Key": "monthly-2024-05"}) == alices
    assert submit_as(client, "bob", **{"Idempotency-Key": "monthly-2024-05"}) == bobs
    assert users.get(bobs).created_by == "bob"  # type: ignore[union-attr]
