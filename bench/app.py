"""The app flask-jobrunner's benchmark runs: a no-op task and a sleeping one.

Its settings come from ``FLASK_JOBRUNNER_*`` variables, so the worker
(``flask --app bench.app:create_app jobs worker``) and the WSGI server
(``gunicorn 'bench.app:create_app()'``) serve the store the benchmark chose.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask

from flask_jobrunner import JobRunner

jobs = JobRunner()


@jobs.task(http=True)
def noop() -> int:
    """Do nothing: the benchmark measures the runner, not the task."""
    return 1


@jobs.task
def nap(seconds: float) -> int:
    """Sleep *seconds*: the benchmark's I/O-bound job."""
    time.sleep(seconds)
    return 1


def create_app(**config: Any) -> Flask:
    """An app whose jobrunner settings come from ``FLASK_JOBRUNNER_*`` and *config*."""
    app = Flask("bench")
    app.config.update(JOBRUNNER_API_OPEN=True)
    app.config.update({f"JOBRUNNER_{key.upper()}": value for key, value in config.items()})
    jobs.init_app(app)
    return app
