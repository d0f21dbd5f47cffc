"""Count the calls a process makes to its job store: ``python -m bench.counting OUT flask ...``.

Redis: every command, pipeline or script sent (``send_packed_command``), one
round trip each. SQL: every statement, and every ``BEGIN`` and
``COMMIT``/``ROLLBACK`` the driver really sends, which a connection in
autocommit does not (psycopg and PyMySQL send no ``BEGIN`` of their own for
an SQLAlchemy transaction but psycopg's); on PostgreSQL and MariaDB each is a
round trip, on SQLite a call into the library. The totals are written as
JSON to *OUT* when the process exits.
"""

from __future__ import annotations

import atexit
import collections
import json
import sys
from typing import Any

#: Calls so far, by kind: ``redis``, ``sql``.
CALLS: collections.Counter[str] = collections.Counter()
_installed = False


def install() -> None:
    """Wrap redis-py's and SQLAlchemy's senders with counters (once per process)."""
    global _installed
    if _installed:
        return
    _installed = True
    try:
        from redis.connection import AbstractConnection
    except ImportError:
        pass
    else:
        send = AbstractConnection.send_packed_command

        def counted(self: Any, command: Any, check_health: bool = True) -> None:
            CALLS["redis"] += 1
            send(self, command, check_health)

        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    try:
        import sqlalchemy
    except ImportError:
        return

    def statement(*args: Any, **kwargs: Any) -> None:
        CALLS["sql"] += 1

    def begin(connection: Any) -> None:
        # psycopg sends BEGIN before the transaction's first statement; PyMySQL's
        # transactions begin on the server by themselves, SQLite's by a statement.
        dbapi = connection.connection.dbapi_connection
        if _driver(dbapi) == "psycopg" and not dbapi.autocommit:
            CALLS["sql"] += 1

    def end(connection: Any) -> None:
        if not _is_autocommit(connection.connection.dbapi_connection):
            CALLS["sql"] += 1

    sqlalchemy.event.listen(sqlalchemy.Engine, "before_cursor_execute", statement)
    sqlalchemy.event.listen(sqlalchemy.Engine, "begin", begin)
    sqlalchemy.event.listen(sqlalchemy.Engine, "commit", end)
    sqlalchemy.event.listen(sqlalchemy.Engine, "rollback", end)


def _driver(dbapi_connection: Any) -> str:
    return type(dbapi_connection).__module__.split(".")[0]


def _is_autocommit(dbapi_connection: Any) -> bool:
    # Whether the driver sends nothing for a COMMIT or ROLLBACK (no round trip).
    driver = _driver(dbapi_connection)
    if driver == "psycopg":
        return bool(dbapi_connection.autocommit)
    if driver == "pymysql":
        return bool(dbapi_connection.get_autocommit())
    return not dbapi_connection.in_transaction  # sqlite3


def total() -> int:
    """Every call counted so far."""
    return sum(CALLS.values())


def main() -> None:
    """Install the counters, then run the rest of the command line as ``flask``."""
    output = sys.argv[1]
    install()

    def write() -> None:
        with open(output, "w") as file:
            json.dump(dict(CALLS), file)

    atexit.register(write)
    from flask.cli import main as flask_main

    sys.argv = ["flask", *sys.argv[2:]]
    flask_main()


if __name__ == "__main__":
    main()
