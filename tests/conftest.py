"""Shared fixtures: one ``backend`` fixture over every backend, and leak guards.

Every test that takes ``app`` (or ``backend``) runs once per backend in
:data:`BACKEND_URLS`. A backend whose server is unreachable is skipped with
the reason, or fails when ``JOBRUNNER_TEST_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.globals import _cv_app
from werkzeug.test import TestResponse

from flask_jobrunner import Backend, BackendUnavailable, JobRunner
from flask_jobrunner.backends import load_backend
from flask_jobrunner.record import JobRecord, new_job_id

#: The servers the durable backends are tested on; each URL names a database
#: the tests may create private databases next to.
SERVER_URLS: dict[str, str] = {
    "postgresql": os.environ.get(
        "JOBRUNNER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("JOBRUNNER_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
    "redis": os.environ.get("JOBRUNNER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
}

#: Every backend the contract suite runs against, by id.
BACKEND_IDS = ["memory", "sqlite", "postgresql", "mysql", "redis"]
#: The backends shared between processes (all but memory).
DURABLE_IDS = BACKEND_IDS[1:]

REQUIRE_SERVICES = os.environ.get("JOBRUNNER_TEST_REQUIRE_SERVICES") == "1"


def server_down(backend_id: str, error: BaseException) -> None:
    """Skip the test for an unreachable server, or fail it when servers are required."""
    where = SERVER_URLS.get(backend_id, "this machine")
    message = f"the {backend_id} server at {where} is unreachable: {error}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (JOBRUNNER_TEST_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def private_databases() -> Iterator[dict[str, str | BaseException]]:
    """One database per SQL server for this test run, dropped at its end.

    Test runs on one machine (or CI beside a developer) never see each
    other's tables. An unreachable server maps to its error.
    """
    import sqlalchemy

    name = f"jobrunner_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    created: dict[str, str | BaseException] = {}
    engines = {}
    for backend_id in ("postgresql", "mysql"):
        url = sqlalchemy.make_url(SERVER_URLS[backend_id])
        try:
            engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
            with engine.connect() as connection:
                connection.exec_driver_sql(f"CREATE DATABASE {name}")
        except Exception as error:
            created[backend_id] = error
            continue
        engines[backend_id] = engine
        created[backend_id] = url.set(database=name).render_as_string(hide_password=False)
    yield created
    for engine in engines.values():
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            else:
                connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        engine.dispose()


@pytest.fixture
def backend_url_for(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Callable[[str], str]:
    """Turns a backend id into the URL of a fresh, private store of that backend."""

    def url_for(backend_id: str) -> str:
        if backend_id == "memory":
            return "memory://"
        if backend_id == "sqlite":
            return f"sqlite:///{tmp_path / 'jobs.db'}"
        if backend_id == "redis":
            return SERVER_URLS["redis"]
        databases = request.getfixturevalue("private_databases")
        url = databases[backend_id]
        if isinstance(url, BaseException):
            server_down(backend_id, url)
        assert isinstance(url, str)
        return url

    return url_for


@pytest.fixture(params=BACKEND_IDS)
def backend_id(request: pytest.FixtureRequest) -> str:
    """The id of each backend in turn."""
    return str(request.param)


@pytest.fixture
def backend_url(backend_id: str, backend_url_for: Callable[[str], str]) -> str:
    """The URL of each backend in turn."""
    return backend_url_for(backend_id)


@pytest.fixture
def backend_options() -> dict[str, Any]:
    """Settings every test backend gets: a private Redis key prefix per test."""
    return {"result_ttl": 3600, "max_jobs": 10000, "redis_prefix": f"jrtest:{uuid.uuid4().hex}"}


@pytest.fixture
def backend(
    backend_id: str, backend_url: str, backend_options: dict[str, Any]
) -> Iterator[Backend]:
    """A fresh, empty backend (each in turn)."""
    try:
        instance = load_backend(backend_url, **backend_options)
        instance.setup()
        instance.clear()
    except BackendUnavailable as error:
        server_down(backend_id, error)
    yield instance
    instance.clear()
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


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.01,
    what: str | None = None,
) -> Any:
    """Poll *predicate* until it is truthy; fail the test after *timeout* seconds.

    :param what: What the test waits for, for the failure message.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s: {what or predicate}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateRedis:
    """A ``redis-server`` of one test alone, on a free port, keeping nothing on disk."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The server's ``redis://`` URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (again) and wait until it answers."""
        import redis

        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        try:
            wait_until(answers, timeout=10, what="the private redis-server to answer")
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server; what it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def private_redis(tmp_path: pathlib.Path) -> Iterator[PrivateRedis]:
    """A private Redis server, started; stopped after the test."""
    if shutil.which("redis-server") is None:
        if REQUIRE_SERVICES:
            pytest.fail("redis-server is not installed (JOBRUNNER_TEST_REQUIRE_SERVICES=1)")
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


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
