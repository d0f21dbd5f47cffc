"""Enqueue rate, drain rate and submit-to-completed latency, per backend.

``python -m bench`` measures, for each backend:

* **enqueue**: ``task.submit()`` calls per second from one thread;
* **drain**: no-op jobs per second that one worker process with 4 threads
  completes, from the first start to the last finish as the backend
  recorded them (so the process start-up does not count); the memory
  backend cannot be shared, so its worker runs in the benchmark's process;
* **latency**: milliseconds from ``submit()`` to the completed job being
  readable, for jobs submitted one after another, p50 and p99.

Servers are those of the test suite (``JOBRUNNER_TEST_*_URL``); each run uses
a private database or key prefix and removes it afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy
from flask import Flask

from bench import app as bench_app
from flask_jobrunner import JobStatus
from flask_jobrunner.backends.base import Backend
from flask_jobrunner.worker import Worker

ROOT = pathlib.Path(__file__).resolve().parent.parent
SERVERS = {
    "postgresql": os.environ.get(
        "JOBRUNNER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("JOBRUNNER_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
    "redis": os.environ.get("JOBRUNNER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
}
BACKENDS = ["memory", "sqlite", "postgresql", "mysql", "redis"]


@contextlib.contextmanager
def backend_url(name: str, directory: pathlib.Path) -> Iterator[str]:
    """A URL for a private, empty store of backend *name*."""
    if name == "memory":
        yield "memory://"
    elif name == "sqlite":
        yield f"sqlite:///{directory / 'bench.db'}"
    elif name == "redis":
        yield SERVERS["redis"]
    else:
        url = sqlalchemy.make_url(SERVERS[name])
        database = f"jobrunner_bench_{uuid.uuid4().hex[:8]}"
        engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {database}")
        try:
            yield url.set(database=database).render_as_string(hide_password=False)
        finally:
            with engine.connect() as connection:
                connection.exec_driver_sql(f"DROP DATABASE {database}")
            engine.dispose()


def make_app(url: str, prefix: str) -> Flask:
    """The benchmark app in this process; it only enqueues."""
    app = Flask("bench")
    app.config.update(
        JOBRUNNER_BACKEND=url,
        JOBRUNNER_REDIS_PREFIX=prefix,
        JOBRUNNER_RUN_WORKERS=False,
        JOBRUNNER_PROGRESS_INTERVAL=0,
    )
    bench_app.jobs.init_app(app)
    return app


@contextlib.contextmanager
def worker(app: Flask, url: str, prefix: str, directory: pathlib.Path) -> Iterator[None]:
    """One worker with 4 threads: a separate process, or in this one for memory."""
    state = app.extensions["jobrunner"]
    if not state.backend.is_shared:
        thread_worker = Worker(app, state, threads=4)
        thread_worker.start()
        try:
            yield
        finally:
            thread_worker.stop(10)
        return
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.update(FLASK_JOBRUNNER_BACKEND=url, FLASK_JOBRUNNER_REDIS_PREFIX=prefix)
    log = directory / f"worker-{uuid.uuid4().hex[:6]}.log"
    command = [sys.executable, "-m", "flask", "--app", "bench.app:create_app"]
    command += ["jobs", "worker", "--threads", "4"]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "threads on queues" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start:\n{log.read_text()}")
            time.sleep(0.02)
        yield
    finally:
        process.terminate()
        process.wait(30)


def wait(condition: Callable[[], bool], timeout: float) -> None:
    """Poll *condition* every millisecond or so, for up to *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError("the benchmark timed out")
        time.sleep(0.001)


def measure(name: str, jobs: int, sequential: int) -> dict[str, Any]:
    """Every figure for backend *name*."""
    with tempfile.TemporaryDirectory() as temporary:
        directory = pathlib.Path(temporary)
        with backend_url(name, directory) as url:
            prefix = f"jrbench:{uuid.uuid4().hex}"
            app = make_app(url, prefix)
            backend: Backend = app.extensions["jobrunner"].backend
            backend.setup()
            try:
                return run_all(app, backend, url, prefix, directory, jobs, sequential)
            finally:
                backend.clear()
                backend.close()


def run_all(
    app: Flask,
    backend: Backend,
    url: str,
    prefix: str,
    directory: pathlib.Path,
    jobs: int,
    sequential: int,
) -> dict[str, Any]:
    """Enqueue *jobs*, drain them with one worker, then time *sequential* round trips."""
    with app.app_context():
        started = time.perf_counter()
        for _ in range(jobs):
            bench_app.noop.submit()
        enqueue_rate = jobs / (time.perf_counter() - started)
    with worker(app, url, prefix, directory):
        wait(lambda: backend.counts()[JobStatus.COMPLETED] >= jobs, timeout=600)
        records = _all_records(backend)
        first = min(record.started_at for record in records if record.started_at)
        last = max(record.finished_at for record in records if record.finished_at)
        drain_rate = jobs / max((last - first).total_seconds(), 1e-9)
        latencies = []
        with app.app_context():
            for _ in range(sequential):
                started = time.perf_counter()
                job = bench_app.noop.submit()
                backend.wait_finished(job.id, timeout=30)
                latencies.append((time.perf_counter() - started) * 1000)
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "enqueue": enqueue_rate,
        "drain": drain_rate,
        "p50": statistics.median(latencies),
        "p99": quantiles[98],
    }


def _all_records(backend: Backend) -> list[Any]:
    records: list[Any] = []
    cursor = None
    while True:
        page, cursor = backend.list_jobs(limit=500, cursor=cursor)
        records.extend(page)
        if cursor is None:
            return records


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, measure each backend, print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--backends",
        default=",".join(BACKENDS),
        help=f"comma-separated, of {', '.join(BACKENDS)} (default: all)",
    )
    parser.add_argument("--jobs", type=int, default=2000, help="jobs to enqueue and drain")
    parser.add_argument("--latency", type=int, default=200, help="sequential jobs timed")
    options = parser.parse_args(argv)
    names = [name.strip() for name in options.backends.split(",") if name.strip()]
    unknown = set(names) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    print(f"{options.jobs} no-op jobs; one worker with 4 threads; {options.latency} sequential.")
    header = f"{'backend':<11} {'enqueue/s':>10} {'drain/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
    print(header)
    print("-" * len(header))
    for name in names:
        try:
            figures = measure(name, options.jobs, options.latency)
        except Exception as error:  # one backend down must not hide the others
            print(f"{name:<11} failed: {error}")
            continue
        print(
            f"{name:<11} {figures['enqueue']:>10.0f} {figures['drain']:>9.0f}"
            f" {figures['p50']:>8.2f} {figures['p99']:>8.2f}",
            flush=True,
        )
