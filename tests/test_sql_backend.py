"""What the SQL backend does beyond the contract: tables, SQLite's WAL mode, the
Flask-SQLAlchemy engine, claims from many processes, outages, and the
PostgreSQL ``NOTIFY`` that wakes a waiting claim.

Every test runs on a real database (the private ones of ``conftest``);
nothing is mocked. The outage tests put a small TCP relay of their own
between the backend and the server, and cut it.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import pathlib
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.dialects import postgresql

from conftest import make_record, wait_until
from flask_jobrunner import JobRunner, current_job
from flask_jobrunner.backends import load_backend, sql_listener, sql_waiting
from flask_jobrunner.backends import sql_dialects as dialects
from flask_jobrunner.backends.sql import SQLBackend
from flask_jobrunner.backends.sql_schema import job_progress as job_progress_table
from flask_jobrunner.backends.sql_schema import jobs as jobs_table
from flask_jobrunner.errors import BackendUnavailable, ConfigurationError, JobConflict
from flask_jobrunner.record import (
    Claim,
    ErrorType,
    JobRecord,
    JobStatus,
    LeaseState,
    Outcome,
    Progress,
    new_job_id,
)

SQL_IDS = ["sqlite", "postgresql", "mysql"]
SERVER_IDS = ["postgresql", "mysql"]
LEASE = 60.0
DONE = Outcome(JobStatus.COMPLETED, result={"ok": True})


@pytest.fixture
def open_backend() -> Iterator[Callable[..., SQLBackend]]:
    """Opens SQL backends by URL (``result_ttl=3600``); each is cleared and closed after."""
    opened: list[tuple[SQLBackend, bool]] = []

    def open_(url: str, *, clear: bool = True, **settings: Any) -> SQLBackend:
        backend = load_backend(url, **{"result_ttl": 3600, **settings})
        assert isinstance(backend, SQLBackend)
        opened.append((backend, clear))
        if clear:
            backend.setup()
            backend.clear()
        return backend

    yield open_
    for backend, clear in reversed(opened):
        if clear:
            with contextlib.suppress(BackendUnavailable):
                backend.clear()
        backend.close()


@pytest.fixture(params=SQL_IDS)
def sql_url(request: pytest.FixtureRequest, backend_url_for: Callable[[str], str]) -> str:
    """The URL of each SQL database in turn."""
    return backend_url_for(str(request.param))


@pytest.fixture(params=SERVER_IDS)
def server_url(request: pytest.FixtureRequest, backend_url_for: Callable[[str], str]) -> str:
    """The URL of each SQL server's private database in turn."""
    return backend_url_for(str(request.param))


@pytest.fixture
def postgres_url(backend_url_for: Callable[[str], str]) -> str:
    """The URL of the private PostgreSQL database."""
    return backend_url_for("postgresql")


@pytest.fixture
def empty_database(sql_url: str, tmp_path: pathlib.Path) -> Iterator[str]:
    """The URL of a database with no tables yet, dropped after the test."""
    url = sa.make_url(sql_url)
    if url.get_backend_name() == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    name = f"{url.database}_empty_{uuid.uuid4().hex[:6]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        force = " WITH (FORCE)" if url.get_backend_name() == "postgresql" else ""
        with admin.connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
        admin.dispose()


def free_port() -> int:
    """A loopback TCP port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- tables ------------------------------------------------------------------


def test_every_record_field_has_a_column_of_jobs() -> None:
    fields = set(JobRecord.__dataclass_fields__)
    assert fields <= set(jobs_table.c.keys())


def test_without_create_tables_a_missing_table_names_init_db_until_setup(
    empty_database: str, open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(empty_database, clear=False, create_tables=False)

    with pytest.raises(ConfigurationError, match="flask jobs init-db"):
        backend.enqueue(make_record())
    with pytest.raises(ConfigurationError, match="flask jobs init-db"):
        backend.claim(["default"], lease=LEASE)

    backend.setup()
    backend.setup()  # again: nothing to do, no error

    job, created = backend.enqueue(make_record())
    assert created
    assert backend.claim(["default"], lease=LEASE)[0].record.id == job.id
    assert sa.inspect(backend.engine).has_table("job_progress")
    backend.clear()


def test_flask_jobs_init_db_creates_the_tables_an_app_did_not(empty_database: str) -> None:
    app = Flask(__name__)
    app.config.update(
        JOBRUNNER_BACKEND=empty_database,
        JOBRUNNER_CREATE_TABLES=False,
        JOBRUNNER_RUN_WORKERS=False,
    )
    jobs = JobRunner(app)
    backend = jobs.get_state(app).backend
    try:
        with pytest.raises(ConfigurationError, match="flask jobs init-db"):
            backend.get(new_job_id())

        result = app.test_cli_runner().invoke(args=["jobs", "init-db"])

        assert result.exit_code == 0, result.output
        assert "SQLBackend is ready" in result.output
        assert backend.get(new_job_id()) is None
    finally:
        backend.close()


def test_by_default_the_first_use_creates_the_tables(
    empty_database: str, open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(empty_database, clear=False)

    assert backend.get(new_job_id()) is None

    assert {"jobs", "job_progress"} <= set(sa.inspect(backend.engine).get_table_names())


def test_sqlite_is_in_wal_mode(
    tmp_path: pathlib.Path, open_backend: Callable[..., SQLBackend]
) -> None:
    path = tmp_path / "jobs.db"
    backend = open_backend(f"sqlite:///{path}")
    backend.enqueue(make_record())

    with contextlib.closing(sqlite3.connect(path)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_commits_checkpoint_the_wal_seldom(
    backend_url_for: Callable[[str], str], open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(backend_url_for("sqlite"))
    with backend.engine.connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one()
    assert (
        pages == dialects.SQLITE_WAL_PAGES > 1000
    )  # SQLite's default: a checkpoint every ~25 jobs


def test_an_in_memory_sqlite_database_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="memory://"):
        load_backend("sqlite://")


@pytest.mark.parametrize(
    ("scheme", "driver"),
    [("postgresql", "psycopg"), ("mysql", "pymysql"), ("mariadb", "pymysql")],
)
def test_a_bare_scheme_gets_the_tested_driver(
    backend_url_for: Callable[[str], str],
    open_backend: Callable[..., SQLBackend],
    scheme: str,
    driver: str,
) -> None:
    private = sa.make_url(backend_url_for("mysql" if scheme == "mariadb" else scheme))
    url = private.set(drivername=scheme).render_as_string(hide_password=False)

    backend = open_backend(url)

    assert backend.engine.dialect.driver == driver
    assert backend.get(new_job_id()) is None


def test_a_url_with_an_unknown_driver_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not a usable database URL"):
        load_backend("postgresql+nodriver://127.0.0.1/jobs")


def test_an_expired_idempotency_key_is_free_before_any_purge(
    sql_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(sql_url, result_ttl=0.05)
    first, _ = backend.enqueue(make_record(idempotency_key="alice:k1"))
    claim = backend.claim(["default"], lease=LEASE)[0]
    backend.progress(first.id, claim.token, Progress(50.0), lease=LEASE)
    assert backend.finish(first.id, claim.token, DONE)
    time.sleep(0.2)  # past the TTL; nobody purged

    again, created = backend.enqueue(make_record(idempotency_key="alice:k1"))

    assert created is True
    assert again.id != first.id
    assert backend.get(first.id) is None
    with backend.engine.connect() as connection:
        left = sa.select(sa.func.count()).select_from(sa.table("job_progress"))
        assert connection.execute(left).scalar() == 0


def test_progress_is_logged_and_the_log_goes_with_its_job(
    sql_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(sql_url, result_ttl=0.05)
    job, _ = backend.enqueue(make_record())
    claim = backend.claim(["default"], lease=LEASE)[0]
    backend.progress(job.id, claim.token, Progress(10.0, "first", 1, 10), lease=LEASE)
    backend.progress(job.id, claim.token, Progress(message="second"), lease=LEASE)
    backend.progress(job.id, "not-the-token", Progress(99.0, "stale"), lease=LEASE)
    assert backend.finish(
        job.id, claim.token, Outcome(JobStatus.COMPLETED, progress=Progress(100.0))
    )

    log = sa.text(
        "SELECT percentage, message, items_processed, total_items FROM job_progress"
        " WHERE job_id = :id ORDER BY id"
    )
    with backend.engine.connect() as connection:
        rows = [tuple(row) for row in connection.execute(log, {"id": job.id})]
    assert rows == [
        (10.0, "first", 1, 10),
        (10.0, "second", 1, 10),
        (100.0, "second", 1, 10),
    ]

    wait_until(lambda: backend.purge_expired() == 1, timeout=5)
    with backend.engine.connect() as connection:
        assert connection.execute(log, {"id": job.id}).all() == []


@pytest.mark.parametrize(
    ("interval", "reports", "logged"),
    [
        (0, 0, []),  # nothing reported: the final write logs nothing
        (0, 1, [1]),  # the one report is stored at once, and not again at the end
        (30, 2, [1, 2]),  # the second waits for the interval, so the final write stores it
    ],
)
def test_the_final_write_logs_only_progress_not_yet_stored(
    sql_url: str, interval: float, reports: int, logged: list[int]
) -> None:
    app = Flask(__name__)
    app.config.update(
        JOBRUNNER_BACKEND=sql_url, JOBRUNNER_PROGRESS_INTERVAL=interval, JOBRUNNER_MAX_WORKERS=1
    )
    jobs = JobRunner(app)

    @jobs.task
    def reports_items() -> None:
        for done in range(1, reports + 1):
            current_job.progress(done=done, total=2)

    backend = jobs.get_state(app).backend
    try:
        with app.app_context():
            job = reports_items.submit().wait(timeout=10)
        assert job.status is JobStatus.COMPLETED
        log = sa.select(job_progress_table.c.items_processed).where(
            job_progress_table.c.job_id == job.id
        )
        with backend.engine.connect() as connection:
            assert connection.execute(log.order_by(job_progress_table.c.id)).scalars().all() == (
                logged
            )
    finally:
        jobs.shutdown(app, timeout=10)
        backend.clear()
        backend.close()


# -- the Flask-SQLAlchemy engine ---------------------------------------------


def test_the_sqlalchemy_url_uses_the_engine_of_flask_sqlalchemy(tmp_path: pathlib.Path) -> None:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'app.db'}"
    app.config["JOBRUNNER_BACKEND"] = "sqlalchemy"
    app.config["JOBRUNNER_RUN_WORKERS"] = False
    db = SQLAlchemy(app)
    jobs = JobRunner(app)
    backend = jobs.get_state(app).backend
    try:
        assert isinstance(backend, SQLBackend)
        with app.app_context():
            assert backend.engine.pool is db.engine.pool
            stored, _ = backend.enqueue(make_record(task="from.flask_sqlalchemy"))
            # The app's own session sees the table and the row, and keeps working.
            tasks = db.session.execute(sa.text("SELECT task FROM jobs")).scalars().all()
            assert tasks == ["from.flask_sqlalchemy"]
            db.session.execute(sa.text("CREATE TABLE notes (text VARCHAR(10))"))
            db.session.execute(sa.text("INSERT INTO notes VALUES ('kept')"))
            db.session.commit()
            assert db.session.execute(sa.text("SELECT text FROM notes")).scalar() == "kept"
            claim = backend.claim(["default"], lease=LEASE)[0]
            assert backend.finish(stored.id, claim.token, DONE)
            db.session.remove()
    finally:
        backend.close()
        with app.app_context():
            db.engine.dispose()


def test_the_sqlalchemy_url_needs_an_app_with_flask_sqlalchemy() -> None:
    with pytest.raises(ConfigurationError, match="no app"):
        load_backend("sqlalchemy")
    with pytest.raises(ConfigurationError, match=r"db\.init_app"):
        load_backend("sqlalchemy", app=Flask(__name__))


# -- claims and keys under concurrency ---------------------------------------


def server_session(backend: SQLBackend) -> object:
    """The id of the server session a pooled connection has (``None`` on SQLite)."""
    query = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}
    statement = query.get(backend.engine.dialect.name)
    if statement is None:
        return None
    with backend.engine.connect() as connection:
        return connection.exec_driver_sql(statement).scalar()


def claim_until_empty(
    url: str, out: pathlib.Path, threads: int, backend: SQLBackend | None
) -> None:
    """Claim and finish jobs in *threads* threads until none is left; write what was taken.

    Runs in a forked child (with the parent's backend, or a new one) and in the parent.
    """
    own = backend is None
    if backend is None:
        backend = SQLBackend.from_url(url, result_ttl=3600)
    session = server_session(backend)
    taken: list[str] = []
    lock = threading.Lock()

    def claimer(limit: int) -> None:
        assert backend is not None
        while claims := backend.claim(["default"], lease=LEASE, limit=limit):
            for claim in claims:
                assert backend.finish(claim.record.id, claim.token, DONE)
                with lock:
                    taken.append(claim.record.id)

    workers = [
        threading.Thread(target=claimer, args=(1 + index % 3,), name=f"claimer-{index}")
        for index in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    out.write_text(json.dumps({"session": session, "taken": taken}))
    if own:
        backend.close()


def test_processes_and_threads_never_claim_a_job_twice(
    sql_url: str, open_backend: Callable[..., SQLBackend], tmp_path: pathlib.Path
) -> None:
    backend = open_backend(sql_url)
    total = 600
    ids = {backend.enqueue(make_record())[0].id for _ in range(total)}
    parent_session = server_session(backend)  # pooled, and inherited by the children
    context = multiprocessing.get_context("fork")
    outputs = [tmp_path / f"taken-{index}.json" for index in range(4)]
    # Two children fork with this process's backend (and its pooled
    # connections); one opens its own; this process claims too.
    children = [
        context.Process(target=claim_until_empty, args=(sql_url, outputs[0], 3, backend)),
        context.Process(target=claim_until_empty, args=(sql_url, outputs[1], 3, backend)),
        context.Process(target=claim_until_empty, args=(sql_url, outputs[2], 3, None)),
    ]
    for child in children:
        child.start()
    try:
        claim_until_empty(sql_url, outputs[3], 3, backend)
    finally:
        for child in children:
            child.join(60)
            if child.exitcode is None:
                child.kill()
                child.join(5)
    assert [child.exitcode for child in children] == [0, 0, 0]

    results = [json.loads(output.read_text()) for output in outputs]
    taken = [job_id for result in results for job_id in result["taken"]]
    assert len(taken) == len(set(taken)), "a job was handed to two claims"
    assert set(taken) == ids
    assert backend.counts()[JobStatus.COMPLETED] == total
    if parent_session is not None:  # no child talked over the parent's connection
        assert parent_session not in [result["session"] for result in results[:3]]


def test_racing_enqueues_of_a_unique_task_store_one_job(
    sql_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(sql_url)
    start = threading.Barrier(8)
    outcomes: list[object] = []

    def submit() -> None:
        start.wait(timeout=10)
        try:
            outcomes.append(backend.enqueue(make_record(unique_key="sync"))[0].id)
        except JobConflict as conflict:
            outcomes.append(conflict)

    threads = [threading.Thread(target=submit, name=f"submitter-{n}") for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    created = [outcome for outcome in outcomes if isinstance(outcome, str)]
    conflicts = [outcome for outcome in outcomes if isinstance(outcome, JobConflict)]
    assert len(created) == 1
    assert len(conflicts) == 7
    assert all(conflict.existing.id == created[0] for conflict in conflicts)
    assert sum(backend.counts().values()) == 1


def test_racing_enqueues_with_one_idempotency_key_return_one_job(
    sql_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(sql_url)
    start = threading.Barrier(8)
    results: list[tuple[str, bool]] = []

    def submit() -> None:
        start.wait(timeout=10)
        record, created = backend.enqueue(make_record(idempotency_key="alice:k1"))
        results.append((record.id, created))

    threads = [threading.Thread(target=submit, name=f"submitter-{n}") for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert len(results) == 8
    assert [created for _, created in results].count(True) == 1
    assert len({job_id for job_id, _ in results}) == 1


# -- waking a waiting claim --------------------------------------------------


def test_interrupt_wakes_a_waiting_claim_promptly(
    sql_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(sql_url)
    result: list[object] = []
    waiter = threading.Thread(
        target=lambda: result.append(backend.claim(["default"], lease=LEASE, timeout=30)),
        name="waiter",
    )
    waiter.start()
    time.sleep(0.3)  # let it wait

    start = time.monotonic()
    backend.interrupt()
    waiter.join(5)

    assert not waiter.is_alive()
    assert result == [[]]
    assert time.monotonic() - start < 1
    assert backend.claim(["default"], lease=LEASE, timeout=0.2) == []  # no lasting effect


def assert_woken_by_notify(waiting: SQLBackend, other: SQLBackend, *, idle_limit: int = 3) -> None:
    """A claim waiting on *waiting* sends no more than *idle_limit* queries while
    idle, and wakes at once when *other* enqueues a job."""
    claimed: list[Any] = []
    waiter = threading.Thread(
        target=lambda: claimed.extend(waiting.claim(["default"], lease=LEASE, timeout=30)),
        name="waiter",
    )
    with counted_statements(waiting) as statements:  # on both pools
        waiter.start()
        try:
            time.sleep(1.0)  # long enough for a polling claim to have polled many times
            idle_statements = len(statements)
            enqueued_at = time.monotonic()
            job, _ = other.enqueue(make_record())
            waiter.join(10)
            woken_after = time.monotonic() - enqueued_at
        finally:
            waiting.interrupt()
            waiter.join(10)

    assert [claim.record.id for claim in claimed] == [job.id]
    assert woken_after < 1.0
    assert idle_statements <= idle_limit, statements  # one claim and one look ahead, no polling
    assert waiting.finish(job.id, claimed[0].token, DONE)


def test_postgres_claim_waits_for_notify_and_wakes_on_another_backends_enqueue(
    postgres_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    waiting = open_backend(postgres_url)
    other = open_backend(postgres_url)
    assert waiting.blocking is True

    assert_woken_by_notify(waiting, other)


def test_postgres_claim_after_one_that_left_no_job_due_waits_without_a_look(
    postgres_url: str, open_backend: Callable[..., SQLBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_waiting, "DRAINED_FOR", 60.0)  # however slow the machine
    backend = open_backend(postgres_url)
    job, _ = backend.enqueue(make_record())
    later, _ = backend.enqueue(make_record(run_at=backend.now() + timedelta(seconds=0.3)))
    (first,) = backend.claim(["default"], lease=LEASE, limit=4, timeout=5)
    assert first.record.id == job.id

    with counted_statements(backend) as statements:
        (second,) = backend.claim(["default"], lease=LEASE, limit=4, timeout=10)

    # The first claim told when the next job is due: the second waited for it
    # at once, then took it, without a claim and a look ahead before waiting.
    assert second.record.id == later.id
    assert len(statements) == 1, statements


def test_postgres_claim_after_one_that_left_no_job_due_takes_a_job_enqueued_meanwhile(
    postgres_url: str, open_backend: Callable[..., SQLBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, other, _ = trusting_backends(postgres_url, open_backend, monkeypatch)
    job, _ = backend.enqueue(make_record())
    (first,) = backend.claim(["default"], lease=LEASE, limit=4, timeout=5)
    assert first.record.id == job.id
    new, _ = other.enqueue(make_record())

    claims = claim_interrupted_after(20, backend, limit=4, timeout=60)

    assert [claim.record.id for claim in claims] == [new.id]


def claim_interrupted_after(seconds: float, backend: SQLBackend, **options: Any) -> list[Claim]:
    """Claim from ``default``; a claim that missed its wake-up is interrupted after *seconds*."""
    stop = threading.Timer(seconds, backend.interrupt)
    stop.start()
    try:
        return backend.claim(["default"], lease=LEASE, **options)
    finally:
        stop.cancel()


def trusting_backends(
    postgres_url: str, open_backend: Callable[..., SQLBackend], monkeypatch: pytest.MonkeyPatch
) -> tuple[SQLBackend, SQLBackend, sql_listener.Listener]:
    """Two backends, the first listening, both trusting a drained claim for a minute."""
    monkeypatch.setattr(sql_waiting, "DRAINED_FOR", 60.0)
    return listening_backends(postgres_url, open_backend)


def listening_backends(
    postgres_url: str, open_backend: Callable[..., SQLBackend]
) -> tuple[SQLBackend, SQLBackend, sql_listener.Listener]:
    """Two backends on one PostgreSQL database, and the listener of the first."""
    backend = open_backend(postgres_url)
    listener = backend._listener
    assert listener is not None
    return backend, open_backend(postgres_url), listener


def test_postgres_claim_waiting_on_the_word_of_a_drained_one_hears_its_listener_break(
    postgres_url: str, open_backend: Callable[..., SQLBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, other, listener = trusting_backends(postgres_url, open_backend, monkeypatch)
    job, _ = other.enqueue(make_record())
    (first,) = backend.claim(["default"], lease=LEASE, limit=4, timeout=5)
    assert first.record.id == job.id
    claims: list[Claim] = []
    waiter = threading.Thread(
        target=lambda: claims.extend(backend.claim(["default"], lease=LEASE, timeout=30)),
        name="waiter",
    )
    stop = threading.Timer(5, backend.interrupt)  # a waiter that missed the break waits this
    waiter.start()
    stop.start()
    try:
        time.sleep(0.2)  # the waiter waits at once, on the first claim's word
        # The server ends the listener's session: a job enqueued now notifies no one here.
        session = listener._run.connection.info.backend_pid  # type: ignore[union-attr]
        admin = sa.create_engine(postgres_url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                connection.exec_driver_sql(f"SELECT pg_terminate_backend({int(session)})")
        finally:
            admin.dispose()
        new, _ = other.enqueue(make_record())
        waiter.join(10)
    finally:
        stop.cancel()
        backend.interrupt()
        waiter.join(10)

    assert [claim.record.id for claim in claims] == [new.id]


def test_the_packed_record_function_leaves_sqlalchemys_json_array_alone(
    backend_url_for: Callable[[str], str], open_backend: Callable[..., SQLBackend]
) -> None:
    open_backend(backend_url_for("sqlite"))  # the SQL backend is loaded
    statement = sa.select(sa.func.json_array(sa.literal(1)))
    assert "json_build_array" not in str(statement.compile(dialect=postgresql.dialect()))


class SlowToListen:
    """A listener connection whose ``LISTEN`` of *channel* waits until *gate* opens."""

    def __init__(
        self, connection: Any, gate: threading.Event, channel: str = sql_listener.CHANNEL
    ) -> None:
        self._connection = connection
        self._gate = gate
        self._channel = channel
        #: Set once a ``LISTEN`` waits at the gate.
        self.held = threading.Event()

    def execute(self, command: str, *args: Any, **kwargs: Any) -> Any:
        if f"LISTEN {self._channel}" in (part.strip() for part in command.split(";")):
            self.held.set()
            assert self._gate.wait(10)
        return self._connection.execute(command, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def test_postgres_claim_that_ended_before_its_listen_vouches_for_nothing(
    postgres_url: str, open_backend: Callable[..., SQLBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    backend, other, listener = trusting_backends(postgres_url, open_backend, monkeypatch)
    gate = threading.Event()
    connect = listener._connect
    monkeypatch.setattr(listener, "_connect", lambda: SlowToListen(connect(), gate))
    # A watcher keeps the listener connected, to job changes only.
    watched, _ = other.enqueue(make_record(queue="elsewhere"))
    (held,) = other.claim(["elsewhere"], lease=LEASE)
    watcher = threading.Thread(target=lambda: backend.wait_finished(watched.id, 30), name="watcher")
    watcher.start()
    try:
        wait_until(lambda: listener.listens(sql_listener.EVENTS_CHANNEL), timeout=10)
        # This claim ends before its LISTEN is answered: its look found no job,
        # but a job enqueued now notifies no one here.
        assert backend.claim(["default"], lease=LEASE, timeout=0.2) == []
        assert not listener.listens(sql_listener.CHANNEL)
        job, _ = other.enqueue(make_record())
        gate.set()
        wait_until(lambda: listener.listens(sql_listener.CHANNEL), timeout=10)

        claims = claim_interrupted_after(5, backend, timeout=30)  # if it trusted the look
    finally:
        gate.set()
        assert other.finish(watched.id, held.token, DONE)
        watcher.join(10)

    assert [claim.record.id for claim in claims] == [job.id]


def test_postgres_a_claim_that_waits_while_the_listener_connects_is_heard_once_it_listens(
    postgres_url: str, open_backend: Callable[..., SQLBackend], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Unasked, the listener looks at the channels wanted again only after a
    # quarter of LISTEN_IDLE: here far longer than the test waits.
    monkeypatch.setattr(sql_listener, "LISTEN_IDLE", 40.0)
    listener = listening_backends(postgres_url, open_backend)[2]
    gate = threading.Event()
    connect = listener._connect
    connections: list[SlowToListen] = []

    def slow_connect() -> SlowToListen:
        connections.append(SlowToListen(connect(), gate, channel=sql_listener.EVENTS_CHANNEL))
        return connections[-1]

    monkeypatch.setattr(listener, "_connect", slow_connect)
    watching = threading.Thread(
        target=listener.enter, args=(20,), kwargs={"channel": sql_listener.EVENTS_CHANNEL}
    )
    claiming = threading.Thread(target=listener.enter, args=(20,))
    watching.start()
    try:
        # The listener connected and chose its channels before the claim came.
        wait_until(lambda: connections and connections[0].held.is_set(), timeout=10)
        claiming.start()
        wait_until(lambda: listener._waiters[sql_listener.CHANNEL] == 1, timeout=10)
        gate.set()

        wait_until(lambda: listener.listens(sql_listener.CHANNEL), timeout=5)
        assert listener.listens(sql_listener.EVENTS_CHANNEL)
    finally:
        gate.set()
        watching.join(20)
        if claiming.ident is not None:
            claiming.join(20)
        listener.leave(channel=sql_listener.EVENTS_CHANNEL)
        listener.leave()


def test_postgres_a_busy_listener_drops_a_channel_nobody_waits_for(
    postgres_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    _, other, listener = listening_backends(postgres_url, open_backend)
    assert listener.enter(10, channel=sql_listener.EVENTS_CHANNEL)
    listener.leave(channel=sql_listener.EVENTS_CHANNEL)  # the last watcher is gone
    assert listener.enter(10)  # a claim waits on
    stop = threading.Event()

    def submit_often() -> None:
        # A notification of a new job every 50 ms: the listener is never idle.
        while not stop.wait(0.05):
            other.enqueue(make_record(queue="elsewhere"))

    submitter = threading.Thread(target=submit_often, name="submitter")
    submitter.start()
    try:
        wait_until(
            lambda: not listener.listens(sql_listener.EVENTS_CHANNEL),
            timeout=sql_listener.LISTEN_IDLE + 4,
        )
        assert listener.listens(sql_listener.CHANNEL)
    finally:
        stop.set()
        submitter.join(10)
        listener.leave()


def test_postgres_a_waiting_claim_hears_of_new_jobs_only_and_a_watcher_of_changes(
    postgres_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    backend, other, listener = listening_backends(postgres_url, open_backend)
    waiter = threading.Thread(
        target=lambda: backend.claim(["default"], lease=LEASE, timeout=30), name="waiter"
    )
    waiter.start()
    try:
        wait_until(lambda: listener.listens(sql_listener.CHANNEL), timeout=10)
        # A worker is not woken by every change of every job.
        assert not listener.listens(sql_listener.EVENTS_CHANNEL)

        job, _ = other.enqueue(make_record(queue="elsewhere"))
        (claim,) = other.claim(["elsewhere"], lease=LEASE)
        finished: list[Any] = []
        watcher = threading.Thread(
            target=lambda: finished.append(backend.wait_finished(job.id, 30)), name="watcher"
        )
        watcher.start()
        wait_until(lambda: listener.listens(sql_listener.EVENTS_CHANNEL), timeout=10)
        assert other.finish(job.id, claim.token, DONE)
        watcher.join(10)
    finally:
        backend.interrupt()
        waiter.join(10)

    assert finished[0] is not None
    assert finished[0].status is JobStatus.COMPLETED
    assert listener.listens(sql_listener.CHANNEL)  # still, for the next claims


def test_a_waiting_sqlite_claim_reads_nothing_until_another_connection_commits(
    backend_url_for: Callable[[str], str], open_backend: Callable[..., SQLBackend]
) -> None:
    waiting = open_backend(backend_url_for("sqlite"))
    other = open_backend(backend_url_for("sqlite"))
    assert waiting.blocking is False

    # The first look, a read (BEGIN, SELECT), and nothing until the enqueue.
    assert_woken_by_notify(waiting, other, idle_limit=2)


@contextlib.contextmanager
def sqlite_write_lock(backend: SQLBackend) -> Iterator[None]:
    """SQLite's write lock on *backend*'s file, held by another connection."""
    backend.setup()
    holder = sqlite3.connect(backend.engine.url.database or "", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        yield
    finally:
        holder.close()  # rolls back


def returns_while_sqlite_is_locked(backend: SQLBackend, call: Callable[[], Any]) -> list[Any]:
    """What *call* returns while another connection holds the write lock (nothing if it waits)."""
    returned: list[Any] = []
    caller = threading.Thread(target=lambda: returned.append(call()), name="caller")
    with sqlite_write_lock(backend):
        caller.start()
        caller.join(5)  # a write would wait for the lock: SQLite's busy timeout is 10 s
        before_release = list(returned)
    caller.join()
    return before_release


def test_a_waiting_sqlite_claim_that_finds_nothing_takes_no_write_lock(
    backend_url_for: Callable[[str], str], open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(backend_url_for("sqlite"))
    backend.enqueue(make_record(run_at=backend.now() + timedelta(hours=1)))

    claim = lambda: backend.claim(["default"], lease=LEASE, timeout=0.2)  # noqa: E731
    assert returns_while_sqlite_is_locked(backend, claim) == [[]]


def test_sqlite_upkeep_with_nothing_to_do_takes_no_write_lock(
    backend_url_for: Callable[[str], str], open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(backend_url_for("sqlite"))
    job, _ = backend.enqueue(make_record())
    assert backend.claim(["default"], lease=LEASE)  # running, its lease far from its end
    done, _ = backend.enqueue(make_record())
    [other] = backend.claim(["default"], lease=LEASE)
    assert backend.finish(done.id, other.token, DONE)

    recover = lambda: backend.recover_expired(max_recoveries=3)  # noqa: E731
    assert returns_while_sqlite_is_locked(backend, recover) == [[]]
    assert returns_while_sqlite_is_locked(backend, backend.purge_expired) == [0]
    running = backend.get(job.id)
    assert running is not None
    assert running.status is JobStatus.IN_PROGRESS
    assert backend.get(done.id) is not None


def test_a_waiting_sqlite_claim_takes_a_job_of_another_backend_once_it_is_due(
    backend_url_for: Callable[[str], str], open_backend: Callable[..., SQLBackend]
) -> None:
    waiting = open_backend(backend_url_for("sqlite"))
    other = open_backend(backend_url_for("sqlite"))
    claimed: list[Any] = []
    waiter = threading.Thread(
        target=lambda: claimed.extend(waiting.claim(["default"], lease=LEASE, timeout=10)),
        name="waiter",
    )
    waiter.start()
    try:
        time.sleep(0.2)  # waiting, with nothing due
        run_at = other.now() + timedelta(seconds=0.5)
        job, _ = other.enqueue(make_record(run_at=run_at))
        waiter.join(10)
    finally:
        waiting.interrupt()
        waiter.join(10)

    # No commit happens after the enqueue: the read it caused tells when to look again.
    assert [claim.record.id for claim in claimed] == [job.id]
    assert claimed[0].record.started_at is not None
    assert claimed[0].record.started_at >= run_at
    assert claimed[0].record.started_at < run_at + timedelta(seconds=1)


def test_sqlite_changes_tell_a_commit_of_any_other_connection(
    backend_url_for: Callable[[str], str], open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(backend_url_for("sqlite"))
    changes = dialects.sqlite_changes(backend.engine)
    assert changes is not None
    try:
        assert changes.has_changed()  # the first look
        assert not changes.has_changed()
        backend.get(new_job_id())  # a read commits nothing
        assert not changes.has_changed()
        backend.enqueue(make_record())
        assert changes.has_changed()
        assert not changes.has_changed()
    finally:
        changes.close()


# -- outages -----------------------------------------------------------------


def test_an_unreachable_server_raises_backend_unavailable_promptly(
    server_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    url = sa.make_url(server_url).set(port=free_port()).render_as_string(hide_password=False)

    start = time.monotonic()
    backend = open_backend(url, clear=False)
    calls: list[Callable[[], object]] = [
        backend.setup,
        lambda: backend.enqueue(make_record()),
        lambda: backend.claim(["default"], lease=LEASE),
        lambda: backend.claim(["default"], lease=LEASE, timeout=0.5),
        lambda: backend.get(new_job_id()),
        backend.counts,
        backend.now,
        backend.purge_expired,
    ]
    for call in calls:
        with pytest.raises(BackendUnavailable, match="unavailable"):
            call()

    assert time.monotonic() - start < 10


class Relay:
    """Forwards TCP connections from a loopback port to a server; can be cut and restored."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._open = False
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        with self._lock:
            self._open = True
            self._sockets.append(listener)
        self._spawn(self._accept, listener)

    def cut(self) -> None:
        """Close the port and every relayed connection, as a dead server would."""
        with self._lock:
            self._open = False  # a connection accepted meanwhile is closed at once
            sockets, self._sockets = self._sockets, []
            threads, self._threads = self._threads, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in threads:
            thread.join(5)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name="relay", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                with self._lock:
                    if not self._open:
                        client.close()
                        return
                    server = socket.create_connection(self.target)
                    self._sockets += [client, server]
                self._spawn(self._pump, client, server)
                self._spawn(self._pump, server, client)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def relay(server_url: str) -> Iterator[Relay]:
    """A relay to the server of *server_url*, started; cut after the test."""
    url = sa.make_url(server_url)
    relay = Relay((url.host or "127.0.0.1", url.port or 5432))
    relay.start()
    yield relay
    relay.cut()


def test_the_same_backend_works_again_once_the_server_is_back(
    server_url: str, relay: Relay, open_backend: Callable[..., SQLBackend]
) -> None:
    direct = open_backend(server_url)
    url = sa.make_url(server_url).set(host="127.0.0.1", port=relay.port)
    backend = open_backend(url.render_as_string(hide_password=False), clear=False)
    job, _ = backend.enqueue(make_record())
    assert backend.get(job.id) is not None

    relay.cut()
    start = time.monotonic()
    with pytest.raises(BackendUnavailable):
        backend.get(job.id)
    with pytest.raises(BackendUnavailable):
        backend.claim(["default"], lease=LEASE, timeout=0.2)
    assert time.monotonic() - start < 10
    direct.enqueue(make_record())  # the server itself is fine

    relay.start()

    assert backend.get(job.id) == direct.get(job.id)
    claims = backend.claim(["default"], lease=LEASE, limit=10, timeout=5)
    assert len(claims) == 2
    assert all(backend.finish(claim.record.id, claim.token, DONE) for claim in claims)


@pytest.mark.parametrize("server_url", ["postgresql"], indirect=True)
def test_postgres_listening_resumes_once_the_server_is_back(
    server_url: str, relay: Relay, open_backend: Callable[..., SQLBackend]
) -> None:
    direct = open_backend(server_url)
    url = sa.make_url(server_url).set(host="127.0.0.1", port=relay.port)
    backend = open_backend(url.render_as_string(hide_password=False), clear=False)
    outcome: list[object] = []

    def wait_through_the_outage() -> None:
        try:
            outcome.append(backend.claim(["default"], lease=LEASE, timeout=30))
        except BackendUnavailable as error:
            outcome.append(error)

    waiter = threading.Thread(target=wait_through_the_outage, name="waiter")
    waiter.start()
    listener = backend._listener
    assert listener is not None
    wait_until(lambda: listener.is_listening, timeout=10)

    relay.cut()  # the waiting claim falls back to polling, which fails
    waiter.join(10)
    assert not waiter.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], BackendUnavailable)
    relay.start()

    wait_until(lambda: backend.claim(["default"], lease=LEASE, timeout=0.5) == [], timeout=10)
    waiter = threading.Thread(
        target=lambda: backend.claim(["default"], lease=LEASE, timeout=0.5), name="waiter"
    )
    waiter.start()
    wait_until(lambda: listener.is_listening, timeout=10)  # it has reconnected
    waiter.join(10)
    assert_woken_by_notify(backend, direct)


# -- fewer round trips ---------------------------------------------------------


@contextlib.contextmanager
def counted_statements(backend: SQLBackend) -> Iterator[list[str]]:
    """The statements *backend* sends meanwhile (an ``executemany`` counts once per batch)."""
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    with listening(backend, "before_cursor_execute", count):
        yield statements


@contextlib.contextmanager
def listening(backend: SQLBackend, event: str, listener: Callable[..., None]) -> Iterator[None]:
    """*listener* on *event* of every engine of *backend* (its autocommit pool too)."""
    engines = [backend.engine] if backend._twin is None else [backend.engine, backend._twin]
    for engine in engines:
        sa.event.listen(engine, event, listener)
    try:
        yield
    finally:
        for engine in engines:
            sa.event.remove(engine, event, listener)


def test_an_operation_of_one_statement_costs_no_commit_on_a_server(
    server_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(server_url)
    commits: list[object] = []
    job, _ = backend.enqueue(make_record())
    (claim,) = backend.claim(["default"], lease=LEASE)

    with listening(backend, "commit", commits.append):
        backend.enqueue(make_record())
        assert backend.get(job.id) == claim.record
        assert backend.heartbeat(job.id, claim.token, lease=LEASE) is LeaseState.HELD
        assert backend.finish(job.id, claim.token, DONE)
        assert backend.counts()[JobStatus.PENDING] == 1

    assert commits == []  # each statement commits itself: one round trip, not two
    done = backend.get(job.id)
    assert done is not None
    assert done.status is JobStatus.COMPLETED


def test_an_apps_own_mysql_engine_keeps_its_settings(
    backend_url_for: Callable[[str], str],
) -> None:
    engine = sa.create_engine(backend_url_for("mysql"), poolclass=sa.NullPool)
    with engine.connect() as connection:
        level = connection.get_isolation_level()
    backend = SQLBackend(engine)
    try:
        job, _ = backend.enqueue(make_record())
        (claim,) = backend.claim(["default"], lease=LEASE)
        assert backend.finish(job.id, claim.token, DONE)
        stored = backend.get(job.id)
        assert stored is not None
        assert stored.status is JobStatus.COMPLETED
        assert backend.engine is engine  # no second pool, no change of isolation
        with engine.connect() as connection:
            assert connection.get_isolation_level() == level
    finally:
        backend.clear()
        backend.close()
        engine.dispose()


def test_hot_reads_get_each_record_as_one_column_and_every_value_exactly(
    sql_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(sql_url)
    stored, _ = backend.enqueue(
        make_record(
            args=["ünïcode 😀", 'a "quote" \\ and\nline'], kwargs={"n": 2**53 + 1}, timeout=2.0
        )
    )
    (claim,) = backend.claim(["default"], lease=LEASE)
    assert claim.record.args == stored.args
    assert claim.record.kwargs == stored.kwargs
    assert claim.record.created_at == stored.created_at
    assert claim.record.timeout == 2.0
    progress = Progress(percentage=100 / 3, message="½ done", items_processed=2**40, total_items=3)
    assert backend.progress(claim.record.id, claim.token, progress, lease=LEASE) is LeaseState.HELD
    described: list[int] = []

    def describe(connection: Any, cursor: Any, *args: Any) -> None:
        if cursor.description is not None:  # not SQLite's BEGIN
            described.append(len(cursor.description))

    with listening(backend, "after_cursor_execute", describe):
        got = backend.get(claim.record.id)

    assert got is not None
    assert got.args == stored.args
    assert got.kwargs == stored.kwargs
    assert got.percentage == 100 / 3
    assert got.items_processed == 2**40
    assert got.message == "½ done"
    assert got.token == claim.token
    assert got.created_at == stored.created_at
    assert got.created_at.tzinfo is not None
    assert got.started_at == claim.record.started_at
    assert isinstance(got.timeout, float)
    assert got.timeout == 2.0
    assert isinstance(got.percentage, float)
    assert got.cancel_requested is False
    # One column on the servers, whose drivers make an object of each column of a result.
    assert described == ([len(jobs_table.c)] if backend.engine.dialect.name == "sqlite" else [1])


def kill_other_sessions(url: str) -> None:
    """End, on the server, every session of *url*'s database but the caller's, and wait for it."""
    # Autocommit: PostgreSQL shows a transaction one snapshot of its sessions.
    admin = sa.create_engine(url, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    is_postgres = admin.dialect.name == "postgresql"
    others = (
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid()"
        if is_postgres
        else "SELECT id FROM information_schema.processlist WHERE db = DATABASE()"
        " AND id <> CONNECTION_ID()"
    )
    try:
        with admin.connect() as connection:
            for (session,) in connection.exec_driver_sql(others).all():
                if is_postgres:
                    connection.exec_driver_sql(f"SELECT pg_terminate_backend({int(session)})")
                else:
                    with contextlib.suppress(sa.exc.DBAPIError):  # it may have just ended
                        connection.exec_driver_sql(f"KILL {int(session)}")
            wait_until(lambda: not connection.exec_driver_sql(others).all(), timeout=10)
    finally:
        admin.dispose()


def test_pooled_connections_the_server_ended_are_replaced_without_an_error(
    server_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(server_url)
    started = threading.Barrier(4)

    def use_connections() -> None:  # several at once, so each pool holds several
        started.wait(10)
        backend.enqueue(make_record())  # from the autocommit pool
        started.wait(10)
        backend.request_cancel("no-such-job")  # a transaction: from the other one

    users = [threading.Thread(target=use_connections, name="user") for _ in range(4)]
    for user in users:
        user.start()
    for user in users:
        user.join(10)
    for pool in {engine.pool for engine in (backend.engine, backend._autocommit) if engine}:
        assert pool.checkedin() >= 2  # type: ignore[attr-defined]

    kill_other_sessions(server_url)  # as a server restart or an idle timeout would

    job, _ = backend.enqueue(make_record())
    assert backend.get(job.id) == job
    claims = backend.claim(["default"], lease=LEASE, limit=10)
    assert len(claims) == 5
    assert backend.finish_many([(c.record.id, c.token, DONE) for c in claims]) == [True] * 5


def test_enqueue_many_stores_every_job_in_few_statements_in_order(
    sql_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(sql_url)
    base = backend.now()
    records = [
        make_record(created_at=base - timedelta(seconds=1) + timedelta(microseconds=n))
        for n in range(250)
    ]
    later = make_record(run_at=base + timedelta(hours=1))

    with counted_statements(backend) as statements:
        backend.enqueue_many([*records, later])

    assert len(statements) <= 4, statements  # the clock, and 100 rows per INSERT at most
    assert backend.get(records[7].id) == records[7]
    claims = backend.claim(["default"], lease=LEASE, limit=300)
    assert [claim.record.id for claim in claims] == [record.id for record in records]
    assert backend.get(later.id).status is JobStatus.PENDING  # type: ignore[union-attr]


def test_enqueue_many_leaves_a_stored_job_as_it_is_and_stores_the_new_ones(
    sql_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(sql_url)
    taken, _ = backend.enqueue(make_record())
    (claim,) = backend.claim(["default"], lease=LEASE)
    batch = [make_record() for _ in range(150)]

    backend.enqueue_many([*batch, make_record(id=taken.id), batch[3]])

    assert backend.get(taken.id) == claim.record  # still running, unchanged
    assert backend.counts()[JobStatus.PENDING] == 150


def test_enqueue_many_stores_none_when_one_row_is_refused(
    server_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(server_url)
    batch = [make_record() for _ in range(150)]  # two INSERTs; the second one fails
    refused = make_record(task="t" * 300)  # longer than the column allows

    with pytest.raises(sa.exc.DBAPIError):
        backend.enqueue_many([*batch, refused])

    assert backend.counts()[JobStatus.PENDING] == 0


def test_enqueue_many_refuses_keyed_jobs_and_stores_nothing(
    sql_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(sql_url)

    with pytest.raises(ValueError, match="unique or an idempotency key"):
        backend.enqueue_many([make_record(), make_record(unique_key="tests.task")])

    assert backend.counts()[JobStatus.PENDING] == 0


def test_finish_many_writes_each_outcome_in_one_update(
    sql_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(sql_url)
    for _ in range(4):
        backend.enqueue(make_record())
    first, second, third, fourth = backend.claim(["default"], lease=LEASE, limit=4)
    failed = Outcome(JobStatus.FAILED, error="Internal error: boom", error_type=ErrorType.SYSTEM)
    reported = Outcome(
        JobStatus.COMPLETED, result=[1, 2], progress=Progress(percentage=100.0, message="all")
    )

    with counted_statements(backend) as statements:
        answers = backend.finish_many(
            [
                (first.record.id, first.token, DONE),
                (second.record.id, second.token, failed),
                (third.record.id, "not-its-token", DONE),
                (fourth.record.id, fourth.token, reported),
            ]
        )

    assert answers == [True, True, False, True]
    assert len(statements) <= 3, statements  # (MariaDB: lock), update, log the progress
    done, broken, still, logged = (
        summary(backend.get(claim.record.id)) for claim in (first, second, third, fourth)
    )
    assert done == (JobStatus.COMPLETED, {"ok": True}, None, None, None)
    assert broken == (JobStatus.FAILED, None, "Internal error: boom", None, None)
    assert still == (JobStatus.IN_PROGRESS, None, None, third.token, None)
    assert logged == (JobStatus.COMPLETED, [1, 2], None, None, "all")
    assert backend.finish(third.record.id, third.token, DONE)
    with backend.engine.connect() as connection:
        log = connection.execute(sa.select(job_progress_table.c.job_id)).scalars().all()
    assert log == [fourth.record.id]


def summary(record: JobRecord | None) -> tuple[Any, ...]:
    """What a finish writes, of *record*: status, result, error, token and message."""
    assert record is not None
    return (record.status, record.result, record.error, record.token, record.message)


def test_finish_many_refuses_every_token_that_lost_its_job(
    sql_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    backend = open_backend(sql_url)
    backend.enqueue(make_record())
    backend.enqueue(make_record())
    first, second = backend.claim(["default"], lease=LEASE, limit=2)
    assert backend.finish(first.record.id, first.token, DONE)

    answers = backend.finish_many(
        [(first.record.id, first.token, DONE), (second.record.id, "lost", DONE)]
    )

    assert answers == [False, False]
    assert backend.get(second.record.id).status is JobStatus.IN_PROGRESS  # type: ignore[union-attr]


def assert_waits_without_polling(
    waiting: SQLBackend, wait: Callable[[], Any], change: Callable[[], object]
) -> Any:
    """*wait* on *waiting* sends no queries while nothing changes, and returns once *change* ran."""
    returned: list[Any] = []
    with counted_statements(waiting) as statements:
        waiter = threading.Thread(target=lambda: returned.append(wait()), name="waiter")
        waiter.start()
        try:
            time.sleep(1.0)  # long enough for a polling wait to have polled many times
            idle_statements = len(statements)
            change()
            waiter.join(10)
        finally:
            waiter.join(30)
    assert not waiter.is_alive()
    assert idle_statements <= 2, statements  # the first read, no polling
    return returned[0]


def test_postgres_wait_finished_is_woken_by_the_finish(
    postgres_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    waiting = open_backend(postgres_url)
    worker = open_backend(postgres_url)
    job, _ = worker.enqueue(make_record())
    (claim,) = worker.claim(["default"], lease=LEASE)

    finished = assert_waits_without_polling(
        waiting,
        lambda: waiting.wait_finished(job.id, timeout=30),
        lambda: worker.finish(job.id, claim.token, DONE),
    )

    assert finished.status is JobStatus.COMPLETED


def test_postgres_wait_changed_is_woken_by_progress_but_not_by_a_heartbeat(
    postgres_url: str, open_backend: Callable[..., SQLBackend]
) -> None:
    waiting = open_backend(postgres_url)
    worker = open_backend(postgres_url)
    job, _ = worker.enqueue(make_record())
    (claim,) = worker.claim(["default"], lease=LEASE)
    claimed = waiting.get(job.id)
    assert claimed is not None

    def heartbeat_then_progress() -> None:
        worker.heartbeat(job.id, claim.token, lease=LEASE)
        time.sleep(0.3)
        worker.progress(job.id, claim.token, Progress(percentage=50.0), lease=LEASE)

    changed = assert_waits_without_polling(
        waiting,
        lambda: waiting.wait_changed(job.id, claimed.updated_at, timeout=30),
        heartbeat_then_progress,
    )

    assert changed.percentage == 50.0
    assert changed.updated_at > claimed.updated_at
