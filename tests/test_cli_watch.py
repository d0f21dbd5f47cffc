"""``flask jobs watch ID`` (and ``submit --watch``, the same code): follow a job to its end."""

from __future__ import annotations

import json
import os
import pathlib
import pty
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import Result
from flask import Flask

from conftest import PrivateRedis, settings, wait_until
from flask_jobrunner import JobRunner, Task, current_job
from flask_jobrunner.cli import WATCH_EXIT_STATUS, WATCH_GONE_STATUS
from flask_jobrunner.record import JobStatus


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["jobs", *args])


def document_in(result: Result) -> dict[str, Any]:
    """The status document printed after the progress lines."""
    document: dict[str, Any] = json.loads(result.output[result.output.index("\n{") :])
    return document


def progress_lines(result: Result) -> list[list[str]]:
    """The progress lines (one per change), split into their columns."""
    lines = result.output[: result.output.index("\n{")].splitlines()
    return [re.split(r"\s{2,}", line.strip()) for line in lines if not line.startswith("Submitted")]


@pytest.fixture
def gate(app: Flask) -> Iterator[threading.Event]:
    """Holds the ``three_steps`` task before its first step; open at teardown."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def three_steps(jobs: JobRunner, gate: threading.Event) -> Task[[], str]:
    @jobs.task
    def three_steps() -> str:
        assert gate.wait(20)
        for done in range(1, 4):
            current_job.progress(done=done, total=3, message=f"Processed {done}")
        return "ok"

    return three_steps


def test_watch_prints_each_change_then_the_document_and_exits_0_when_completed(
    app: Flask, jobs: JobRunner, three_steps: Task[[], str], gate: threading.Event
) -> None:
    with app.app_context():
        job = three_steps.submit()
    wait_until(lambda: jobs.get(job.id).status is JobStatus.IN_PROGRESS)  # type: ignore[union-attr]
    threading.Timer(0.3, gate.set).start()

    result = run(app, "watch", job.id)

    assert result.exit_code == 0, result.output
    assert document_in(result) == jobs.get(job.id).to_dict()  # type: ignore[union-attr]
    lines = progress_lines(result)
    assert lines[-1] == ["completed", "100.0%", "3/3", "Processed 3"]
    percentages = [float(line[1].rstrip("%")) for line in lines]
    assert percentages == sorted(percentages), "changes are shown in order"


@settings(run_workers=False)
def test_watch_of_a_cancelled_job_exits_3(app: Flask, jobs: JobRunner) -> None:
    @jobs.task
    def idle() -> None:
        pass

    with app.app_context():
        job = idle.submit()
    backend = jobs.get_state(app).backend
    threading.Timer(0.3, backend.request_cancel, args=[job.id]).start()

    result = run(app, "watch", job.id)

    assert result.exit_code == WATCH_EXIT_STATUS[JobStatus.CANCELLED] == 3
    statuses = [line[0] for line in progress_lines(result)]
    assert statuses in (["pending", "cancelled"], ["cancelled"])
    assert document_in(result)["status"] == "cancelled"


def test_watch_of_a_failed_job_exits_1(app: Flask, jobs: JobRunner) -> None:
    @jobs.task
    def refuses() -> None:
        raise ValueError("no data for today")

    with app.app_context():
        job = refuses.submit().wait(timeout=10)

    result = run(app, "watch", job.id)

    assert result.exit_code == 1
    assert progress_lines(result) == [["failed", "0.0%"]]
    assert document_in(result)["error"] == "no data for today"


@pytest.mark.parametrize("job_id", [str(uuid.uuid4()), "not-a-job-id"])
@settings(run_workers=False)
def test_watch_of_an_unknown_job_exits_4(app: Flask, job_id: str) -> None:
    result = run(app, "watch", job_id)

    assert result.exit_code == WATCH_GONE_STATUS == 4
    assert f"There is no job with id '{job_id}'." in result.output
    assert "Traceback" not in result.output


def test_submit_watch_shows_the_same_progress_lines(
    app: Flask, jobs: JobRunner, three_steps: Task[[], str], gate: threading.Event
) -> None:
    threading.Timer(0.3, gate.set).start()

    result = run(app, "submit", "three-steps", "--watch")

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Submitted job ")
    assert progress_lines(result)[-1] == ["completed", "100.0%", "3/3", "Processed 3"]
    assert document_in(result)["result"] == "ok"


@settings(run_workers=False)
def test_submit_watch_of_a_cancelled_job_exits_3(app: Flask, jobs: JobRunner) -> None:
    @jobs.task
    def idle() -> None:
        pass

    def cancel_when_submitted() -> None:
        [job] = wait_until(lambda: jobs.get_state(app).backend.list_jobs()[0])
        jobs.get_state(app).backend.request_cancel(job.id)

    canceller = threading.Thread(target=cancel_when_submitted, name="canceller")
    canceller.start()
    result = run(app, "submit", "idle", "--watch")
    canceller.join(10)

    assert result.exit_code == 3, result.output
    assert document_in(result)["status"] == "cancelled"


TERMINAL_APP = """
import time

from flask import Flask

from flask_jobrunner import JobRunner, current_job

jobs = JobRunner()


@jobs.task
def two_steps() -> str:
    for done in (1, 2):
        time.sleep(0.2)
        current_job.progress(done=done, total=2, message=f"Processed {done}")
    return "ok"


app = Flask(__name__)
app.config["JOBRUNNER_PROGRESS_INTERVAL"] = 0
jobs.init_app(app)
"""


def test_in_a_terminal_watch_draws_a_progress_bar(tmp_path: pathlib.Path) -> None:
    (tmp_path / "terminal_app.py").write_text(TERMINAL_APP)
    controller, terminal = pty.openpty()
    flask = pathlib.Path(sys.executable).with_name("flask")
    process = subprocess.Popen(
        [str(flask), "--app", "terminal_app", "jobs", "submit", "two-steps", "--watch"],
        cwd=tmp_path,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    output = b""
    try:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the terminal closed: the command ended
                break
            if not chunk:
                break
            output += chunk
        assert process.wait(timeout=30) == 0, output.decode(errors="replace")
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
            process.wait(10)

    text = output.decode(errors="replace")
    assert "two_steps: Processed 1" in text
    assert "two_steps: Processed 2" in text
    assert "[####################################]  100%" in text
    assert "\r" in text, "the bar is redrawn in place"
    assert re.search(r"\d\.\d%", text) is None, "no progress lines in a terminal"
    assert '"status": "completed"' in text


def test_watch_waits_through_an_outage_and_says_so(
    jobs: JobRunner, private_redis: PrivateRedis
) -> None:
    import redis

    @jobs.task
    def idle() -> None:
        pass

    app = Flask("jobrunner_watch_outage")
    app.config.update(JOBRUNNER_BACKEND=private_redis.url, JOBRUNNER_RUN_WORKERS=False)
    jobs.init_app(app)
    with app.app_context():
        job = idle.submit()
    channel = f"jobrunner:events:{job.id}"
    server = redis.Redis.from_url(private_redis.url, decode_responses=True)

    def outage() -> None:
        # Once the command listens for changes, the server goes away, and comes
        # back empty: a private server keeps nothing on disk.
        wait_until(lambda: server.pubsub_numsub(channel) == [(channel, 1)], timeout=10)
        server.close()
        private_redis.stop()
        time.sleep(1.5)
        private_redis.start()

    breaker = threading.Thread(target=outage, name="outage")
    breaker.start()
    try:
        result = run(app, "watch", job.id)
    finally:
        breaker.join(20)
        jobs.shutdown(app, timeout=5)

    assert "cannot serve the job backend" in result.output
    assert "Trying again in 1 s." in result.output
    assert result.exit_code == WATCH_GONE_STATUS, result.output
    assert f"Job '{job.id}' no longer exists" in result.output
    assert "Traceback" not in result.output
