"""Real processes: SIGTERM drains the running job; a forked child runs its own worker.

Each test writes a small app script into ``tmp_path`` and runs it with this
interpreter; every process started here is reaped before the test ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import wait_until

#: A web process: submits one job (which starts the worker), then idles until signalled.
SERVER_SCRIPT = """
import sys
import time
from pathlib import Path

from flask import Flask
from flask_jobrunner import JobRunner

workdir = Path(sys.argv[1])
duration = float(sys.argv[2])
jobs = JobRunner()


@jobs.task
def slow_job() -> str:
    (workdir / "started").touch()
    time.sleep(duration)
    (workdir / "finished").touch()
    return "done"


app = Flask("sigterm_app")
app.config["JOBRUNNER_BACKEND"] = "memory://"
app.config["JOBRUNNER_SHUTDOWN_TIMEOUT"] = float(sys.argv[3])
jobs.init_app(app)
with app.app_context():
    slow_job.submit()
while True:  # stands in for the web server's loop
    time.sleep(0.05)
"""

#: A preloading server: the parent runs a job, forks (as gunicorn does), both run jobs.
FORK_SCRIPT = """
import json
import os
import sys
import threading
import warnings
from pathlib import Path

from flask import Flask
from flask_jobrunner import JobRunner

workdir = Path(sys.argv[1])
jobs = JobRunner()


@jobs.task
def where() -> dict:
    return {"pid": os.getpid(), "thread": threading.current_thread().name}


def run_one() -> dict:
    with app.app_context():
        job = where.submit().wait(timeout=10)
    return {"status": job.status.value, "result": job.result}


app = Flask("fork_app")
app.config["JOBRUNNER_BACKEND"] = "memory://"
jobs.init_app(app)
before = run_one()
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads, on 3.12+
    pid = os.fork()
if pid == 0:
    code = 1
    try:
        report = {"pid": os.getpid(), "job": run_one()}
        report["drained"] = jobs.shutdown(app, timeout=5)
        (workdir / "child.json").write_text(json.dumps(report))
        code = 0
    finally:
        os._exit(code)
after = run_one()
_, status = os.waitpid(pid, 0)
report = {
    "pid": os.getpid(),
    "before": before,
    "after": after,
    "child_exit": os.waitstatus_to_exitcode(status),
}
report["drained"] = jobs.shutdown(app, timeout=5)
(workdir / "parent.json").write_text(json.dumps(report))
"""


StartScript = Callable[..., "subprocess.Popen[str]"]


@pytest.fixture
def start_script(tmp_path: Path) -> Iterator[StartScript]:
    """Start a script with this interpreter; kill and reap whatever is left after the test."""
    processes: list[subprocess.Popen[str]] = []

    def start(source: str, *args: str) -> subprocess.Popen[str]:
        script = tmp_path / "script.py"
        script.write_text(textwrap.dedent(source))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_JOBRUNNER_")}
        process = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path), *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def test_sigterm_lets_the_running_job_finish_then_exits_zero(
    start_script: StartScript, tmp_path: Path
) -> None:
    process = start_script(SERVER_SCRIPT, "1.0", "30")
    wait_until(lambda: (tmp_path / "started").exists() or process.poll() is not None, 15)
    assert process.poll() is None, process.communicate()
    assert not (tmp_path / "finished").exists()

    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=15)

    assert process.returncode == 0, stderr
    assert (tmp_path / "finished").exists()
    assert "Traceback" not in stderr


def test_sigterm_gives_up_on_a_job_after_the_shutdown_timeout(
    start_script: StartScript, tmp_path: Path
) -> None:
    process = start_script(SERVER_SCRIPT, "60", "0.2")
    wait_until(lambda: (tmp_path / "started").exists() or process.poll() is not None, 15)
    assert process.poll() is None, process.communicate()

    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=15)

    assert process.returncode == 0, stderr
    assert not (tmp_path / "finished").exists()
    assert "did not finish before shutdown; giving it back" in stderr


def test_forked_child_starts_its_own_worker_and_runs_its_jobs(
    start_script: StartScript, tmp_path: Path
) -> None:
    process = start_script(FORK_SCRIPT)
    _, stderr = process.communicate(timeout=30)

    assert process.returncode == 0, stderr
    parent = json.loads((tmp_path / "parent.json").read_text())
    child = json.loads((tmp_path / "child.json").read_text())
    assert parent["child_exit"] == 0
    assert child["pid"] != parent["pid"]

    assert parent["before"]["status"] == parent["after"]["status"] == "completed"
    assert parent["before"]["result"]["pid"] == parent["after"]["result"]["pid"] == parent["pid"]
    assert child["job"]["status"] == "completed"
    assert child["job"]["result"]["pid"] == child["pid"]

    def pool(thread_name: str) -> str:
        assert thread_name.startswith("jobrunner-")
        return thread_name.rsplit("-", 1)[0]

    # The child ran its job on a pool of its own; the parent's pool lives on.
    assert pool(child["job"]["result"]["thread"]) != pool(parent["before"]["result"]["thread"])
    assert pool(parent["after"]["result"]["thread"]) == pool(parent["before"]["result"]["thread"])
    assert child["drained"] is parent["drained"] is True
