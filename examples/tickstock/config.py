"""TickStock's settings: its own environment variable names, mapped onto Flask config.

Values come from the real environment, then from ``examples/tickstock/.env``
(copy ``.env.example``; another file with ``TICKSTOCK_ENV_FILE``), then
:data:`DEFAULTS`. A ``.env`` never overrides a variable that is really set,
and it is read without changing ``os.environ``.

The job settings keep the names TickStock used before flask-jobrunner:

======================================  ====================================
``JOB_STORE_BACKEND``                   ``JOBRUNNER_BACKEND``: ``database``
                                        (the app's own database), ``redis``
                                        (``REDIS_URL``) or ``memory``
``JOB_EXPIRATION_HOURS``                ``JOBRUNNER_RESULT_TTL`` (seconds)
``JOB_MAX_CONCURRENT``                  ``JOBRUNNER_MAX_WORKERS``
``JOB_PROGRESS_UPDATE_INTERVAL``        ``JOBRUNNER_PROGRESS_INTERVAL``
``JOB_TIMEOUT_SECONDS``                 ``JOBRUNNER_TIMEOUT``
``CLIENT_RETRY_AFTER_INITIAL``/``MAX``  ``JOBRUNNER_RETRY_AFTER_INITIAL``/``MAX``
``DATABASE_URL``                        ``SQLALCHEMY_DATABASE_URI``
======================================  ====================================
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from dotenv import dotenv_values

N = TypeVar("N", int, float)

#: The ``.env`` read unless ``TICKSTOCK_ENV_FILE`` names another.
ENV_FILE = Path(__file__).with_name(".env")

#: Every variable TickStock reads, with its default.
DEFAULTS: dict[str, str] = {
    # A relative SQLite path: Flask-SQLAlchemy puts it in the app's instance folder.
    "DATABASE_URL": "sqlite:///tickstock.db",
    "JOB_STORE_BACKEND": "database",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "JOB_EXPIRATION_HOURS": "24",
    "JOB_MAX_CONCURRENT": "3",
    "JOB_PROGRESS_UPDATE_INTERVAL": "0.5",
    "JOB_TIMEOUT_SECONDS": "3600",
    # TickStock's jobs take seconds, not hours: clients poll sooner than the library's 5 and 60.
    "CLIENT_RETRY_AFTER_INITIAL": "2",
    "CLIENT_RETRY_AFTER_MAX": "30",
    "TICKSTOCK_API_TOKEN": "",
    "MARKET_DATA_PROVIDER": "offline",
    "MARKET_DATA_URL": "",
    "MARKET_DATA_API_KEY": "",
    "MARKET_DATA_TIMEOUT_SECONDS": "10",
    "OFFLINE_DATA_LATENCY_SECONDS": "0.01",
}


class SettingsError(RuntimeError):
    """Raised when a TickStock environment variable holds a value that cannot work."""


def read_environment(env_file: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """TickStock's variables: the real environment over the ``.env`` file over the defaults.

    :param env_file: The ``.env`` to read; by default ``TICKSTOCK_ENV_FILE`` or :data:`ENV_FILE`.
    """
    path = Path(env_file or os.environ.get("TICKSTOCK_ENV_FILE") or ENV_FILE)
    from_file = dotenv_values(path) if path.is_file() else {}
    values = dict(DEFAULTS)
    values.update({name: value for name, value in from_file.items() if value is not None})
    values.update({name: os.environ[name] for name in DEFAULTS if name in os.environ})
    return values


def config_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The Flask config for TickStock's variables *env* (see :func:`read_environment`).

    :raises SettingsError: naming the variable whose value is not usable.
    """
    database_url = _database_url(env["DATABASE_URL"])
    store = env["JOB_STORE_BACKEND"].strip().lower()
    # 'sqlalchemy' runs the job store on Flask-SQLAlchemy's own engine: one pool,
    # and the very same database even for a relative SQLite path, which
    # Flask-SQLAlchemy resolves against the instance folder and a plain URL would not.
    backends = {"database": "sqlalchemy", "redis": env["REDIS_URL"], "memory": "memory://"}
    if store not in backends:
        raise SettingsError(
            f"JOB_STORE_BACKEND must be one of {', '.join(backends)}, not {store!r}."
        )
    provider = env["MARKET_DATA_PROVIDER"].strip().lower()
    if provider not in ("offline", "http"):
        raise SettingsError(f"MARKET_DATA_PROVIDER must be 'offline' or 'http', not {provider!r}.")
    if provider == "http" and urlsplit(env["MARKET_DATA_URL"]).scheme not in ("http", "https"):
        raise SettingsError(
            "MARKET_DATA_PROVIDER=http needs MARKET_DATA_URL, the vendor API's http(s) URL."
        )
    return {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "JOBRUNNER_BACKEND": backends[store],
        "JOBRUNNER_RESULT_TTL": _number(env, "JOB_EXPIRATION_HOURS", float) * 3600,
        "JOBRUNNER_MAX_WORKERS": _number(env, "JOB_MAX_CONCURRENT", int),
        "JOBRUNNER_PROGRESS_INTERVAL": _number(env, "JOB_PROGRESS_UPDATE_INTERVAL", float),
        "JOBRUNNER_TIMEOUT": _number(env, "JOB_TIMEOUT_SECONDS", float),
        "JOBRUNNER_RETRY_AFTER_INITIAL": _number(env, "CLIENT_RETRY_AFTER_INITIAL", int),
        "JOBRUNNER_RETRY_AFTER_MAX": _number(env, "CLIENT_RETRY_AFTER_MAX", int),
        "TICKSTOCK_API_TOKEN": env["TICKSTOCK_API_TOKEN"] or None,
        "MARKET_DATA_PROVIDER": provider,
        "MARKET_DATA_URL": env["MARKET_DATA_URL"],
        "MARKET_DATA_API_KEY": env["MARKET_DATA_API_KEY"] or None,
        "MARKET_DATA_TIMEOUT_SECONDS": _number(env, "MARKET_DATA_TIMEOUT_SECONDS", float),
        "OFFLINE_DATA_LATENCY_SECONDS": _number(env, "OFFLINE_DATA_LATENCY_SECONDS", float),
    }


def _database_url(url: str) -> str:
    # Hosting platforms hand out postgres:// URLs; psycopg (version 3) is the driver installed.
    scheme, separator, rest = url.partition("://")
    if separator and scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    return url


def _number(env: Mapping[str, str], name: str, kind: Callable[[str], N]) -> N:
    try:
        return kind(env[name])
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise SettingsError(f"{name} must be {what}, not {env[name]!r}.") from None
