"""Bad requests get the right 4xx (or 503) as JSON ``{"error", "details"}``, never a 500."""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from conftest import assert_error
from flask_jobrunner import JobRunner

PREFIX = "/api/jobs"


@pytest.fixture
def config(config: dict[str, Any], request: pytest.FixtureRequest) -> dict[str, Any]:
    """The conftest settings, plus those a test passes with ``indirect=True``; enqueue only."""
    return {**config, "JOBRUNNER_RUN_WORKERS": False, **getattr(request, "param", {})}


@dataclasses.dataclass
class Window:
    """A date window, as a nested task parameter."""

    start: str
    days: int = 7


@pytest.fixture
def tasks(jobs: JobRunner) -> JobRunner:
    """``jobs`` with a typed HTTP task ``load_prices`` and a task not open to HTTP."""

    @jobs.task(http=True)
    def load_prices(
        symbols: list[str], count: int = 1, window: Window | None = None, ratio: float = 1.0
    ) -> None:
        pass

    @jobs.task
    def internal_cleanup() -> None:
        pass

    return jobs


def post_raw(client: FlaskClient, path: str, data: bytes | str, **kwargs: Any) -> TestResponse:
    kwargs.setdefault("content_type", "application/json")
    return client.post(path, data=data, **kwargs)


SUBMIT_ROUTES = [f"{PREFIX}/load_prices", PREFIX]


# -- bodies that are not JSON -----------------------------------------------------------


@pytest.mark.usefixtures("tasks")
@pytest.mark.parametrize("path", SUBMIT_ROUTES, ids=["by-path", "by-body"])
@pytest.mark.parametrize(
    "data",
    [
        b'{"symbols": ["SPY"]',
        b"{'symbols': ['SPY']}",
        b'{"symbols": ["SPY"],}',
        b"\xff\xfe\x00garbage",
        b'{"symbols": ["\xff"]}',
        b"symbols=SPY",
    ],
    ids=["truncated", "single-quotes", "trailing-comma", "binary", "bad-utf8", "form-text"],
)
def test_malformed_json_answers_400(client: FlaskClient, path: str, data: bytes) -> None:
    body = assert_error(post_raw(client, path, data), 400)

    assert "JSON" in body["error"]


@pytest.mark.usefixtures("tasks")
@pytest.mark.parametrize("path", SUBMIT_ROUTES, ids=["by-path", "by-body"])
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_answer_400(client: FlaskClient, path: str, literal: str) -> None:
    kwargs = f'{{"symbols": ["SPY"], "ratio": {literal}}}'
    data = kwargs if path != PREFIX else f'{{"task": "load_prices", "kwargs": {kwargs}}}'

    body = assert_error(post_raw(client, path, data), 400)

    assert literal.lstrip("-") in body["error"]


@pytest.mark.usefixtures("tasks")
@pytest.mark.parametrize("path", SUBMIT_ROUTES, ids=["by-path", "by-body"])
def test_deeply_nested_json_answers_400(client: FlaskClient, path: str) -> None:
    assert_error(post_raw(client, path, "[" * 30_000 + "]" * 30_000), 400)


@pytest.mark.usefixtures("tasks")
@pytest.mark.parametrize("path", SUBMIT_ROUTES, ids=["by-path", "by-body"])
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/xml", None],
    ids=["text", "form", "xml", "no-content-type"],
)
def test_body_that_is_not_declared_json_answers_415(
    client: FlaskClient, path: str, content_type: str | None
) -> None:
    data = json.dumps({"task": "load_prices", "symbols": ["SPY"]})

    response = post_raw(client, path, data, content_type=content_type)

    body = assert_error(response, 415)
    assert "application/json" in body["error"]


@pytest.mark.usefixtures("tasks")
def test_json_with_a_structured_content_type_is_accepted(client: FlaskClient) -> None:
    response = post_raw(
        client,
        f"{PREFIX}/load_prices",
        '{"symbols": ["SPY"]}',
        content_type="application/vnd.api+json; charset=utf-8",
    )

    assert response.status_code == 202


@pytest.mark.usefixtures("tasks")
def test_empty_body_on_the_generic_submit_answers_400(client: FlaskClient) -> None:
    body = assert_error(post_raw(client, PREFIX, b""), 400)

    assert "empty" in body["error"]


# -- size ------------------------------------------------------------------------------


PAYLOAD_LIMIT = pytest.mark.parametrize(
    "config", [{"JOBRUNNER_MAX_PAYLOAD": 1024}], indirect=True, ids=["max-payload-1024"]
)


def body_of_size(size: int) -> bytes:
    """A valid ``load_prices`` body of exactly *size* bytes."""
    empty = json.dumps({"symbols": [""]}).encode()
    data = json.dumps({"symbols": ["x" * (size - len(empty))]}).encode()
    assert len(data) == size
    return data


@PAYLOAD_LIMIT
@pytest.mark.usefixtures("tasks")
def test_body_of_exactly_max_payload_is_accepted(client: FlaskClient) -> None:
    response = post_raw(client, f"{PREFIX}/load_prices", body_of_size(1024))

    assert response.status_code == 202


@PAYLOAD_LIMIT
@pytest.mark.usefixtures("tasks")
@pytest.mark.parametrize("path", SUBMIT_ROUTES, ids=["by-path", "by-body"])
def test_body_over_max_payload_with_content_length_answers_413(
    client: FlaskClient, path: str
) -> None:
    response = post_raw(client, path, body_of_size(1025))

    body = assert_error(response, 413)
    assert "1024" in body["error"]


def post_streamed(client: FlaskClient, path: str, data: bytes) -> TestResponse:
    """POST *data* chunked, with no Content-Length, as a streaming client does."""
    return client.post(
        path,
        data=data,
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


@PAYLOAD_LIMIT
@pytest.mark.usefixtures("tasks")
def test_streamed_body_under_max_payload_is_read_without_content_length(
    jobs: JobRunner, client: FlaskClient
) -> None:
    response = post_streamed(client, f"{PREFIX}/load_prices", b'{"symbols": ["SPY", "DIA"]}')

    assert response.status_code == 202
    job = jobs.get(response.get_json()["job_id"])
    assert job is not None
    assert job.record.kwargs["symbols"] == ["SPY", "DIA"]


@PAYLOAD_LIMIT
@pytest.mark.usefixtures("tasks")
@pytest.mark.parametrize("path", SUBMIT_ROUTES, ids=["by-path", "by-body"])
def test_streamed_body_over_max_payload_answers_413(client: FlaskClient, path: str) -> None:
    response = post_streamed(client, path, body_of_size(5000))

    assert_error(response, 413)


# -- bodies of the wrong shape ---------------------------------------------------------------


@pytest.mark.usefixtures("tasks")
@pytest.mark.parametrize("path", SUBMIT_ROUTES, ids=["by-path", "by-body"])
@pytest.mark.parametrize("data", ["[]", '["SPY"]', '"SPY"', "42", "null", "true"])
def test_body_that_is_not_an_object_answers_400(client: FlaskClient, path: str, data: str) -> None:
    body = assert_error(post_raw(client, path, data), 400)

    assert "object" in body["error"]


@pytest.mark.usefixtures("tasks")
@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ({}, "task"),
        ({"task": 7}, "task"),
        ({"task": None}, "task"),
        ({"task": "load_prices", "args": {"symbols": ["SPY"]}}, "args"),
        ({"task": "load_prices", "kwargs": [["SPY"]]}, "kwargs"),
        ({"task": "load_prices", "params": {"symbols": ["SPY"]}}, "params"),
    ],
    ids=["no-task", "task-number", "task-null", "args-object", "kwargs-array", "unknown-key"],
)
def test_generic_submit_with_a_wrong_envelope_answers_400_naming_the_key(
    client: FlaskClient, payload: dict[str, Any], named: str
) -> None:
    body = assert_error(client.post(PREFIX, json=payload), 400)

    assert named in body["error"]


# -- arguments that do not fit the task ---------------------------------------------------------


def submit_both_ways(client: FlaskClient, kwargs: dict[str, Any]) -> list[TestResponse]:
    return [
        client.post(f"{PREFIX}/load_prices", json=kwargs),
        client.post(PREFIX, json={"task": "load_prices", "kwargs": kwargs}),
    ]


@pytest.mark.usefixtures("tasks")
@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"symbols": ["SPY"], "count": "many"}, "count"),
        ({"symbols": "SPY,QQQ"}, "symbols"),
        ({"symbols": ["SPY", 3]}, "symbols.1"),
        ({"symbols": ["SPY"], "window": {"start": "2024-01-01", "days": "a week"}}, "window.days"),
        ({"symbols": ["SPY"], "window": {"days": 3}}, "window.start"),
    ],
    ids=["int", "list", "list-item", "nested-field", "nested-missing"],
)
def test_argument_of_the_wrong_type_answers_400_naming_the_parameter(
    client: FlaskClient, kwargs: dict[str, Any], parameter: str
) -> None:
    for response in submit_both_ways(client, kwargs):
        body = assert_error(response, 400)
        assert f"'{parameter}'" in body["error"]
        assert body["details"][0]["parameter"] == parameter.split(".")[0]


@pytest.mark.usefixtures("tasks")
def test_missing_argument_answers_400_naming_the_parameter(client: FlaskClient) -> None:
    for response in submit_both_ways(client, {"count": 2}):
        body = assert_error(response, 400)
        assert "'symbols'" in body["error"]


@pytest.mark.usefixtures("tasks")
def test_extra_argument_answers_400_naming_the_parameter(client: FlaskClient) -> None:
    for response in submit_both_ways(client, {"symbols": ["SPY"], "colour": "red"}):
        body = assert_error(response, 400)
        assert "'colour'" in body["error"]


@pytest.mark.usefixtures("tasks")
def test_too_many_positional_arguments_answer_400(client: FlaskClient) -> None:
    response = client.post(
        PREFIX, json={"task": "load_prices", "args": [["SPY"], 1, None, 0.5, "extra"]}
    )

    body = assert_error(response, 400)
    assert "load_prices" in body["error"]


@pytest.mark.usefixtures("tasks")
def test_refused_arguments_store_no_job(jobs: JobRunner, client: FlaskClient) -> None:
    for response in submit_both_ways(client, {"symbols": ["SPY"], "count": "many"}):
        assert_error(response, 400)

    assert len(jobs.list()) == 0


# -- unknown things ----------------------------------------------------------------------------


@pytest.mark.usefixtures("tasks")
@pytest.mark.parametrize("route", ["by-path", "by-body"])
def test_task_not_open_to_http_answers_the_same_404_as_an_unknown_task(
    client: FlaskClient, route: str
) -> None:
    def post(name: str) -> TestResponse:
        if route == "by-path":
            return client.post(f"{PREFIX}/{name}", json={})
        return client.post(PREFIX, json={"task": name})

    hidden, unknown = post("internal_cleanup"), post("no_such_task")

    hidden_body, unknown_body = assert_error(hidden, 404), assert_error(unknown, 404)
    assert hidden_body["error"].replace("internal_cleanup", "NAME") == unknown_body[
        "error"
    ].replace("no_such_task", "NAME")
    assert hidden_body["details"] == unknown_body["details"]
    assert sorted(hidden.headers.keys()) == sorted(unknown.headers.keys())


@pytest.mark.usefixtures("tasks")
def test_task_not_open_to_http_answers_404_by_its_dashed_name(client: FlaskClient) -> None:
    assert_error(client.post(f"{PREFIX}/internal-cleanup", json={}), 404)


@pytest.mark.usefixtures("tasks")
def test_task_not_open_to_http_stores_no_job(jobs: JobRunner, client: FlaskClient) -> None:
    client.post(f"{PREFIX}/internal_cleanup", json={})
    client.post(PREFIX, json={"task": "internal_cleanup"})

    assert len(jobs.list()) == 0


MALFORMED_IDS = [
    "not-a-job",
    "12345",
    str(uuid.uuid4()).upper(),
    uuid.uuid4().hex,
    str(uuid.uuid1()),
    "{" + str(uuid.uuid4()) + "}",
    str(uuid.uuid4()) + "0",
    "x" * 5000,
    "%00",
    "..",
]


@pytest.mark.parametrize("job_id", MALFORMED_IDS)
@pytest.mark.parametrize("action", ["read", "cancel"])
def test_malformed_job_id_answers_404(client: FlaskClient, job_id: str, action: str) -> None:
    if action == "read":
        response = client.get(f"{PREFIX}/{job_id}")
    else:
        response = client.post(f"{PREFIX}/{job_id}/cancel")

    assert_error(response, 404)


@pytest.mark.parametrize("action", ["read", "cancel"])
def test_unknown_job_id_answers_404(client: FlaskClient, action: str) -> None:
    job_id = str(uuid.uuid4())
    if action == "read":
        response = client.get(f"{PREFIX}/{job_id}")
    else:
        response = client.post(f"{PREFIX}/{job_id}/cancel")

    body = assert_error(response, 404)
    assert job_id in body["error"]


def test_unknown_and_malformed_job_ids_answer_alike(client: FlaskClient) -> None:
    unknown = assert_error(client.get(f"{PREFIX}/{uuid.uuid4()}"), 404)
    malformed = assert_error(client.get(f"{PREFIX}/not-a-job"), 404)

    assert unknown["details"] == malformed["details"]


# -- routing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", f"{PREFIX}/{uuid.uuid4()}"),
        ("PUT", f"{PREFIX}/{uuid.uuid4()}"),
        ("PATCH", PREFIX),
        ("DELETE", PREFIX),
        ("GET", f"{PREFIX}/{uuid.uuid4()}/cancel"),
        ("PUT", f"{PREFIX}/openapi.json"),
    ],
)
def test_wrong_method_answers_405_as_json(client: FlaskClient, method: str, path: str) -> None:
    response = client.open(path, method=method)

    assert_error(response, 405)
    assert "Allow" in response.headers


@pytest.mark.parametrize(
    "path",
    [
        f"{PREFIX}/",
        f"{PREFIX}/{uuid.uuid4()}/results",
        f"{PREFIX}/a/b/c",
        f"{PREFIX}/openapi.json/extra",
    ],
)
def test_unknown_path_under_the_prefix_answers_404_as_json(client: FlaskClient, path: str) -> None:
    body = assert_error(client.get(path), 404)

    assert path in body["error"]


@pytest.fixture
def app_with_a_page(app: Flask) -> Flask:
    @app.get("/status")
    def status_page() -> str:
        return "<p>ok</p>"

    return app


@pytest.mark.usefixtures("app_with_a_page")
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/nowhere", 404),
        ("GET", "/api/jobsx", 404),
        ("GET", "/api", 404),
        ("POST", "/status", 405),
    ],
)
def test_paths_outside_the_prefix_keep_flasks_html_errors(
    client: FlaskClient, method: str, path: str, status: int
) -> None:
    response = client.open(path, method=method)

    assert response.status_code == status
    assert response.mimetype == "text/html"
    assert client.get("/status").get_data(as_text=True) == "<p>ok</p>"


# -- query strings and headers ------------------------------------------------------------


def naive_cursor() -> str:
    raw = json.dumps(["2024-01-01T00:00:00", str(uuid.uuid4())]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "query",
    [
        "status=done",
        "status=PENDING",
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=ten",
        "limit=2.5",
        "limit=%C2%B2",  # '²' passes str.isdigit() but not int()
        "limit=" + "9" * 5000,
        "cursor=not-a-cursor",
        "cursor=" + base64.urlsafe_b64encode(b"[1, 2]").decode(),
        "cursor=" + base64.urlsafe_b64encode(b"[" * 5000).decode(),
        "cursor=" + naive_cursor(),
    ],
    ids=[
        "status-unknown",
        "status-case",
        "limit-0",
        "limit-101",
        "limit-negative",
        "limit-word",
        "limit-fraction",
        "limit-superscript",
        "limit-huge",
        "cursor-garbage",
        "cursor-wrong-shape",
        "cursor-deep",
        "cursor-naive-time",
    ],
)
def test_bad_list_query_answers_400(tasks: JobRunner, client: FlaskClient, query: str) -> None:
    tasks.submit("load_prices", ["SPY"])

    body = assert_error(client.get(f"{PREFIX}?{query}"), 400)

    assert query.split("=")[0] in body["error"]


@pytest.mark.usefixtures("tasks")
@pytest.mark.parametrize("key", ["", "k" * 256], ids=["empty", "too-long"])
def test_bad_idempotency_key_answers_400(client: FlaskClient, key: str) -> None:
    response = client.post(
        f"{PREFIX}/load_prices", json={"symbols": ["SPY"]}, headers={"Idempotency-Key": key}
    )

    body = assert_error(response, 400)
    assert "Idempotency-Key" in body["error"]


@pytest.mark.usefixtures("tasks")
@pytest.mark.parametrize(
    ("method", "path", "data"),
    [
        ("POST", f"{PREFIX}/{uuid.uuid4()}", "{}"),
        ("POST", f"{PREFIX}/openapi.json", "{}"),
        ("POST", f"{PREFIX}/load_prices", '{"symbols": ["\\ud800"]}'),
        ("POST", f"{PREFIX}/load_prices", '{"symbols": ["SPY"], "symbols": "x"}'),
        ("POST", f"{PREFIX}/load_prices", '{"symbols": ["SPY"], "count": ' + "9" * 5000 + "}"),
        ("POST", f"{PREFIX}/load_prices", '{"symbols": ["SPY"], "count": 1e308}'),
        ("POST", f"{PREFIX}/load_prices", '{"symbols": ["SPY"], "\\u0000": 1}'),
        ("POST", PREFIX, '{"task": "\\u0000"}'),
        ("POST", PREFIX, '{"task": "load_prices", "args": [' + "[" * 900 + "]" * 900 + "]}"),
        ("GET", f"{PREFIX}?task=%00&status=", ""),
        ("GET", f"{PREFIX}/%ff", ""),
        ("POST", f"{PREFIX}/%ff/cancel", ""),
    ],
)
def test_hostile_requests_never_answer_500(
    client: FlaskClient, method: str, path: str, data: str
) -> None:
    response = client.open(path, method=method, data=data, content_type="application/json")

    assert response.status_code < 500
    if response.status_code >= 400:
        assert_error(response, response.status_code)


# -- a full backend --------------------------------------------------------------------------


@pytest.fixture
def full_app() -> Iterator[Flask]:
    """An app on a memory backend that holds two jobs at most and never runs them."""
    jobs = JobRunner()

    @jobs.task(http=True)
    def report() -> None:
        pass

    app = Flask("full_backend")
    app.testing = True
    app.config.update(
        JOBRUNNER_BACKEND="memory://", JOBRUNNER_MAX_JOBS=2, JOBRUNNER_RUN_WORKERS=False
    )
    jobs.init_app(app)
    yield app
    jobs.shutdown(app)


def test_full_memory_backend_answers_503_with_retry_after(full_app: Flask) -> None:
    client = full_app.test_client()
    for _ in range(2):
        assert client.post(f"{PREFIX}/report").status_code == 202

    response = client.post(f"{PREFIX}/report")

    body = assert_error(response, 503)
    assert "JOBRUNNER_MAX_JOBS" in body["error"]
    assert int(response.headers["Retry-After"]) >= 1
    assert len(client.get(PREFIX).get_json()["jobs"]) == 2


def test_full_memory_backend_accepts_again_once_a_job_finished(full_app: Flask) -> None:
    client = full_app.test_client()
    first = client.post(f"{PREFIX}/report").get_json()["job_id"]
    client.post(f"{PREFIX}/report")
    assert client.post(f"{PREFIX}/report").status_code == 503

    assert client.post(f"{PREFIX}/{first}/cancel").status_code == 202

    assert client.post(f"{PREFIX}/report").status_code == 202
