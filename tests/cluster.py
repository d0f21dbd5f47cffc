"""Real worker and web processes sharing one backend, for the process tests.

A :class:`Cluster` starts ``flask jobs worker`` and ``flask run`` as
subprocesses of the test, all on the app of :mod:`process_app` and on the
same backend, and ends every process it started (by its pid) afterwards.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask

import process_app
from conftest import free_port, server_down, wait_until
from flask_jobrunner import BackendUnavailable

TESTS = pathlib.Path(__file__).parent
#: The longest any process test waits for one thing to happen.
WAIT = 60.0


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """:func:`conftest.wait_until` with the process tests' longer default timeout."""
    return wait_until(predicate, timeout, interval=0.02, what=what)


@contextmanager
def fresh_cluster(
    backend_id: str, url: str, directory: pathlib.Path, **settings: Any
) -> Iterator[Cluster]:
    """A :class:`Cluster` on an emptied store, with a private Redis prefix.

    Skips the test when the backend's server is down; ends every process the
    test started and empties the store afterwards.
    """
    cluster = Cluster(url, directory, redis_prefix=f"jrtest:{uuid.uuid4().hex}", **settings)
    try:
        backend = cluster.app().extensions["jobrunner"].backend
        backend.setup()
        backend.clear()
    except BackendUnavailable as error:
        server_down(backend_id, error)
    try:
        yield cluster
    finally:
        cluster.end_processes()
        backend.clear()
        cluster.close()


class Cluster:
    """Processes of :mod:`process_app` on the backend at *url*.

    :param url: The backend URL every process uses.
    :param directory: Where the runs file and the process logs go.
    :param settings: ``JOBRUNNER_*`` settings (lower case) for every process.
    """

    def __init__(self, url: str, directory: pathlib.Path, **settings: Any) -> None:
        self.url = url
        self.directory = directory
        self.runs_file = directory / "runs.txt"
        self.settings = {"backend": url, **settings}
        self.processes: list[subprocess.Popen[bytes]] = []
        self._apps: list[Flask] = []
        self._logs: dict[int, pathlib.Path] = {}

    # -- processes ---------------------------------------------------------

    def environment(self, **settings: Any) -> dict[str, str]:
        """The environment of a child process, with extra *settings*."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent)])
        env["JOBRUNNER_TEST_RUNS_FILE"] = str(self.runs_file)
        for key, value in {**self.settings, **settings}.items():
            text = value if isinstance(value, str) else json.dumps(value)
            env[f"FLASK_JOBRUNNER_{key.upper()}"] = text
        return env

    def spawn(
        self, *arguments: str, own_group: bool = False, **settings: Any
    ) -> subprocess.Popen[bytes]:
        """Start ``flask --app process_app:create_app ARGUMENTS``; its output goes to a log.

        With *own_group*, the process leads a process group of its own, as a
        command started from a terminal does.
        """
        log = self.directory / f"process-{len(self.processes)}.log"
        command = [sys.executable, "-m", "flask", "--app", "process_app:create_app", *arguments]
        with open(log, "wb") as output:
            process = subprocess.Popen(
                command,
                env=self.environment(**settings),
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                process_group=0 if own_group else None,
            )
        self.processes.append(process)
        self._logs[process.pid] = log
        return process

    def worker(
        self, *arguments: str, ready: int = 1, own_group: bool = False, **settings: Any
    ) -> subprocess.Popen[bytes]:
        """Start ``flask jobs worker ARGUMENTS`` and wait until *ready* worker processes run."""
        process = self.spawn("jobs", "worker", *arguments, own_group=own_group, **settings)
        wait_for(
            lambda: self.log(process).count("threads on queues") >= ready or process.poll(),
            f"worker {process.pid} to start",
        )
        assert process.poll() is None, self.log(process)
        return process

    def web(self, **settings: Any) -> str:
        """Start ``flask run`` on a free port; returns its base URL once it answers.

        The process is the last one in :attr:`processes`.
        """
        port = free_port()
        process = self.spawn("run", "--port", str(port), "--no-reload", **settings)
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert process.poll() is None, self.log(process)
            try:
                request("GET", f"{base}/api/jobs/openapi.json")
            except OSError:
                return False
            return True

        wait_for(answers, f"web process {process.pid} to answer")
        return base

    def log(self, process: subprocess.Popen[bytes]) -> str:
        """What *process* has printed so far."""
        return self._logs[process.pid].read_text(errors="replace")

    def stop(self, process: subprocess.Popen[bytes], timeout: float = WAIT) -> int:
        """SIGTERM *process* and wait for it to exit; returns its status."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{process.pid} did not stop:\n{self.log(process)}") from None

    def close(self) -> None:
        """End the processes (see :meth:`end_processes`), then close the apps' backends."""
        self.end_processes()
        for app in self._apps:
            app.extensions["jobrunner"].backend.close()

    def end_processes(self) -> None:
        """End every process this cluster started that is still running.

        SIGTERM first, so a supervisor ends the worker processes it forked.
        """
        for process in self.processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
                process.terminate()
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)

    # -- jobs --------------------------------------------------------------

    def app(self, **config: Any) -> Flask:
        """An app in the test process on the same backend that only enqueues."""
        app = Flask("process_test")
        app.testing = True
        for key, value in {**self.settings, "run_workers": False, **config}.items():
            app.config[f"JOBRUNNER_{key.upper()}"] = value
        process_app.jobs.init_app(app)
        self._apps.append(app)
        return app

    def runs(self) -> list[tuple[str, str, int]]:
        """The ``(event, job id, pid)`` lines the tasks wrote so far."""
        return process_app.read_runs(str(self.runs_file))

    def started_by(self, pid: int) -> set[str]:
        """Ids of the jobs *pid* started."""
        return {job_id for event, job_id, who in self.runs() if event == "start" and who == pid}


def request(method: str, url: str, body: Any = None) -> tuple[int, dict[str, str], Any]:
    """An HTTP request with a JSON body; returns status, headers and JSON reply."""
    data = None if body is None else json.dumps(body).encode()
    message = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(message, timeout=10) as reply:
            return reply.status, dict(reply.headers), json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")
