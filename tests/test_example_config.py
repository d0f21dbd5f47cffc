"""TickStock's settings: its environment variable names, mapped onto JOBRUNNER_* and more."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dotenv import dotenv_values

from examples.tickstock.config import DEFAULTS, SettingsError, config_from_env, read_environment


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No TickStock variable of the machine running the tests leaks in."""
    for name in [*DEFAULTS, "TICKSTOCK_ENV_FILE"]:
        monkeypatch.delenv(name, raising=False)


def test_the_defaults_keep_data_and_jobs_in_one_sqlite_file_and_run_jobs_in_process() -> None:
    config = config_from_env(DEFAULTS)

    assert config["SQLALCHEMY_DATABASE_URI"] == "sqlite:///tickstock.db"  # in the instance folder
    assert config["JOBRUNNER_BACKEND"] == "sqlalchemy"
    assert "JOBRUNNER_RUN_WORKERS" not in config  # the library's default: in the web process
    assert config["MARKET_DATA_PROVIDER"] == "offline"
    assert config["TICKSTOCK_API_TOKEN"] is None


def test_tickstock_names_map_onto_the_jobrunner_keys() -> None:
    env = {
        **DEFAULTS,
        "JOB_STORE_BACKEND": "Redis",
        "REDIS_URL": "redis://cache:6379/2",
        "JOB_EXPIRATION_HOURS": "1.5",
        "JOB_MAX_CONCURRENT": "8",
        "JOB_PROGRESS_UPDATE_INTERVAL": "0.25",
        "JOB_TIMEOUT_SECONDS": "900",
        "CLIENT_RETRY_AFTER_INITIAL": "3",
        "CLIENT_RETRY_AFTER_MAX": "45",
        "DATABASE_URL": "postgresql+psycopg://tickstock@db/tickstock",
    }

    config = config_from_env(env)

    assert {key: value for key, value in config.items() if key.startswith("JOBRUNNER_")} == {
        "JOBRUNNER_BACKEND": "redis://cache:6379/2",
        "JOBRUNNER_RESULT_TTL": 5400.0,
        "JOBRUNNER_MAX_WORKERS": 8,
        "JOBRUNNER_PROGRESS_INTERVAL": 0.25,
        "JOBRUNNER_TIMEOUT": 900.0,
        "JOBRUNNER_RETRY_AFTER_INITIAL": 3,
        "JOBRUNNER_RETRY_AFTER_MAX": 45,
    }
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://tickstock@db/tickstock"
    assert config_from_env({**env, "JOB_STORE_BACKEND": "memory"})["JOBRUNNER_BACKEND"] == (
        "memory://"
    )


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_plain_postgres_urls_use_the_installed_psycopg_driver(scheme: str) -> None:
    config = config_from_env({**DEFAULTS, "DATABASE_URL": f"{scheme}://u:p@db:5432/tickstock"})

    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u:p@db:5432/tickstock"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("JOB_STORE_BACKEND", "kafka", "JOB_STORE_BACKEND must be one of database, redis, memory"),
        ("JOB_MAX_CONCURRENT", "many", "JOB_MAX_CONCURRENT must be a whole number, not 'many'"),
        ("JOB_EXPIRATION_HOURS", "1 day", "JOB_EXPIRATION_HOURS must be a number"),
        ("MARKET_DATA_PROVIDER", "bloomberg", "MARKET_DATA_PROVIDER must be 'offline' or 'http'"),
        ("MARKET_DATA_PROVIDER", "http", "MARKET_DATA_PROVIDER=http needs MARKET_DATA_URL"),
    ],
)
def test_unusable_values_are_refused_naming_the_variable(
    name: str, value: str, message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        config_from_env({**DEFAULTS, name: value})


def test_a_dotenv_file_sets_values_but_never_overrides_the_real_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("JOB_MAX_CONCURRENT=7\nJOB_STORE_BACKEND=memory\nUNRELATED=1\n")
    monkeypatch.setenv("JOB_STORE_BACKEND", "redis")

    values = read_environment(env_file)

    assert values["JOB_MAX_CONCURRENT"] == "7"
    assert values["JOB_STORE_BACKEND"] == "redis"
    assert values["JOB_TIMEOUT_SECONDS"] == DEFAULTS["JOB_TIMEOUT_SECONDS"]
    assert "JOB_MAX_CONCURRENT" not in os.environ  # read, not loaded into the process


def test_tickstock_env_file_names_the_dotenv_to_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file = tmp_path / "staging.env"
    env_file.write_text("TICKSTOCK_API_TOKEN=from-file\n")
    monkeypatch.setenv("TICKSTOCK_ENV_FILE", str(env_file))

    assert read_environment()["TICKSTOCK_API_TOKEN"] == "from-file"
    assert read_environment(tmp_path / "missing.env")["TICKSTOCK_API_TOKEN"] == ""


def test_the_shipped_env_example_names_every_setting_with_its_default() -> None:
    example = Path(__file__).resolve().parents[1] / "examples" / "tickstock" / ".env.example"

    assert dotenv_values(example).keys() == DEFAULTS.keys()
    assert read_environment(example) == DEFAULTS
