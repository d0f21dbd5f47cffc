"""Procrastinate on PostgreSQL, run by ``procrastinate worker --concurrency 4``.

The worker imports this module's ``app``; ``BENCH_PG_DSN`` names the
private database. Procrastinate keeps no results: a job is done when its
row says ``succeeded``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import procrastinate
import psycopg
import sqlalchemy

from bench.stores import sql_database
from bench.systems.base import System


def noop() -> int:
    """Do nothing."""
    return 1


def nap(seconds: float) -> int:
    """Sleep *seconds*."""
    time.sleep(seconds)
    return 1


def make_app(dsn: str) -> procrastinate.App:
    """A Procrastinate app on the database *dsn*, with the two tasks."""
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
    app.task(name="noop")(noop)
    app.task(name="nap")(nap)
    return app


app = make_app(os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))


class Procrastinate(System):
    """Procrastinate 3.10, PostgreSQL, a worker with concurrency 4."""

    label = "Procrastinate (PostgreSQL, concurrency 4)"

    def open(self) -> None:
        """A private database with Procrastinate's schema."""
        url = sqlalchemy.make_url(self._stack.enter_context(sql_database("postgresql")))
        self.dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.app = make_app(self.dsn)
        self._stack.enter_context(self.app.open())
        self.app.schema_manager.apply_schema()
        self.connection = psycopg.connect(self.dsn, autocommit=True)
        self._stack.callback(self.connection.close)

    def worker_command(self) -> tuple[list[str], Mapping[str, str]]:
        """``procrastinate --app bench.systems.procrastinate_peer.app worker --concurrency 4``."""
        command = [sys.executable, "-m", "procrastinate", "--app"]
        command += ["bench.systems.procrastinate_peer.app", "worker", "--concurrency", "4"]
        return command, {"BENCH_PG_DSN": self.dsn}

    def submit_noop(self) -> Any:
        """``noop.defer()`` returns the job id."""
        return self.app.configure_task("noop").defer()

    def submit_sleep(self, seconds: float) -> Any:
        """``nap.defer(seconds=...)``."""
        return self.app.configure_task("nap").defer(seconds=seconds)

    def is_done(self, handle: Any) -> bool:
        """The job's row says ``succeeded``."""
        row = self.connection.execute(
            "SELECT status FROM procrastinate_jobs WHERE id = %s", (handle,)
        ).fetchone()
        return row is not None and row[0] == "succeeded"

    def still_pending(self, handles: Sequence[Any]) -> list[Any]:
        """One query for every job not ``succeeded`` yet."""
        rows = self.connection.execute(
            "SELECT id FROM procrastinate_jobs WHERE id = ANY(%s) AND status <> 'succeeded'",
            (list(handles),),
        ).fetchall()
        waiting = {row[0] for row in rows}
        return [handle for handle in handles if handle in waiting]
