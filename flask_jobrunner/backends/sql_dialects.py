"""What differs between SQLite, PostgreSQL and MySQL/MariaDB for the SQL backend.

The engine a URL gets (driver, timeouts, SQLite's explicit transactions),
the database's clock as SQL, and what a driver error means for the app.
"""

from __future__ import annotations

import inspect
import select
import sqlite3
import threading
import weakref
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine.default import DefaultDialect

from ..errors import BackendUnavailable, ConfigurationError, JobRunnerError
from ..record import utcnow
from .sql_schema import UTCDateTime

#: Seconds to wait for a database server to accept a connection.
CONNECT_TIMEOUT = 5
#: Seconds a SQLite write waits for another process's write to end.
SQLITE_BUSY_TIMEOUT = 10.0
#: Pages of SQLite's WAL at which a commit copies it back into the database
#: file (SQLite's default is 1,000). A job writes about 40 pages, so the
#: default put a checkpoint, two ``fdatasync`` and 1 to 20 ms, into one
#: submit, claim or finish in every ~25 jobs; now one in ~250. The WAL file
#: grows to about 40 MB; what survives a crash does not change.
SQLITE_WAL_PAGES = 10_000
#: The execution option holding the statement that begins a SQLite transaction.
BEGIN_OPTION = "jobrunner_sqlite_begin"

# A bare scheme gets the driver the backend is tested with.
_DEFAULT_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
# Whether SQLAlchemy (2.0.43 and later) can close an autocommit connection
# without the ROLLBACK round trip PyMySQL would send.
_SKIPS_AUTOCOMMIT_ROLLBACK = (
    "skip_autocommit_rollback" in inspect.signature(DefaultDialect.__init__).parameters
)
# The isolation level of MySQL/MariaDB sessions.
_MYSQL_LEVEL = "READ COMMITTED"
# PyMySQL's SERVER_STATUS_IN_TRANS flag.
_MYSQL_IN_TRANSACTION = 1
# Engines made by create_engine below, whose SQLite hooks are already in place.
_PREPARED: weakref.WeakSet[sa.Engine] = weakref.WeakSet()
# The autocommit twin of each server engine (PostgreSQL, MySQL, MariaDB) made by create_engine.
_AUTOCOMMIT: weakref.WeakKeyDictionary[sa.Engine, sa.Engine] = weakref.WeakKeyDictionary()


def create_engine(url: str, *, pool_size: int) -> sa.Engine:
    """An engine for *url*, set up for many threads and prompt failure when the server is down.

    :raises ConfigurationError: for an in-memory SQLite database, which one
        process's threads cannot even share.
    """
    parsed = sa.make_url(url)
    parsed = parsed.set(drivername=_DEFAULT_DRIVERS.get(parsed.drivername, parsed.drivername))
    name = parsed.get_backend_name()
    if name == "sqlite":
        check_sqlite_file(parsed)
        engine = sa.create_engine(
            parsed,
            # pysqlite's own BEGIN handling is off; _begin emits the right BEGIN.
            isolation_level="AUTOCOMMIT",
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT},
        )
        sa.event.listen(engine, "connect", _tune_sqlite)
        sa.event.listen(engine, "begin", _begin)
        _PREPARED.add(engine)
        return engine
    engine = _server_engine(parsed, pool_size=pool_size)
    if _SKIPS_AUTOCOMMIT_ROLLBACK:
        _AUTOCOMMIT[engine] = _server_engine(parsed, pool_size=pool_size, autocommit=True)
    return engine


def autocommit_engine(engine: sa.Engine) -> sa.Engine | None:
    """An engine on which each statement commits itself, for operations of one statement.

    For an engine made by :func:`create_engine`, a second pool whose
    connections stay in autocommit: on MySQL/MariaDB switching costs round
    trips, and on PostgreSQL, where psycopg switches without one,
    SQLAlchemy's switch and switch back at each checkout cost more client
    CPU than the statement. For an app's PostgreSQL engine, which keeps its
    settings, a copy of it sharing its pool; else ``None``.
    """
    own = _AUTOCOMMIT.get(engine)
    if own is None and engine.dialect.name == "postgresql":
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return own


def _server_engine(parsed: sa.URL, *, pool_size: int, autocommit: bool = False) -> sa.Engine:
    connect_args: dict[str, Any] = {}
    if "connect_timeout" not in parsed.query:
        connect_args["connect_timeout"] = CONNECT_TIMEOUT
    options: dict[str, Any] = {}
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        if "charset" not in parsed.query:
            connect_args["charset"] = "utf8mb4"
        options["pool_recycle"] = 3600
        # No gap locks: a claim never blocks an enqueue of a new job.
        if autocommit:
            connect_args["init_command"] = f"SET SESSION TRANSACTION ISOLATION LEVEL {_MYSQL_LEVEL}"
        else:
            options["isolation_level"] = _MYSQL_LEVEL
    if autocommit:
        # A connection left in autocommit needs no ROLLBACK when it is closed.
        options.update(isolation_level="AUTOCOMMIT", skip_autocommit_rollback=True)
    engine = sa.create_engine(
        parsed,
        pool_size=pool_size,
        max_overflow=2 * pool_size,
        pool_timeout=10,
        # Every use of a connection ends its transaction; _reset_connection
        # rolls back only one that did not, instead of every checkin.
        pool_reset_on_return=None,
        connect_args=connect_args,
        **options,
    )
    sa.event.listen(engine, "checkout", _refuse_dead_connection)
    sa.event.listen(engine, "reset", _reset_connection)
    return engine


def _refuse_dead_connection(
    dbapi_connection: Any, connection_record: Any, connection_proxy: Any
) -> None:
    # The cheap stand-in for pool_pre_ping, without its round trip: an idle
    # connection has nothing to read unless the server closed it (a restart,
    # a kill, a timeout). The pool then opens a new one.
    if _is_readable(_socket_of(dbapi_connection)):
        raise sa.exc.DisconnectionError("The server closed this pooled connection.")


def _socket_of(dbapi_connection: Any) -> int | None:
    fileno = getattr(dbapi_connection, "fileno", None)  # psycopg
    if fileno is None:
        sock = getattr(dbapi_connection, "_sock", None)  # PyMySQL
        fileno = None if sock is None else sock.fileno
    try:
        return None if fileno is None else int(fileno())
    except Exception:  # closed already: let the first statement tell
        return None


def _is_readable(fd: int | None) -> bool:
    if fd is None or fd < 0:
        return False
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])


def _reset_connection(dbapi_connection: Any, connection_record: Any, reset_state: Any) -> None:
    # Only a connection still inside a transaction needs the rollback round
    # trip (psycopg checks this itself; PyMySQL reports it in server_status).
    if reset_state.terminate_only:
        return
    status = getattr(dbapi_connection, "server_status", None)
    if status is None or status & _MYSQL_IN_TRANSACTION:
        dbapi_connection.rollback()


def prepare_engine(engine: sa.Engine) -> sa.Engine:
    """The engine the backend runs on: for SQLite, one that emits its own ``BEGIN``.

    An app's engine is left as it is: the backend's transactions run on a
    copy of it sharing its pool (see ``Engine.execution_options``).
    """
    if engine.dialect.name != "sqlite" or engine in _PREPARED:
        return engine
    check_sqlite_file(engine.url)
    own = engine.execution_options(isolation_level="AUTOCOMMIT")
    sa.event.listen(own, "begin", _begin)
    return own


def check_sqlite_file(url: sa.URL) -> None:
    """Refuse an in-memory SQLite database.

    :raises ConfigurationError: if *url* names no file.
    """
    if url.database in (None, "", ":memory:") or "mode=memory" in str(url):
        raise ConfigurationError(
            f"The SQLite database {url.render_as_string()!r} is in memory, which threads and"
            " processes cannot share. Name a file ('sqlite:///jobs.db'), or use 'memory://'."
        )


def enable_wal(engine: sa.Engine) -> None:
    """Put a SQLite database in WAL mode, so reads never wait for a write; it persists."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()
    finally:
        raw.close()


class SQLiteChanges:
    """Tells, for a few microseconds, whether anyone committed to a SQLite file since the last look.

    A waiting claim looks here before each poll, so it can look often
    without reading the jobs each time: SQLite has no notifications, but
    ``PRAGMA data_version`` of one connection changes with every commit of
    any other connection, of any process. Any failure reads as a change, so
    the claim falls back to reading.

    :param engine: An engine of SQLite through the standard ``sqlite3`` driver.
    """

    def __init__(self, engine: sa.Engine) -> None:
        args, kwargs = engine.dialect.create_connect_args(engine.url)
        self._database: str = args[0]
        self._uri = bool(kwargs.get("uri", False))
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._version: int | None = None

    def has_changed(self) -> bool:
        """Whether a commit happened since the last call; ``True`` at the first."""
        with self._lock:
            try:
                if self._connection is None:
                    self._connection = sqlite3.connect(
                        self._database, uri=self._uri, isolation_level=None, check_same_thread=False
                    )
                version: int = self._connection.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error:
                self._close()
                return True
            changed = version != self._version
            self._version = version
            return changed

    def close(self) -> None:
        """Close the connection; the next look opens a new one."""
        with self._lock:
            self._close()

    def after_fork(self) -> None:
        """Forget the parent's connection in a forked child, which must not use it."""
        if self._connection is not None:
            _ABANDONED.append(self._connection)
        self._lock = threading.Lock()
        self._connection = self._version = None

    def _close(self) -> None:
        connection, self._connection, self._version = self._connection, None, None
        if connection is not None:
            connection.close()


def sqlite_changes(engine: sa.Engine) -> SQLiteChanges | None:
    """A :class:`SQLiteChanges` for a SQLite *engine* of the ``sqlite3`` driver, else ``None``."""
    if engine.dialect.name != "sqlite" or engine.dialect.driver != "pysqlite":
        return None
    return SQLiteChanges(engine)


# SQLite connections of a parent process, kept referenced in a forked child
# so that closing them there never touches the parent's file locks.
_ABANDONED: list[Any] = []


def _tune_sqlite(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode this survives any crash of the application; only a power
    # loss may undo the last commits, and never corrupts the file.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_PAGES}")
    cursor.close()


def _begin(connection: sa.Connection) -> None:
    connection.exec_driver_sql(connection.get_execution_options().get(BEGIN_OPTION, "BEGIN"))


def app_engine(app: Any) -> sa.Engine:
    """The engine of *app*'s Flask-SQLAlchemy extension, for ``JOBRUNNER_BACKEND = 'sqlalchemy'``.

    :raises ConfigurationError: if there is no app, or it has no Flask-SQLAlchemy.
    """
    usage = (
        "JOBRUNNER_BACKEND = 'sqlalchemy' uses the engine of the app's Flask-SQLAlchemy"
        " extension, but"
    )
    if app is None:
        raise ConfigurationError(
            f"{usage} no app was given. Set it in the app's config before 'init_app',"
            " or give a database URL."
        )
    db = app.extensions.get("sqlalchemy")
    if db is None:
        raise ConfigurationError(
            f"{usage} the app has none. Call 'db.init_app(app)' before 'jobs.init_app(app)',"
            " or give a database URL."
        )
    with app.app_context():
        engine: sa.Engine = db.engine
    return engine


def insert_new(table: sa.Table, dialect: sa.Dialect) -> sa.Insert:
    """An ``INSERT`` into *table* that skips a row whose primary key is stored already."""
    if dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect.name == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table).on_conflict_do_nothing()
    if dialect.name in ("mysql", "mariadb"):
        # Not INSERT IGNORE, which would also turn bad values into warnings.
        from sqlalchemy.dialects import mysql

        insert = mysql.insert(table)
        key = table.primary_key.columns[0].name
        return insert.on_duplicate_key_update({key: insert.inserted[key]})
    raise ConfigurationError(f"The SQL job backend does not support {dialect.name!r}.")


# -- the clock ---------------------------------------------------------------


class Clock:
    """The database's current time as SQL, constant within one statement.

    Leases are measured on it, so workers on machines whose clocks disagree
    still agree on when a lease ends.
    """

    #: The current time.
    now: sa.ColumnElement[datetime]

    def after(self, seconds: float) -> sa.ColumnElement[datetime]:
        """The time *seconds* after :attr:`now`."""
        raise NotImplementedError

    def after_bound(self) -> sa.ColumnElement[datetime]:
        """A time after :attr:`now` by the parameter :data:`AFTER`, for a statement built once.

        Give it the value :meth:`after_value` makes of the seconds.
        """
        raise NotImplementedError

    def after_value(self, seconds: float) -> Any:
        """The value of the parameter :data:`AFTER` for a time *seconds* after :attr:`now`."""
        raise NotImplementedError


#: The parameter of :meth:`Clock.after_bound`.
AFTER = "jobrunner_after"


class _PostgresClock(Clock):
    def __init__(self) -> None:
        self.now = sa.func.timezone("UTC", sa.func.statement_timestamp(), type_=UTCDateTime())

    def after(self, seconds: float) -> sa.ColumnElement[datetime]:
        later = self.now + sa.literal(timedelta(seconds=seconds), sa.Interval())
        return sa.type_coerce(later, UTCDateTime())

    def after_bound(self) -> sa.ColumnElement[datetime]:
        later = self.now + sa.bindparam(AFTER, type_=sa.Interval())
        return sa.type_coerce(later, UTCDateTime())

    def after_value(self, seconds: float) -> Any:
        return timedelta(seconds=seconds)


class _MySQLClock(Clock):
    def __init__(self) -> None:
        self.now = sa.func.utc_timestamp(6, type_=UTCDateTime())

    def after(self, seconds: float) -> sa.ColumnElement[datetime]:
        micro = round(seconds * 1_000_000)
        return sa.func.timestampadd(
            sa.literal_column("MICROSECOND"), micro, self.now, type_=UTCDateTime()
        )

    def after_bound(self) -> sa.ColumnElement[datetime]:
        micro = sa.bindparam(AFTER, type_=sa.BigInteger())
        return sa.func.timestampadd(
            sa.literal_column("MICROSECOND"), micro, self.now, type_=UTCDateTime()
        )

    def after_value(self, seconds: float) -> Any:
        return round(seconds * 1_000_000)


class FixedClock(Clock):
    """A clock stopped at *value* (by default, this machine's time now).

    SQLite has no server: its clock is this machine's, shared by every
    process using the file. It also replays a database time read earlier in
    the same transaction.
    """

    def __init__(self, value: datetime | None = None) -> None:
        #: The time this clock shows.
        self.value = utcnow() if value is None else value
        self.now = sa.literal(self.value, UTCDateTime())

    def after(self, seconds: float) -> sa.ColumnElement[datetime]:
        """The time *seconds* after :attr:`value`."""
        return sa.literal(self.value + timedelta(seconds=seconds), UTCDateTime())

    def after_value(self, seconds: float) -> Any:
        """The time *seconds* after :attr:`value`, for a :class:`BoundClock`'s statement."""
        return self.value + timedelta(seconds=seconds)


class BoundClock(Clock):
    """A clock whose time is the parameter ``jobrunner_now``, given when a statement runs.

    For a statement built once on SQLite, whose clock is this machine's. It
    has no :meth:`~Clock.after`: give such times as parameters too, such as
    :meth:`~Clock.after_bound`'s, from :meth:`FixedClock.after_value`.
    """

    def __init__(self) -> None:
        self.now = sa.bindparam("jobrunner_now", type_=UTCDateTime())

    def after_bound(self) -> sa.ColumnElement[datetime]:
        """The parameter :data:`AFTER`: a time."""
        return sa.bindparam(AFTER, type_=UTCDateTime())


class Traits:
    """What the SQL backend's statements allow for on one kind of database.

    :param dialect: The dialect of the backend's engine.
    """

    def __init__(self, dialect: sa.Dialect) -> None:
        #: SQLite: one writer at a time, no row locks, and this machine's clock.
        self.is_sqlite = dialect.name == "sqlite"
        #: PostgreSQL: every change of a job notifies, and some commits may be relaxed.
        self.is_postgres = dialect.name == "postgresql"
        #: Whether an ``UPDATE`` can return the rows it changed (MariaDB's cannot).
        self.returning: bool = dialect.update_returning
        #: Whether hot reads get each record as one JSON column (see ``sql_schema.packed_record``).
        self.packs_records = dialect.name in ("mysql", "mariadb", "postgresql")
        #: Makes the :class:`Clock` of one operation.
        self.clock = clock_factory(dialect)
        #: Whether that clock is this machine's, a :class:`FixedClock` (on SQLite).
        self.is_clock_fixed = isinstance(self.clock(), FixedClock)

    def prebuilt_clock(self) -> Clock:
        """The clock of a statement built once: a :class:`BoundClock` if the clock is fixed."""
        return BoundClock() if self.is_clock_fixed else self.clock()


def clock_factory(dialect: sa.Dialect) -> Callable[[], Clock]:
    """Makes a :class:`Clock` for each operation on *dialect*.

    A server's clock is SQL that reads the time when it runs, so every
    operation shares one; a :class:`FixedClock` is made anew each time.
    """
    if dialect.name == "postgresql":
        server: Clock = _PostgresClock()
    elif dialect.name in ("mysql", "mariadb"):
        server = _MySQLClock()
    else:
        return FixedClock
    return lambda: server


#: In a ``RETURNING`` list on PostgreSQL: this transaction's commit does not
#: wait for its WAL to reach the disk. For claims, heartbeats and progress
#: only: a server crash may undo the last of those (as if the worker had died:
#: the job runs again, at least once), never an enqueue or a finish, and never
#: half of one.
RELAXED_COMMIT = sa.func.set_config("synchronous_commit", "off", True).label("jobrunner_relaxed")


# -- errors ------------------------------------------------------------------


def translate(error: sa.exc.DBAPIError, where: str) -> JobRunnerError | None:
    """The error to raise for a driver error, or ``None`` to raise it as it is."""
    original = error.orig
    text = str(original).strip()
    reason = text.splitlines()[0] if text else type(original).__name__
    if _is_missing_table(original):
        return ConfigurationError(
            f"The job tables do not exist in the database at '{where}' ({reason})."
            " Create them with 'flask jobs init-db', or set JOBRUNNER_CREATE_TABLES = True."
        )
    if isinstance(error, (sa.exc.OperationalError, sa.exc.InterfaceError)) or (
        error.connection_invalidated
    ):
        return BackendUnavailable(
            f"The SQL job backend at '{where}' is unavailable: {reason}."
            " Check that the database server is running; the next call tries again."
        )
    return None


def is_deadlock(error: sa.exc.DBAPIError) -> bool:
    """Whether the database rolled the transaction back to break a deadlock (safe to retry)."""
    original = error.orig
    return getattr(original, "sqlstate", None) == "40P01" or _mysql_code(original) == 1213


def _is_missing_table(original: BaseException | None) -> bool:
    if getattr(original, "sqlstate", None) == "42P01" or _mysql_code(original) == 1146:
        return True
    return "no such table" in str(original)


def _mysql_code(original: BaseException | None) -> object:
    return original.args[0] if original is not None and original.args else None
