"""The TickStock example: its data-maintenance jobs, submitted and polled over HTTP.

Each app is configured the way TickStock is, through its own environment
variable names. The tests marked with :data:`ON_EACH_STORE` run on the
default SQLite store and, where the servers are up, with the data and the
jobs in PostgreSQL or MariaDB, and with the jobs in Redis.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from conftest import assert_error, server_down, wait_until
from examples.tickstock import create_app, db, jobs, tasks
from examples.tickstock.config import DEFAULTS
from examples.tickstock.models import DailyBar, Etf, EtfHolding, Stock
from examples.tickstock.offline_data import EXTRA_SYMBOLS, HOLDINGS, PROFILES, daily_bar
from examples.tickstock.provider_stub import create_stub_app, serving
from flask_jobrunner import BackendUnavailable, job_progress

ROOT = Path(__file__).resolve().parents[1]
STORES = ["sqlite", "postgresql", "mysql", "redis"]
ON_EACH_STORE = pytest.mark.parametrize("store", STORES, indirect=True)
FINAL = {"completed", "failed", "cancelled"}
ALL_SYMBOLS = sorted({symbol for holdings in HOLDINGS.values() for symbol, _ in holdings})


@pytest.fixture
def store(request: pytest.FixtureRequest) -> str:
    """Where the app keeps its data and jobs: SQLite unless a test asks for more."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def tickstock_env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    store: str,
    backend_url_for: Callable[[str], str],
) -> dict[str, str]:
    """TickStock's variables for *store*, set in the environment as a deployment sets them."""
    for name in DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TICKSTOCK_ENV_FILE", str(tmp_path / "no.env"))
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'tickstock.db'}",
        "JOB_STORE_BACKEND": "database",
        "JOB_PROGRESS_UPDATE_INTERVAL": "0",
        "OFFLINE_DATA_LATENCY_SECONDS": "0",
    }
    if store in ("postgresql", "mysql"):
        env["DATABASE_URL"] = backend_url_for(store)
    elif store == "redis":
        env.update(JOB_STORE_BACKEND="redis", REDIS_URL=backend_url_for("redis"))
        # From the environment, so a worker process uses the same private keys.
        monkeypatch.setenv("FLASK_JOBRUNNER_REDIS_PREFIX", f"tickstock-test:{uuid.uuid4().hex}")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def make_tickstock(store: str, tickstock_env: dict[str, str]) -> Iterator[Callable[..., Flask]]:
    """Creates TickStock apps with extra config; stops their jobs and empties their stores after."""
    apps: list[Flask] = []

    def make(**config: Any) -> Flask:
        # No scheduler: between 02:00 and 03:00 New York time its catch-up would
        # submit the nightly unique job that these tests submit themselves.
        settings = {"TESTING": True, "JOBRUNNER_SHUTDOWN_TIMEOUT": 5, "JOBRUNNER_SCHEDULER": False}
        app = create_app({**settings, **config})
        apps.append(app)
        try:
            with app.app_context():
                jobs.list(limit=1)
        except BackendUnavailable as error:
            server_down(store, error)
        return app

    yield make
    for app in apps:
        jobs.shutdown(app, timeout=10)
        backend = app.extensions["jobrunner"].backend
        with contextlib.suppress(BackendUnavailable):
            backend.clear()
        backend.close()
        with app.app_context():
            db.drop_all()  # the PostgreSQL database is shared by the whole test run
            db.engine.dispose()


@pytest.fixture
def tickstock(make_tickstock: Callable[..., Flask]) -> Flask:
    """A TickStock app on the test's store, with the offline provider."""
    return make_tickstock()


def poll(
    client: FlaskClient, location: str, headers: dict[str, str] | None = None, timeout: float = 60
) -> tuple[dict[str, Any], list[float]]:
    """Poll a job's URL until it ends; returns its last document and the percentages seen."""
    seen: list[float] = []

    def finished() -> dict[str, Any] | None:
        response = client.get(location, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        document: dict[str, Any] = response.get_json()
        if document.get("percentage") is not None:
            seen.append(document["percentage"])
        return document if document["status"] in FINAL else None

    return wait_until(finished, timeout=timeout, interval=0.02), seen


def run_job(client: FlaskClient, job: str, body: Any = None, **options: Any) -> dict[str, Any]:
    """Submit a data-maintenance job over HTTP and poll it to the end; returns its document."""
    response = client.post(f"/api/data-maintenance/{job}", json=body, **options)
    assert response.status_code == 202, response.get_data(as_text=True)
    document, _ = poll(client, response.headers["Location"], options.get("headers"))
    return document


@contextlib.contextmanager
def progress_reports(app: Flask) -> Iterator[list[dict[str, Any]]]:
    """The status documents of every stored progress report, from the ``job_progress`` signal."""
    reports: list[dict[str, Any]] = []
    lock = threading.Lock()

    def record(sender: Flask, job: Any, **extra: Any) -> None:
        with lock:
            reports.append(job.to_dict())

    with job_progress.connected_to(record, sender=app):
        yield reports


def stored_stock(symbol: str) -> Stock:
    """The stored row of *symbol*, which must exist."""
    stock = db.session.get(Stock, symbol)
    assert stock is not None, f"{symbol} is not stored"
    return stock


def count(model: Any) -> int:
    """Rows in *model*'s table."""
    return int(db.session.scalar(select(func.count()).select_from(model)) or 0)


# -- the jobs, end to end ---------------------------------------------------------


@ON_EACH_STORE
def test_load_etf_holdings_loads_every_etf_with_progress_per_symbol(tickstock: Flask) -> None:
    client = tickstock.test_client()
    with progress_reports(tickstock) as reports:
        response = client.post("/api/data-maintenance/load-etf-holdings")
        assert response.status_code == 202
        assert response.headers["Retry-After"] == "2"  # CLIENT_RETRY_AFTER_INITIAL
        document, percentages = poll(client, response.headers["Location"])

    assert document["status"] == "completed", document
    total = len(ALL_SYMBOLS)
    assert document["result"]["holdings"] == {"SPY": 250, "QQQ": 100, "DIA": 30}
    assert document["result"]["stocks"] == total
    assert document["items_processed"] == document["total_items"] == total
    assert document["message"] == f"Processed {total} of {total} symbols"
    done = [report["items_processed"] for report in reports]
    assert done == sorted(done)
    assert done[-1] == total
    assert reports[-1]["message"] == f"Processed {total} of {total} symbols"
    assert percentages == sorted(percentages)
    with tickstock.app_context():
        assert count(Stock) == total
        assert count(EtfHolding) == 380
        assert stored_stock("BRK.B").name == "Berkshire Hathaway Inc. Class B"
        for etf in db.session.scalars(select(Etf)):
            assert sum(holding.weight for holding in etf.holdings) == pytest.approx(1, abs=1e-4)
            assert etf.holdings[0].weight >= etf.holdings[-1].weight


@ON_EACH_STORE
def test_backfill_add_and_purge_maintain_bars_and_symbols(tickstock: Flask) -> None:
    client = tickstock.test_client()
    assert run_job(client, "load-etf-holdings", {"etfs": ["DIA"]})["status"] == "completed"

    backfill = run_job(
        client,
        "backfill-daily-bars",
        {"symbols": ["AAPL", "MSFT"], "days": 14, "end": "2024-06-28"},
    )
    assert backfill["result"] == {"start": "2024-06-15", "end": "2024-06-28", "bars": 20}
    assert backfill["message"] == "Processed 2 of 2 symbols"
    again = run_job(client, "backfill-daily-bars", {"symbols": ["AAPL"], "end": "2024-06-28"})
    assert again["result"]["bars"] == 22  # the default 30 days: updates 10 bars, adds 12

    extra, stale = EXTRA_SYMBOLS[:2]
    added = run_job(client, "add-symbols", {"symbols": [extra, stale]})
    assert added["result"] == {"added": [extra, stale]}
    with tickstock.app_context():
        bar = db.session.get(DailyBar, ("AAPL", date(2024, 6, 28)))
        assert bar is not None
        assert bar.close == daily_bar("AAPL", date(2024, 6, 28))["close"]
        assert count(DailyBar) == 32
        assert stored_stock(extra).name == PROFILES[extra][0]
        # A symbol nobody listed for 100 days, with bars of its own, is stale.
        long_ago = date.today() - timedelta(days=100)
        db.session.execute(update(Stock).where(Stock.symbol == stale).values(last_seen=long_ago))
        db.session.add(
            DailyBar(symbol=stale, day=long_ago, open=1, high=1, low=1, close=1, volume=1)
        )
        db.session.commit()

    purged = run_job(client, "purge-stale-symbols", {"older_than_days": 30})

    assert purged["result"] == {"purged": [stale], "bars_deleted": 1}
    with tickstock.app_context():
        assert db.session.get(Stock, stale) is None
        assert db.session.get(Stock, extra) is not None
        assert count(Stock) == 30 + 1  # DIA's holdings and the fresh extra
        assert count(DailyBar) == 32


def test_a_second_load_replaces_holdings_and_keeps_rows_unique(tickstock: Flask) -> None:
    client = tickstock.test_client()
    run_job(client, "load-etf-holdings", {"etfs": ["DIA"]})
    with tickstock.app_context():
        # A holding the next holdings file no longer lists.
        db.session.add(
            Stock(symbol=EXTRA_SYMBOLS[0], name="Gone", sector="X", last_seen=date.today())
        )
        db.session.add(
            EtfHolding(etf="DIA", symbol=EXTRA_SYMBOLS[0], weight=0.01, as_of=date.today())
        )
        db.session.commit()

    again = run_job(client, "load-etf-holdings", {"etfs": ["DIA"]})

    assert again["result"]["holdings_removed"] == 1
    with tickstock.app_context():
        assert count(EtfHolding) == 30
        assert count(Etf) == 1


# -- bad input ---------------------------------------------------------------------


def test_an_unknown_symbol_fails_add_symbols_part_way_as_a_validation_error(
    tickstock: Flask,
) -> None:
    client = tickstock.test_client()
    with progress_reports(tickstock) as reports:
        document = run_job(client, "add-symbols", {"symbols": [EXTRA_SYMBOLS[0], "ZZZZ", "AAPL"]})

    assert document["status"] == "failed"
    assert document["error_type"] == "validation"
    assert document["error"] == "Unknown symbol 'ZZZZ'. Added 1 of 3 symbols before it."
    assert document["attempts"] == 1  # a ValueError is not retried
    assert document["items_processed"] == 1
    assert reports[-1]["message"] == "Processed 1 of 3 symbols"
    with tickstock.app_context():
        assert db.session.get(Stock, EXTRA_SYMBOLS[0]) is not None
        assert db.session.get(Stock, "AAPL") is None


def test_a_backfill_of_untracked_symbols_fails_before_any_work(tickstock: Flask) -> None:
    document = run_job(tickstock.test_client(), "backfill-daily-bars", {"symbols": ["AAPL"]})

    assert document["error_type"] == "validation"
    assert "Not tracked: AAPL." in document["error"]
    with tickstock.app_context():
        assert count(DailyBar) == 0


@pytest.mark.parametrize(
    ("job", "body"),
    [
        ("backfill-daily-bars", '{"symbols": "AAPL"}'),
        ("backfill-daily-bars", '{"day": 5}'),
        ("add-symbols", "{}"),
        ("load-etf-holdings", "[1, 2]"),
        ("load-etf-holdings", "{"),
    ],
    ids=["wrong-type", "unknown-argument", "missing-argument", "not-an-object", "malformed"],
)
def test_arguments_that_do_not_fit_answer_400_and_store_nothing(
    tickstock: Flask, job: str, body: str
) -> None:
    client = tickstock.test_client()

    response = client.post(
        f"/api/data-maintenance/{job}", data=body, content_type="application/json"
    )

    assert_error(response, 400)
    with tickstock.app_context():
        assert len(jobs.list()) == 0


@pytest.mark.parametrize(
    ("job", "body", "parameter"),
    [
        ("backfill-daily-bars", {"days": 0}, "days"),
        ("backfill-daily-bars", {"days": 3651}, "days"),
        ("add-symbols", {"symbols": ["$$$"]}, "symbols"),
        ("load-etf-holdings", {"etfs": []}, "etfs"),
    ],
    ids=["no-days", "too-many-days", "not-a-symbol", "no-etfs"],
)
def test_constraints_in_the_type_hints_answer_400_naming_the_parameter(
    tickstock: Flask, job: str, body: dict[str, Any], parameter: str
) -> None:
    response = tickstock.test_client().post(f"/api/data-maintenance/{job}", json=body)

    details = assert_error(response, 400)["details"]
    assert [detail["parameter"] for detail in details] == [parameter]


def test_symbols_are_upper_cased_before_the_job_is_stored() -> None:
    assert tasks.add_symbols.validate([], {"symbols": ["brk.b", "Aapl"]}) == (
        [],
        {"symbols": ["BRK.B", "AAPL"]},
    )


def test_unknown_jobs_and_bodies_that_are_not_json_are_refused(tickstock: Flask) -> None:
    client = tickstock.test_client()
    assert (
        "load-etf-holdings" in assert_error(client.post("/api/data-maintenance/nope"), 404)["error"]
    )
    assert_error(
        client.post("/api/data-maintenance/add-symbols", data="x", content_type="text/plain"), 415
    )
    assert_error(client.get("/api/data-maintenance/add-symbols"), 405)


def test_a_unique_job_already_pending_answers_409_pointing_to_it(
    make_tickstock: Callable[..., Flask],
) -> None:
    app = make_tickstock(JOBRUNNER_RUN_WORKERS=False)  # the first job stays pending
    client = app.test_client()
    first = client.post("/api/data-maintenance/purge-stale-symbols")

    second = client.post("/api/data-maintenance/purge-stale-symbols", json={"older_than_days": 5})

    assert_error(second, 409)
    assert second.headers["Location"] == first.headers["Location"]


# -- access, configuration, the terminal and worker processes ---------------------


def test_the_api_token_protects_both_the_job_routes_and_the_jobs_api(
    make_tickstock: Callable[..., Flask],
) -> None:
    app = make_tickstock(TICKSTOCK_API_TOKEN="s3cret")
    client = app.test_client()
    path = "/api/data-maintenance/load-etf-holdings"
    wrong = {"Authorization": "Bearer guess"}
    right = {"Authorization": "Bearer s3cret"}

    assert_error(client.post(path, json={"etfs": ["DIA"]}), 403)
    assert_error(client.post(path, json={"etfs": ["DIA"]}, headers=wrong), 403)
    assert_error(client.post("/api/jobs/load-etf-holdings", json={"etfs": ["DIA"]}), 403)
    assert_error(client.get("/api/data-maintenance"), 403)
    accepted = client.post(path, json={"etfs": ["DIA"]}, headers=right)
    assert accepted.status_code == 202
    assert_error(client.get(accepted.headers["Location"]), 403)
    assert_error(client.get("/api/jobs", headers=wrong), 403)
    document, _ = poll(client, accepted.headers["Location"], headers=right)
    assert document["status"] == "completed"
    assert client.get("/api/etfs/DIA", headers=right).get_json()["holdings_count"] == 30


def test_without_a_token_the_api_is_open_and_says_so(
    make_tickstock: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_tickstock(TESTING=False)

    assert "TICKSTOCK_API_TOKEN is not set" in caplog.text
    assert app.test_client().get("/api/jobs").status_code == 200


def test_the_database_job_store_runs_on_the_apps_own_engine(tickstock: Flask) -> None:
    with tickstock.app_context():
        assert tickstock.config["JOBRUNNER_BACKEND"] == "sqlalchemy"
        assert tickstock.extensions["jobrunner"].backend.engine.url == db.engine.url
        assert tickstock.config["JOBRUNNER_PROGRESS_INTERVAL"] == 0  # JOB_PROGRESS_UPDATE_INTERVAL


def test_flask_jobs_submit_watch_runs_a_job_to_the_end_on_sqlite(tickstock: Flask) -> None:
    runner = tickstock.test_cli_runner()

    outcome = runner.invoke(
        args=["jobs", "submit", "load-etf-holdings", "--arg", 'etfs=["DIA"]', "--watch"]
    )

    assert outcome.exit_code == 0, outcome.output
    assert "Processed 30 of 30 symbols" in outcome.output
    assert '"status": "completed"' in outcome.output
    with tickstock.app_context():
        assert count(EtfHolding) == 30


@ON_EACH_STORE
def test_a_flask_jobs_worker_process_runs_jobs_the_web_process_only_enqueues(
    make_tickstock: Callable[..., Flask],
) -> None:
    web = make_tickstock(JOBRUNNER_RUN_WORKERS=False)
    client = web.test_client()
    accepted = client.post("/api/data-maintenance/load-etf-holdings", json={"etfs": ["DIA"]})

    worker = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "examples.tickstock", "jobs", "worker", "--burst"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert worker.returncode == 0, worker.stderr
    document, _ = poll(client, accepted.headers["Location"])
    assert document["status"] == "completed"
    with web.app_context():
        assert count(EtfHolding) == 30


# -- the vendor's HTTP API, through the local stub -------------------------------


@pytest.fixture
def vendor(request: pytest.FixtureRequest) -> Iterator[str]:
    """The stub vendor API's URL; parametrized indirectly with *n*, it first answers n 503s."""
    with serving(create_stub_app(api_key="k3y", outage=getattr(request, "param", 0))) as url:
        yield url


@pytest.fixture
def on_vendor_api(make_tickstock: Callable[..., Flask], vendor: str) -> Flask:
    """A TickStock app whose jobs use the HTTP client against the stub vendor API."""
    return make_tickstock(
        MARKET_DATA_PROVIDER="http", MARKET_DATA_URL=vendor, MARKET_DATA_API_KEY="k3y"
    )


def test_jobs_load_from_the_vendor_http_api_when_configured(on_vendor_api: Flask) -> None:
    document = run_job(on_vendor_api.test_client(), "load-etf-holdings", {"etfs": ["DIA", "QQQ"]})

    assert document["status"] == "completed", document
    assert document["attempts"] == 1
    with on_vendor_api.app_context():
        assert count(EtfHolding) == 130
        assert stored_stock("ASML").sector == "Information Technology"


@pytest.mark.parametrize("vendor", [1], indirect=True)
def test_a_vendor_outage_is_retried_until_the_job_completes(on_vendor_api: Flask) -> None:
    document = run_job(on_vendor_api.test_client(), "load-etf-holdings", {"etfs": ["DIA"]})

    assert document["status"] == "completed", document
    assert document["attempts"] == 2  # the first failed on a 503
    assert document["items_processed"] == 30


def test_a_symbol_the_vendor_does_not_know_fails_as_validation_without_retry(
    on_vendor_api: Flask,
) -> None:
    document = run_job(on_vendor_api.test_client(), "load-etf-holdings", {"etfs": ["XYZ"]})

    assert document["status"] == "failed"
    assert document["error_type"] == "validation"
    assert document["attempts"] == 1
    assert "Unknown symbol 'XYZ'" in document["error"]
