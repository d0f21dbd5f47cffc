"""Private, empty stores on the loopback servers, removed afterwards.

Every system measured gets its own Redis database (marked as taken, flushed at
the end) or its own PostgreSQL/MariaDB database, so runs never see each
other's keys and nothing of the test suite is touched.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import uuid
from collections.abc import Iterator

SERVERS = {
    "postgresql": os.environ.get(
        "JOBRUNNER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("JOBRUNNER_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
    "redis": os.environ.get("JOBRUNNER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
}

#: The key that marks a Redis database as taken by one benchmark run.
REDIS_MARKER = "flask-jobrunner-bench:owner"


@contextlib.contextmanager
def redis_database() -> Iterator[str]:
    """The URL of an empty Redis database (of 15 down to 1) that this run alone uses.

    Database 0 is left to the test suite. A database counts as free when it is
    empty; the marker key claims it atomically, and only a database still
    carrying this run's marker is flushed at the end.
    """
    import redis

    base = SERVERS["redis"].rsplit("/", 1)[0]
    token = uuid.uuid4().hex
    for number in range(15, 0, -1):
        url = f"{base}/{number}"
        client = redis.Redis.from_url(url)
        if client.set(REDIS_MARKER, token, nx=True) and client.dbsize() == 1:
            break
        if client.get(REDIS_MARKER) == token.encode():
            client.delete(REDIS_MARKER)
        client.close()
    else:
        raise RuntimeError("no empty Redis database (1-15) is free for the benchmark")
    try:
        yield url
    finally:
        if client.get(REDIS_MARKER) == token.encode():
            client.flushdb()
        client.close()


@contextlib.contextmanager
def sql_database(kind: str) -> Iterator[str]:
    """The SQLAlchemy URL of a new, empty database on server *kind*, dropped afterwards."""
    import sqlalchemy

    url = sqlalchemy.make_url(SERVERS[kind])
    database = f"jobrunner_bench_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE {database}")
    try:
        yield url.set(database=database).render_as_string(hide_password=False)
    finally:
        with engine.connect() as connection:
            if kind == "postgresql":
                # A worker that was killed may leave a session behind for a moment.
                connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
            else:
                connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {database}")
        engine.dispose()


@contextlib.contextmanager
def jobrunner_store(backend: str, directory: pathlib.Path) -> Iterator[str]:
    """A ``JOBRUNNER_BACKEND`` URL for a private store of *backend*."""
    if backend == "memory":
        yield "memory://"
    elif backend == "sqlite":
        yield f"sqlite:///{directory / 'bench.db'}"
    elif backend == "redis":
        with redis_database() as url:
            yield url
    else:
        with sql_database(backend) as url:
            yield url
