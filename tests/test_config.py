"""Settings: defaults, constructor options, app.config, the environment; one runner, many apps."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, current_app

from flask_jobrunner import ConfigurationError, JobRunner, JobStatus
from flask_jobrunner.backends.memory import MemoryBackend

#: Every key of DESIGN §6 with its documented default.
DESIGN_DEFAULTS: dict[str, Any] = {
    "JOBRUNNER_BACKEND": "memory://",
    "JOBRUNNER_URL_PREFIX": "/api/jobs",
    "JOBRUNNER_MAX_WORKERS": 3,
    "JOBRUNNER_RUN_WORKERS": True,
    "JOBRUNNER_RESULT_TTL": 86400,
    "JOBRUNNER_MAX_JOBS": 10000,
    "JOBRUNNER_PROGRESS_INTERVAL": 1,
    "JOBRUNNER_TIMEOUT": 3600,
    "JOBRUNNER_LEASE": 30,
    "JOBRUNNER_SHUTDOWN_TIMEOUT": 300,
    "JOBRUNNER_MAX_RECOVERIES": 3,
    "JOBRUNNER_RETRY_AFTER_INITIAL": 5,
    "JOBRUNNER_RETRY_AFTER_MAX": 60,
    "JOBRUNNER_MAX_PAYLOAD": 65536,
    "JOBRUNNER_API_OPEN": False,
    "JOBRUNNER_EAGER": False,
    "JOBRUNNER_DASHBOARD": False,
    # Added by the durable-backends issue, beside DESIGN §6's list.
    "JOBRUNNER_REDIS_PREFIX": "jobrunner",
    "JOBRUNNER_CREATE_TABLES": True,
    # Added by the dashboard, live-events and scheduling issues.
    "JOBRUNNER_DASHBOARD_URL": "/jobs/",
    "JOBRUNNER_EVENTS_HEARTBEAT": 15.0,
    "JOBRUNNER_EVENTS_MAX_DURATION": 60.0,
    "JOBRUNNER_SCHEDULER": True,
    "JOBRUNNER_SCHEDULE_CATCHUP": 3600.0,
}

MakeApp = Callable[..., Flask]


@pytest.fixture(autouse=True)
def _no_jobrunner_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FLASK_JOBRUNNER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def make_app(jobs: JobRunner) -> Iterator[MakeApp]:
    """Build apps set up with a runner (``jobs`` unless given); their workers stop after."""
    made: list[tuple[JobRunner, Flask]] = []

    def make(config: dict[str, Any] | None = None, runner: JobRunner | None = None) -> Flask:
        app = Flask(f"config_app_{len(made)}")
        app.config.update(config or {})
        runner = runner or jobs
        runner.init_app(app)
        made.append((runner, app))
        return app

    yield make
    for runner, app in made:
        runner.shutdown(app, timeout=5)


def test_every_setting_has_its_documented_default_in_app_config(make_app: MakeApp) -> None:
    app = make_app()

    settings = {key: value for key, value in app.config.items() if key.startswith("JOBRUNNER_")}
    assert settings == DESIGN_DEFAULTS
    assert isinstance(app.extensions["jobrunner"].backend, MemoryBackend)


def test_init_app_keeps_what_app_config_already_says(make_app: MakeApp) -> None:
    app = make_app({"JOBRUNNER_MAX_WORKERS": 5, "JOBRUNNER_URL_PREFIX": "/jobs/"})

    assert app.config["JOBRUNNER_MAX_WORKERS"] == 5
    assert app.config["JOBRUNNER_URL_PREFIX"] == "/jobs/"
    state = app.extensions["jobrunner"]
    assert state.settings.max_workers == 5
    assert state.settings.url_prefix == "/jobs"
    assert "/jobs/<job_id>" in {rule.rule for rule in app.url_map.iter_rules()}


def test_constructor_options_are_defaults_that_app_config_overrides(make_app: MakeApp) -> None:
    runner = JobRunner(max_workers=5, timeout=60, api_open=True)

    plain = make_app(runner=runner)
    overridden = make_app({"JOBRUNNER_MAX_WORKERS": 2, "JOBRUNNER_API_OPEN": False}, runner)

    assert (plain.config["JOBRUNNER_MAX_WORKERS"], plain.config["JOBRUNNER_TIMEOUT"]) == (5, 60)
    assert plain.config["JOBRUNNER_API_OPEN"] is True
    assert overridden.config["JOBRUNNER_MAX_WORKERS"] == 2
    assert overridden.config["JOBRUNNER_TIMEOUT"] == 60
    assert overridden.config["JOBRUNNER_API_OPEN"] is False
    assert overridden.extensions["jobrunner"].settings.max_workers == 2


def test_runner_given_the_app_sets_it_up_at_once() -> None:
    app = Flask("eager_setup")
    app.config["JOBRUNNER_RUN_WORKERS"] = False

    runner = JobRunner(app, max_workers=4)

    assert app.extensions["jobrunner"].runner is runner
    assert app.config["JOBRUNNER_MAX_WORKERS"] == 4
    assert not hasattr(runner, "app")  # init_app never stores the app
    runner.shutdown(app)


def test_environment_variables_are_read_as_json_when_app_config_lacks_the_key(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_JOBRUNNER_MAX_WORKERS", "7")
    monkeypatch.setenv("FLASK_JOBRUNNER_API_OPEN", "true")
    monkeypatch.setenv("FLASK_JOBRUNNER_PROGRESS_INTERVAL", "0.5")
    monkeypatch.setenv("FLASK_JOBRUNNER_URL_PREFIX", "/tasks")  # not JSON: kept as text
    monkeypatch.setenv("FLASK_JOBRUNNER_TIMEOUT", "120")

    app = make_app({"JOBRUNNER_TIMEOUT": 30}, JobRunner(max_workers=2))

    assert app.config["JOBRUNNER_MAX_WORKERS"] == 7  # over the constructor option
    assert app.config["JOBRUNNER_API_OPEN"] is True
    assert app.config["JOBRUNNER_PROGRESS_INTERVAL"] == 0.5
    assert app.config["JOBRUNNER_URL_PREFIX"] == "/tasks"
    assert app.config["JOBRUNNER_TIMEOUT"] == 30  # app.config wins over the environment


def test_bad_environment_variable_raises_naming_the_key(
    make_app: MakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLASK_JOBRUNNER_LEASE", '"long"')

    with pytest.raises(ConfigurationError, match="JOBRUNNER_LEASE"):
        make_app()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("MAX_WORKERS", 0),
        ("MAX_WORKERS", "many"),
        ("RUN_WORKERS", "perhaps"),
        ("RESULT_TTL", -1),
        ("PROGRESS_INTERVAL", -0.5),
        ("TIMEOUT", 0),
        ("LEASE", None),
        ("MAX_RECOVERIES", -1),
        ("RETRY_AFTER_INITIAL", 0),
        ("MAX_PAYLOAD", "64k"),
        ("URL_PREFIX", "jobs"),
        ("BACKEND", "ftp://example.com"),
        ("BACKEND", 42),
    ],
)
def test_bad_setting_raises_configuration_error_naming_the_key(
    key: str, value: Any, jobs: JobRunner
) -> None:
    app = Flask("bad_setting")
    app.config[f"JOBRUNNER_{key}"] = value

    with pytest.raises(ConfigurationError, match=f"JOBRUNNER_{key}"):
        jobs.init_app(app)
    assert "jobrunner" not in app.extensions


def test_unknown_constructor_option_raises_listing_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown options \['max_worker'\]") as caught:
        JobRunner(max_worker=3)
    assert "'max_workers'" in str(caught.value)


def test_one_runner_serves_two_apps_with_separate_state(make_app: MakeApp, jobs: JobRunner) -> None:
    @jobs.task
    def app_name() -> str:
        return str(current_app.name)

    first = make_app({"JOBRUNNER_MAX_WORKERS": 1})
    second = make_app({"JOBRUNNER_URL_PREFIX": "/other"})

    first_state, second_state = first.extensions["jobrunner"], second.extensions["jobrunner"]
    assert first_state is not second_state
    assert first_state.runner is second_state.runner is jobs
    assert first_state.backend is not second_state.backend
    assert (first_state.settings.max_workers, second_state.settings.max_workers) == (1, 3)
    assert (first_state.settings.url_prefix, second_state.settings.url_prefix) == (
        "/api/jobs",
        "/other",
    )

    with first.app_context():
        first_job = app_name.submit().wait(timeout=5)
    with second.app_context():
        second_job = app_name.submit().wait(timeout=5)
        assert jobs.get(first_job.id) is None
        assert [job.id for job in jobs.list()] == [second_job.id]
    with first.app_context():
        assert jobs.get(second_job.id) is None

    assert (first_job.status, first_job.result) == (JobStatus.COMPLETED, first.name)
    assert (second_job.status, second_job.result) == (JobStatus.COMPLETED, second.name)
    assert first_state.worker is not None
    assert second_state.worker is not None
    assert first_state.worker is not second_state.worker


def test_runner_used_with_an_app_it_did_not_set_up_raises(make_app: MakeApp) -> None:
    other = Flask("not_set_up")
    set_up_elsewhere = make_app(runner=JobRunner())
    jobs = JobRunner()

    @jobs.task
    def noop() -> None: ...

    for app in (other, set_up_elsewhere):
        with app.app_context():
            with pytest.raises(RuntimeError, match="Did you forget to call 'init_app'"):
                noop.submit()
            with pytest.raises(RuntimeError, match="init_app"):
                jobs.list()
        with pytest.raises(RuntimeError, match="init_app"):
            jobs.shutdown(app)
