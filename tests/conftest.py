"""Shared fixtures: one ``backend`` fixture over every backend, and leak guards.

Every test that takes ``app`` (or ``backend``) runs once per backend in
:data:`BACKEND_URLS`. A backend whose server is unreachable is skipped with
the reason, or fails when ``JOBRUNNER_TEST_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.globals import _cv_app
from werkzeug.test import TestResponse

from flask_jobrunner import Backend, JobRunner
from flask_jobrunner.backends import load_backend
from flask_jobrunner.record import JobRecord, new_job_id

#: The backends the contract suite runs against, by id. Durable backends
#: join here; their URLs come from JOBRUNNER_TEST_*_URL.
BACKEND_URLS: dict[str, str] = {
    "memory": "memory://",
}

REQUIRE_SERVICES = os.environ.get("JOBRUNNER_TEST_REQUIRE_SERVICES") == "1"


@pytest.fixture(params=sorted(BACKEND_URLS))
def backend_url(request: pytest.FixtureRequest) -> str:
    """The URL of each backend in turn."""
    return BACKEND_URLS[request.param]


@pytest.fixture
def backend(backend_url: str) -> Iterator[Backend]:
    """A fresh, empty backend (each in turn)."""
    try:
        instance = load_backend(backend_url, result_ttl=3600, max_jobs=10000)
    except Exception as error:  # a server that is down
        if REQUIRE_SERVICES:
            raise
        pytest.skip(f"backend {backend_url} unreachable: {error}")
    yield instance
    instance.close()


@pytest.fixture
def jobs() -> JobRunner:
    """A new extension with no tasks; tests register their own."""
    return JobRunner()


@pytest.fixture
def config(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings the ``app`` fixture applies: these defaults, plus a test's :func:`settings`."""
    defaults = {"JOBRUNNER_PROGRESS_INTERVAL": 0, "JOBRUNNER_SHUTDOWN_TIMEOUT": 5}
    return {**defaults, **getattr(request, "param", {})}


def settings(**values: Any) -> pytest.MarkDecorator:
    """Run the test with these ``JOBRUNNER_*`` settings (lower case, no prefix) on its app."""
    config = {f"JOBRUNNER_{key.upper()}": value for key, value in values.items()}
    label = ",".join(f"{key}={value}" for key, value in values.items())
    return pytest.mark.parametrize("config", [config], indirect=True, ids=[label])


@pytest.fixture
def app(jobs: JobRunner, backend: Backend, config: dict[str, Any]) -> Iterator[Flask]:
    """A testing app on the backend, with ``jobs`` set up; its worker is stopped after."""
    app = Flask("jobrunner_test")
    app.testing = True
    app.config["JOBRUNNER_BACKEND"] = backend
    app.config.update(config)
    jobs.init_app(app)
    yield app
    jobs.shutdown(app, timeout=10)


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.01) -> Any:
    """Poll *predicate* until it is truthy; fail the test after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {predicate}")
        time.sleep(interval)


def make_record(**fields: Any) -> JobRecord:
    """A new pending record with a fresh id; *fields* override the defaults."""
    fields.setdefault("id", new_job_id())
    fields.setdefault("task", "tests.task")
    return JobRecord(**fields)


def assert_error(response: TestResponse, status: int) -> dict[str, Any]:
    """Check *response* is the JSON error of DESIGN §2 with *status*; returns its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.get_json()
    assert set(body) == {"error", "details"}
    assert isinstance(body["error"], str)
    assert body["error"]
    return body


def _child_processes() -> list[int]:
    me = str(os.getpid())
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] != "Z":
            children.append(int(entry))
    return children


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """Fail a test that leaves an app context pushed, a worker thread or a child process."""
    result = yield
    problems = []
    if _cv_app.get(None) is not None:
        problems.append("an app context is still pushed")
        while _cv_app.get(None) is not None:
            _cv_app.get().pop()
    deadline = time.monotonic() + 5
    while True:
        threads = [t.name for t in threading.enumerate() if t.name.startswith("jobrunner-")]
        if not threads or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    if threads:
        problems.append(f"worker threads still alive: {threads}")
    children = _child_processes()
    if children:
        problems.append(f"child processes still running: {children}")
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
    if problems:
        pytest.fail(f"{item.nodeid} leaked: {'; '.join(problems)}", pytrace=False)
    return result
