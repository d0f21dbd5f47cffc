"""Count the calls a process makes to its job store: ``python -m bench.counting OUT flask ...``.

Redis: every command, pipeline or script sent (``send_packed_command``), one
round trip each. SQL: every statement, ``BEGIN`` and ``COMMIT``/``ROLLBACK``
SQLAlchemy issues; on PostgreSQL and MariaDB each is a round trip. The totals
are written as JSON to *OUT* when the process exits.
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

    def one(*args: Any, **kwargs: Any) -> None:
        CALLS["sql"] += 1

    for name in ("before_cursor_execute", "begin", "commit", "rollback"):
        sqlalchemy.event.listen(sqlalchemy.Engine, name, one)


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
