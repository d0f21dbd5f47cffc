"""The ``JOBRUNNER_*`` settings: their defaults, and how an app's values are read.

Values come, first found wins, from ``app.config``, then the environment as
``FLASK_JOBRUNNER_<KEY>`` (parsed as JSON when it parses, as Flask's
``from_prefixed_env`` does), then the options given to
:class:`~flask_jobrunner.JobRunner`, then :data:`DEFAULTS`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import pydantic

from .backends.base import Backend
from .errors import ConfigurationError

#: Every setting with its default, keyed without the ``JOBRUNNER_`` prefix.
DEFAULTS: dict[str, Any] = {
    "BACKEND": "memory://",
    "URL_PREFIX": "/api/jobs",
    "MAX_WORKERS": 3,
    "RUN_WORKERS": True,
    "RESULT_TTL": 86400,
    "MAX_JOBS": 10000,
    "PROGRESS_INTERVAL": 1.0,
    "TIMEOUT": 3600,
    "LEASE": 30,
    "SHUTDOWN_TIMEOUT": 300,
    "MAX_RECOVERIES": 3,
    "RETRY_AFTER_INITIAL": 5,
    "RETRY_AFTER_MAX": 60,
    "MAX_PAYLOAD": 65536,
    "API_OPEN": False,
    "EAGER": False,
    "DASHBOARD": False,
    "DASHBOARD_URL": "/jobs/",
    "REDIS_PREFIX": "jobrunner",
    "CREATE_TABLES": True,
    "EVENTS_HEARTBEAT": 15.0,
    "EVENTS_MAX_DURATION": 60.0,
    "SCHEDULER": True,
    "SCHEDULE_CATCHUP": 3600.0,
}


class Settings(pydantic.BaseModel):
    """The settings of one app, validated; read once by ``init_app``."""

    model_config = pydantic.ConfigDict(frozen=True, arbitrary_types_allowed=True)

    backend: str | Backend
    url_prefix: str
    max_workers: int = pydantic.Field(ge=1)
    run_workers: bool
    result_ttl: float = pydantic.Field(gt=0)
    max_jobs: int = pydantic.Field(ge=1)
    progress_interval: float = pydantic.Field(ge=0)
    timeout: float = pydantic.Field(gt=0)
    lease: float = pydantic.Field(gt=0)
    shutdown_timeout: float = pydantic.Field(ge=0)
    max_recoveries: int = pydantic.Field(ge=0)
    retry_after_initial: int = pydantic.Field(ge=1)
    retry_after_max: int = pydantic.Field(ge=1)
    max_payload: int = pydantic.Field(ge=1)
    api_open: bool
    eager: bool
    dashboard: bool
    dashboard_url: str
    redis_prefix: str = pydantic.Field(min_length=1)
    create_tables: bool
    events_heartbeat: float = pydantic.Field(gt=0)
    events_max_duration: float = pydantic.Field(gt=0)
    scheduler: bool
    schedule_catchup: float = pydantic.Field(ge=0)

    @pydantic.field_validator("url_prefix")
    @classmethod
    def _prefix_has_one_leading_slash(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value.rstrip("/") or "/"

    @pydantic.field_validator("dashboard_url")
    @classmethod
    def _dashboard_url_is_a_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value


def read_settings(config: Mapping[str, Any], options: Mapping[str, Any]) -> Settings:
    """Read every ``JOBRUNNER_*`` key from *config*, the environment and *options*.

    :param config: The app's config.
    :param options: Keyword arguments given to ``JobRunner``, in lower case.
    :raises ConfigurationError: naming the key whose value is not usable.
    """
    check_options(options)
    values = {key.lower(): _lookup(key, config, options) for key in DEFAULTS}
    try:
        return Settings.model_validate(values)
    except pydantic.ValidationError as error:
        problems = "; ".join(
            f"JOBRUNNER_{str(problem['loc'][0]).upper()} {problem['msg'].lower()}"
            f" (got {problem['input']!r})"
            for problem in error.errors()
        )
        raise ConfigurationError(f"Invalid flask-jobrunner settings: {problems}.") from error


def check_options(options: Mapping[str, Any]) -> None:
    """Refuse options that name no setting, listing the known ones.

    :raises ConfigurationError: if an option is unknown.
    """
    unknown = set(options) - {key.lower() for key in DEFAULTS}
    if unknown:
        raise ConfigurationError(
            f"JobRunner got unknown options {sorted(unknown)}."
            f" Known options: {sorted(key.lower() for key in DEFAULTS)}."
        )


def _lookup(key: str, config: Mapping[str, Any], options: Mapping[str, Any]) -> Any:
    name = f"JOBRUNNER_{key}"
    if name in config:
        return config[name]
    raw = os.environ.get(f"FLASK_{name}")
    if raw is not None:
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return options.get(key.lower(), DEFAULTS[key])
