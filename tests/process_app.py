"""The app that the process tests run in worker and web subprocesses.

Its settings come from the environment (``FLASK_JOBRUNNER_*``), so a test
points every process at the same backend. Each task appends a line to the
file named by ``JOBRUNNER_TEST_RUNS_FILE`` when a run starts and when it ends,
so a test can count runs across processes: appends of one short line with
``O_APPEND`` do not interleave.
"""

from __future__ import annotations

import os
import threading
import time

from flask import Flask

from flask_jobrunner import JobRunner, current_job

jobs = JobRunner()


def _note(event: str) -> None:
    path = os.environ["JOBRUNNER_TEST_RUNS_FILE"]
    line = f"{event} {current_job.id} {os.getpid()}\n".encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(descriptor, line)
    finally:
        os.close(descriptor)


@jobs.task(http=True)
def record_run(number: int) -> int:
    """Note the run and return *number*."""
    _note("start")
    _note("end")
    return number


@jobs.task(http=True)
def sleep_for(seconds: float) -> int:
    """Sleep without checking for a stop, then return the pid that ran the job."""
    _note("start")
    time.sleep(seconds)
    _note("end")
    return os.getpid()


@jobs.task
def submit_follow_up() -> list[str]:
    """Submit a ``record_run`` job; return the worker pools running in this process."""
    record_run.submit(0)
    names = (thread.name for thread in threading.enumerate())
    return sorted({name.rsplit("-", 1)[0] for name in names if name.startswith("jobrunner-")})


#: A cron expression (UTC, seconds last) the schedule tests give every process.
_SCHEDULE = os.environ.get("JOBRUNNER_TEST_SCHEDULE")

if _SCHEDULE:

    @jobs.periodic(_SCHEDULE, name="process-ticks")
    @jobs.task
    def scheduled_run() -> int:
        """Note the run of one tick's job."""
        _note("start")
        _note("end")
        return os.getpid()


def create_app() -> Flask:
    """An app whose jobrunner settings all come from ``FLASK_JOBRUNNER_*``."""
    app = Flask("process_app")
    jobs.init_app(app)
    return app


def read_runs(path: str) -> list[tuple[str, str, int]]:
    """The ``(event, job id, pid)`` lines the tasks wrote, in order."""
    if not os.path.exists(path):
        return []
    with open(path) as runs:
        return [(event, job_id, int(pid)) for event, job_id, pid in (line.split() for line in runs)]
