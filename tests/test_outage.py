"""A backend outage: the API answers 503 meanwhile, workers resume afterwards.

The test starts its own ``redis-server`` on a free port, stops it and starts
it again; the shared server on 6379 is never touched.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
from collections.abc import Iterator

import pytest
import redis

import process_app
from cluster import Cluster, free_port, wait_for
from conftest import REQUIRE_SERVICES
from flask_jobrunner import BackendUnavailable

pytestmark = pytest.mark.slow


class RedisServer:
    """A private ``redis-server`` that keeps nothing on disk."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url)
        try:
            wait_for(lambda: self._answers(client), "the private redis-server to answer", 10)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def _answers(self, client: redis.Redis) -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False


@pytest.fixture
def redis_server(tmp_path: pathlib.Path) -> Iterator[RedisServer]:
    """A private Redis server, started; stopped after the test."""
    if shutil.which("redis-server") is None:
        if REQUIRE_SERVICES:
            pytest.fail("redis-server is not installed (JOBRUNNER_TEST_REQUIRE_SERVICES=1)")
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_submit_answers_503_while_redis_is_down_and_workers_resume_after(
    redis_server: RedisServer, tmp_path: pathlib.Path
) -> None:
    cluster = Cluster(redis_server.url, tmp_path)
    try:
        worker = cluster.worker("--threads", "2")
        app = cluster.app(api_open=True)
        client = app.test_client()
        before = client.post("/api/jobs/record-run", json={"number": 1})
        assert before.status_code == 202
        wait_for(
            lambda: client.get(before.headers["Location"]).json["status"] == "completed",
            "a job to complete before the outage",
        )

        redis_server.stop()
        during = client.post("/api/jobs/record-run", json={"number": 2})
        assert during.status_code == 503
        assert during.mimetype == "application/json"
        assert int(during.headers["Retry-After"]) >= 1
        assert "error" in during.json
        assert client.get(before.headers["Location"]).status_code == 503
        with app.app_context(), pytest.raises(BackendUnavailable):
            process_app.record_run.submit(3)

        redis_server.start()
        after = wait_for(
            lambda: (
                (reply := client.post("/api/jobs/record-run", json={"number": 4})).status_code
                == 202
                and reply
            ),
            "a submit to be accepted again",
            timeout=10,
        )
        document = wait_for(
            lambda: (
                (doc := client.get(after.headers["Location"]).json)["status"] == "completed" and doc
            ),
            "the same worker to run a job after the outage",
        )
        assert document["result"] == 4
        assert worker.poll() is None, "the worker kept running through the outage"
        assert cluster.stop(worker) == 0, cluster.log(worker)
    finally:
        cluster.close()
