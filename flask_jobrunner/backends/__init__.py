"""Backends, chosen by the scheme of ``JOBRUNNER_BACKEND``.

Each entry of :data:`BACKENDS` names its class as a ``"module:Class"`` string
and the driver it needs, so a backend's module and driver are imported only
when an app chooses it.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigurationError
from .base import Backend


@dataclasses.dataclass(frozen=True)
class BackendEntry:
    """Where a backend class lives and what it needs installed."""

    #: The class, as ``"package.module:Class"``.
    target: str
    #: A module the backend cannot work without (its driver), if any.
    driver: str | None = None
    #: The ``pip install`` argument that brings the driver.
    install: str | None = None


_SQL = "flask_jobrunner.backends.sql:SQLBackend"
_REDIS = "flask_jobrunner.backends.redis:RedisBackend"

#: URL scheme -> backend. Durable backends join this table as they land.
BACKENDS: dict[str, BackendEntry] = {
    "memory": BackendEntry("flask_jobrunner.backends.memory:MemoryBackend"),
    "sqlite": BackendEntry(_SQL, "sqlalchemy", "flask-jobrunner[sql]"),
    "postgresql": BackendEntry(_SQL, "psycopg", "flask-jobrunner[postgres]"),
    "mysql": BackendEntry(_SQL, "pymysql", "flask-jobrunner[mysql]"),
    "mariadb": BackendEntry(_SQL, "pymysql", "flask-jobrunner[mysql]"),
    # The engine of the app's Flask-SQLAlchemy extension.
    "sqlalchemy": BackendEntry(_SQL, "sqlalchemy", "flask-jobrunner[sql]"),
    "redis": BackendEntry(_REDIS, "redis", "flask-jobrunner[redis]"),
    "rediss": BackendEntry(_REDIS, "redis", "flask-jobrunner[redis]"),
    "unix": BackendEntry(_REDIS, "redis", "flask-jobrunner[redis]"),
}


def load_backend(url: str, **options: Any) -> Backend:
    """Create the backend that *url* names, passing it *options*.

    :raises ConfigurationError: for an unknown scheme, or a missing driver
        (the message names the ``pip install`` command).
    """
    # A bare "sqlalchemy" has no "://": it names the app's Flask-SQLAlchemy engine.
    scheme = url if url == "sqlalchemy" else urlsplit(url).scheme.split("+", 1)[0].lower()
    entry = BACKENDS.get(scheme)
    if entry is None:
        known = ", ".join(_spelling(name) for name in sorted(BACKENDS))
        raise ConfigurationError(
            f"JOBRUNNER_BACKEND {url!r} has an unknown scheme '{scheme}'. Known schemes: {known}."
        )
    if entry.driver is not None:
        try:
            importlib.import_module(entry.driver)
        except ImportError as error:
            raise ConfigurationError(
                f"The '{scheme}' backend needs the '{entry.driver}' package."
                f" Install it with: pip install '{entry.install}'"
            ) from error
    module_name, class_name = entry.target.split(":")
    backend_class = getattr(importlib.import_module(module_name), class_name)
    backend: Backend = backend_class.from_url(url, **options)
    return backend


def _spelling(scheme: str) -> str:
    return f"'{scheme}'" if scheme == "sqlalchemy" else f"'{scheme}://'"


__all__ = ["BACKENDS", "Backend", "BackendEntry", "load_backend"]
