"""A backend outage: the API answers 503 meanwhile, workers resume afterwards.

The test starts its own ``redis-server`` on a free port, stops it and starts
it again; the shared server on 6379 is never touched.
"""

from __future__ import annotations

import pathlib

import pytest

import process_app
from cluster import Cluster, wait_for
from conftest import PrivateRedis
from flask_jobrunner import BackendUnavailable

pytestmark = pytest.mark.slow


def test_submit_answers_503_while_redis_is_down_and_workers_resume_after(
    private_redis: PrivateRedis, tmp_path: pathlib.Path
) -> None:
    cluster = Cluster(private_redis.url, tmp_path)
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

        private_redis.stop()
        during = client.post("/api/jobs/record-run", json={"number": 2})
        assert during.status_code == 503
        assert during.mimetype == "application/json"
        assert int(during.headers["Retry-After"]) >= 1
        assert "error" in during.json
        assert client.get(before.headers["Location"]).status_code == 503
        with app.app_context(), pytest.raises(BackendUnavailable):
            process_app.record_run.submit(3)

        private_redis.start()
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
