"""The app the benchmark's worker process runs: one no-op task."""

from __future__ import annotations

from flask import Flask

from flask_jobrunner import JobRunner

jobs = JobRunner()


@jobs.task
def noop() -> None:
    """Do nothing: the benchmark measures the runner, not the task."""


def create_app() -> Flask:
    """An app whose jobrunner settings come from ``FLASK_JOBRUNNER_*``."""
    app = Flask("bench")
    jobs.init_app(app)
    return app
