"""How the SQL backend's work reaches the database, and what the app sees when it fails.

Each operation is one transaction on the backend's engine or, when its only
write is one statement, that statement alone on an engine in autocommit (one
round trip). On SQLite a process's writes queue on a lock and begin with
``BEGIN IMMEDIATE``. A transaction the database broke off to end a deadlock
runs again; a driver error becomes :exc:`~flask_jobrunner.errors.BackendUnavailable`
or :exc:`~flask_jobrunner.errors.ConfigurationError` where it means one.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import sqlalchemy as sa

from ..errors import BackendUnavailable
from . import sql_dialects as dialects

T = TypeVar("T")

#: How often a transaction the database broke off to end a deadlock is tried.
DEADLOCK_ATTEMPTS = 3


class Transactions:
    """Runs work in transactions on *engine*, or as one statement on *autocommit*.

    :param engine: The engine of the backend's transactions.
    :param autocommit: An engine on which each statement commits itself, if any.
    :param where: The database's URL without its password, for error messages.
    """

    def __init__(self, engine: sa.Engine, autocommit: sa.Engine | None, *, where: str) -> None:
        self.engine = engine
        self.autocommit = autocommit
        self._where = where
        self._is_sqlite = engine.dialect.name == "sqlite"
        self.reset_lock()

    def reset_lock(self) -> None:
        """Make a new write lock (in a forked child, whose parent's may be held)."""
        # SQLite takes one writer at a time anyway; threads queue here, not in its busy loop.
        self._write_lock = threading.Lock() if self._is_sqlite else None

    def run(self, work: Callable[[sa.Connection], T], *, write: bool, single: bool = False) -> T:
        """*work* in one transaction, with its errors translated.

        :param write: Whether *work* writes.
        :param single: Whether its only write is one statement, atomic on its own.
        """
        with self.translated_errors():
            return self._retried(
                work, write=write, autocommit=single and self.autocommit is not None
            )

    @contextlib.contextmanager
    def translated_errors(self) -> Iterator[None]:
        """Raise the app's error for a driver error that means one."""
        try:
            yield
        except sa.exc.DBAPIError as error:
            translated = dialects.translate(error, self._where)
            if translated is None:
                raise
            raise translated from error
        except sa.exc.TimeoutError as error:
            raise BackendUnavailable(
                f"Every connection to the SQL job backend at '{self._where}' stayed busy."
                " Try again, or give the pool more connections."
            ) from error

    def _retried(self, work: Callable[[sa.Connection], T], *, write: bool, autocommit: bool) -> T:
        # *autocommit*: *work* is one statement, run on the autocommit engine.
        for _ in range(DEADLOCK_ATTEMPTS - 1):
            try:
                return self._once(work, write=write, autocommit=autocommit)
            except sa.exc.DBAPIError as error:
                # Broken off to end a deadlock, it changed nothing: run it again.
                if not dialects.is_deadlock(error):
                    raise
        return self._once(work, write=write, autocommit=autocommit)

    def _once(self, work: Callable[[sa.Connection], T], *, write: bool, autocommit: bool) -> T:
        if autocommit:
            assert self.autocommit is not None
            with self.autocommit.connect() as connection:
                return work(connection)
        lock = self._write_lock if write and self._write_lock else contextlib.nullcontext()
        with lock, self.engine.connect() as connection:
            if write and self._is_sqlite:
                # Takes the write lock at BEGIN, so no reader can turn writer
                # halfway and meet SQLITE_BUSY.
                connection.execution_options(**{dialects.BEGIN_OPTION: "BEGIN IMMEDIATE"})
            with connection.begin():
                return work(connection)


def closing_when(closed: threading.Event) -> Callable[[Any, Any], None]:
    """A pool's checkin hook that drops each connection returned once *closed* is set.

    Disposing of a pool closes only the connections in it: one a thread still
    running returns after the backend closed would stay open. (It holds only
    the event, so the engine keeps no backend alive.)
    """

    def checkin(dbapi_connection: Any, connection_record: Any) -> None:
        if closed.is_set():
            connection_record.invalidate()

    return checkin
