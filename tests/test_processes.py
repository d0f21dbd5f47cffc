"""Worker and web processes sharing a durable backend, with real signals and kills.

Every test runs once per durable backend (SQLite, PostgreSQL, MariaDB,
Redis). The tasks note each run in a file (see :mod:`process_app`), so the
tests count runs across processes without trusting the backend's own word.
"""

from __future__ import annotations

import collections
import os
import pathlib
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator

import pytest
from flask import Flask

import process_app
from cluster import Cluster, fresh_cluster, request, wait_for
from conftest import DURABLE_IDS
from flask_jobrunner import Job, JobStatus

pytestmark = pytest.mark.slow


@pytest.fixture(params=DURABLE_IDS)
def cluster(
    request: pytest.FixtureRequest,
    backend_url_for: Callable[[str], str],
    tmp_path: pathlib.Path,
) -> Iterator[Cluster]:
    """A cluster on a fresh store of each durable backend in turn."""
    backend_id = str(request.param)
    with fresh_cluster(backend_id, backend_url_for(backend_id), tmp_path) as cluster:
        yield cluster


def submit_all(app: Flask, count: int, **kwargs: object) -> list[Job]:
    """Submit *count* jobs of ``record_run`` (or ``sleep_for`` given *seconds*)."""
    with app.app_context():
        if "seconds" in kwargs:
            return [process_app.sleep_for.submit(**kwargs) for _ in range(count)]  # type: ignore[arg-type]
        return [process_app.record_run.submit(number) for number in range(count)]


def statuses(jobs: list[Job]) -> collections.Counter[JobStatus]:
    """How many of *jobs* are in each status now."""
    for job in jobs:
        job.refresh()
    return collections.Counter(job.status for job in jobs)


def test_2000_jobs_on_4_processes_of_4_threads_each_run_exactly_once(cluster: Cluster) -> None:
    supervisor = cluster.worker("--processes", "4", "--threads", "4", ready=4)
    app = cluster.app()
    submitted = submit_all(app, 2000)

    backend = app.extensions["jobrunner"].backend
    wait_for(
        lambda: backend.counts()[JobStatus.COMPLETED] == 2000,
        f"2000 completed jobs (counts: {backend.counts()})",
        timeout=100,
    )

    runs = cluster.runs()
    starts = collections.Counter(job_id for event, job_id, _ in runs if event == "start")
    assert set(starts) == {job.id for job in submitted}
    assert set(starts.values()) == {1}, [job_id for job_id, n in starts.items() if n > 1]
    assert len({pid for _, _, pid in runs}) == 4, "every worker process ran jobs"
    numbers = range(0, 2000, 97)
    assert [submitted[number].refresh().result for number in numbers] == list(numbers)
    assert cluster.stop(supervisor) == 0, cluster.log(supervisor)


def test_the_jobs_of_a_killed_worker_complete_on_another(cluster: Cluster) -> None:
    doomed = cluster.worker("--threads", "4", lease=1)
    survivor = cluster.worker("--threads", "4", lease=1)
    submitted = submit_all(cluster.app(lease=1), 40, seconds=0.3)

    wait_for(lambda: cluster.started_by(doomed.pid), "the doomed worker to start a job")
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait(10)
    wait_for(
        lambda: statuses(submitted)[JobStatus.COMPLETED] == len(submitted),
        "every job to complete",
    )

    runs = cluster.runs()
    held = cluster.started_by(doomed.pid)
    ended_there = {job_id for event, job_id, pid in runs if event == "end" and pid == doomed.pid}
    starts = collections.Counter(job_id for event, job_id, _ in runs if event == "start")
    rerun = {job_id for job_id, count in starts.items() if count > 1}
    assert held - ended_there, "the worker was killed while running jobs"
    assert held - ended_there <= rerun, "each job it held ran again elsewhere"
    assert rerun <= held, "no job it did not hold ran twice"
    assert cluster.stop(survivor) == 0


def is_stopped(pid: int) -> bool:
    """Whether every thread of process *pid* is stopped (a thread that ended meanwhile counts)."""
    for thread in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{thread}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("T", "t", "Z", "X"):
            return False
    return True


def is_sqlite_write_lock_free(path: str) -> bool:
    """Whether a write transaction on the SQLite file at *path* could begin now."""
    probe = sqlite3.connect(path, timeout=0.05)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.rollback()
        return True
    except sqlite3.OperationalError:  # database is locked
        return False
    finally:
        probe.close()


def freeze(cluster: Cluster, pid: int) -> None:
    """SIGSTOP *pid* at a moment it holds no SQLite write lock.

    A process stopped inside a write transaction stalls every other writer
    of the file until it goes on (SQLite's lock has no lease): a failure of
    its own, not the lost lease the caller tests. The lock is probed only
    once every thread has stopped: ``kill`` returns before that, and until
    the thread the signal went to is scheduled, the others run on (on a
    loaded machine for tens of milliseconds), time enough to begin a write.
    """
    deadline = time.monotonic() + 10
    while True:
        os.kill(pid, signal.SIGSTOP)
        wait_for(lambda: is_stopped(pid), f"every thread of process {pid} to stop", timeout=10)
        if not cluster.url.startswith("sqlite:///"):
            return
        if is_sqlite_write_lock_free(cluster.url.removeprefix("sqlite:///")):
            return
        os.kill(pid, signal.SIGCONT)
        if time.monotonic() > deadline:
            pytest.fail(f"process {pid} held SQLite's write lock at every stop for 10 s")
        time.sleep(0.01)


def test_a_worker_whose_lease_expired_cannot_overwrite_the_result(cluster: Cluster) -> None:
    frozen = cluster.worker("--threads", "1", lease=1)
    app = cluster.app(lease=1)
    with app.app_context():
        job = process_app.sleep_for.submit(seconds=2.0)
    wait_for(lambda: cluster.started_by(frozen.pid), "the first worker to start the job")
    freeze(cluster, frozen.pid)
    successor = cluster.worker("--threads", "1", lease=1)

    wait_for(lambda: job.refresh().status is JobStatus.COMPLETED, "the successor to finish")
    assert job.result == successor.pid
    completed_at = job.to_dict()["completed_at"]
    os.kill(frozen.pid, signal.SIGCONT)
    wait_for(lambda: ("end", job.id, frozen.pid) in cluster.runs(), "the first run to end as well")
    # A worker writes every outcome it has before it exits, however loaded the machine.
    assert cluster.stop(frozen) == 0, cluster.log(frozen)

    job.refresh()
    assert job.status is JobStatus.COMPLETED
    assert job.result == successor.pid
    assert job.to_dict()["completed_at"] == completed_at
    assert cluster.stop(successor) == 0


def test_sigterm_lets_running_jobs_finish_and_exits_0(cluster: Cluster) -> None:
    worker = cluster.worker("--threads", "4")
    app = cluster.app()
    running = submit_all(app, 4, seconds=1.5)
    wait_for(lambda: len(cluster.started_by(worker.pid)) == 4, "four jobs to start")
    waiting = submit_all(app, 1, seconds=0.1)[0]

    assert cluster.stop(worker) == 0, cluster.log(worker)

    assert statuses(running) == {JobStatus.COMPLETED: 4}
    assert waiting.refresh().status is JobStatus.PENDING, "no job starts after SIGTERM"
    starts = collections.Counter(job_id for event, job_id, _ in cluster.runs() if event == "start")
    assert starts == {job.id: 1 for job in running}


def test_a_second_sigterm_exits_at_once_and_the_lease_brings_the_job_back(
    cluster: Cluster,
) -> None:
    worker = cluster.worker("--threads", "1", lease=1)
    app = cluster.app(lease=1)
    with app.app_context():
        job = process_app.sleep_for.submit(seconds=30)
    wait_for(lambda: cluster.started_by(worker.pid), "the job to start")

    worker.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    worker.send_signal(signal.SIGTERM)

    assert worker.wait(10) != 0
    assert job.refresh().status is JobStatus.IN_PROGRESS
    backend = app.extensions["jobrunner"].backend
    wait_for(lambda: backend.recover_expired(max_recoveries=3), "the lease to run out")
    assert job.refresh().status is JobStatus.PENDING
    assert job.record.recoveries == 1


def test_ctrl_c_to_a_supervisor_s_process_group_drains_every_process(cluster: Cluster) -> None:
    supervisor = cluster.worker("--processes", "2", "--threads", "1", ready=2, own_group=True)
    running = submit_all(cluster.app(), 2, seconds=1.0)
    wait_for(lambda: len([run for run in cluster.runs() if run[0] == "start"]) == 2, "two starts")

    os.killpg(supervisor.pid, signal.SIGINT)  # what Ctrl-C in a terminal does

    assert supervisor.wait(30) == 0, cluster.log(supervisor)
    assert statuses(running) == {JobStatus.COMPLETED: 2}


def test_a_web_process_drains_its_jobs_on_sigterm(cluster: Cluster) -> None:
    base = cluster.web(api_open=True)
    web = cluster.processes[-1]
    status, _, body = request("POST", f"{base}/api/jobs/sleep-for", {"seconds": 1.0})
    assert status == 202, body
    wait_for(lambda: cluster.started_by(web.pid), "the web process to start the job")

    assert cluster.stop(web) == 0, cluster.log(web)

    app = cluster.app()
    with app.app_context():
        job = process_app.jobs.get(body["job_id"])
    assert job is not None
    assert job.status is JobStatus.COMPLETED
    assert job.result == web.pid


def test_a_job_submitting_another_in_a_worker_process_starts_no_second_pool(
    cluster: Cluster,
) -> None:
    worker = cluster.worker("--threads", "1")
    with cluster.app().app_context():
        job = process_app.submit_follow_up.submit()

    pools = job.wait(timeout=30).result
    assert len(pools) == 1, pools
    assert cluster.stop(worker) == 0


def test_a_job_submitted_through_one_web_process_is_polled_through_another(
    cluster: Cluster,
) -> None:
    web = {"api_open": True, "run_workers": False}
    first, second = cluster.web(**web), cluster.web(**web)
    cluster.worker("--threads", "2")

    status, headers, body = request("POST", f"{first}/api/jobs/record-run", {"number": 7})
    assert status == 202, body
    location = headers["Location"]
    assert location.endswith(f"/api/jobs/{body['job_id']}")

    def completed() -> object:
        status, _, document = request("GET", f"{second}/api/jobs/{body['job_id']}")
        assert status == 200, document
        return document if document["status"] == "completed" else None

    document = wait_for(completed, "the job to complete, seen through the second process")
    assert document["result"] == 7


def test_burst_runs_every_ready_job_then_exits_0(cluster: Cluster) -> None:
    app = cluster.app()
    submitted = submit_all(app, 20)
    process = cluster.spawn("jobs", "worker", "--burst", "--processes", "2", "--threads", "2")
    assert process.wait(60) == 0, cluster.log(process)
    assert statuses(submitted) == {JobStatus.COMPLETED: 20}


def test_the_runner_is_told_the_memory_backend_is_not_shared(tmp_path: pathlib.Path) -> None:
    cluster = Cluster("memory://", tmp_path)
    try:
        process = cluster.spawn("jobs", "worker", "--processes", "2")
        assert process.wait(60) == 2
        assert "needs a backend shared between processes" in cluster.log(process)
    finally:
        cluster.close()


def test_worker_processes_drain_and_exit_when_their_supervisor_is_killed(
    cluster: Cluster,
) -> None:
    supervisor = cluster.worker("--processes", "2", "--threads", "1", ready=2)
    line = wait_for(
        lambda: next(
            (text for text in cluster.log(supervisor).splitlines() if "worker processes:" in text),
            None,
        ),
        "the supervisor to name its processes",
    )
    children = [int(pid) for pid in line.rsplit(":", 1)[1].strip(" .").split(", ")]

    os.kill(supervisor.pid, signal.SIGKILL)
    supervisor.wait(10)

    wait_for(
        lambda: not any(os.path.exists(f"/proc/{pid}") for pid in children),
        f"the orphaned worker processes {children} to exit",
        timeout=20,
    )
