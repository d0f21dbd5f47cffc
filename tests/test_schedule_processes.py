"""A periodic schedule shared by real worker and web processes on every durable backend.

Every process runs :mod:`process_app` with the same schedule: a cron
expression (UTC, seconds last) that ticks once a second for exactly ten
seconds of one minute, from a start time the test picks after giving the
processes time to start. So exactly ten jobs are right, and any other count
is a lost or a doubled tick. Each job notes its run in the runs file.
"""

from __future__ import annotations

import collections
import pathlib
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone

import pytest

from cluster import Cluster, fresh_cluster, wait_for
from conftest import DURABLE_IDS
from flask_jobrunner import Job, JobStatus

pytestmark = pytest.mark.slow

#: Ticks of the schedule: one a second.
TICKS = 10
#: Seconds from the test's start to the first tick: time for five processes to start.
LEAD = 25.0


@pytest.fixture(params=DURABLE_IDS)
def cluster(
    request: pytest.FixtureRequest,
    backend_url_for: Callable[[str], str],
    tmp_path: pathlib.Path,
) -> Iterator[Cluster]:
    """A cluster on a fresh store of each durable backend in turn."""
    backend_id = str(request.param)
    url = backend_url_for(backend_id)
    with fresh_cluster(
        backend_id, url, tmp_path, schedule_catchup=60, shutdown_timeout=5
    ) as cluster:
        yield cluster


@pytest.fixture
def first_tick(monkeypatch: pytest.MonkeyPatch) -> datetime:
    """The first tick, LEAD seconds ahead; the schedule ticks each of TICKS seconds from it.

    The cron expression goes to the processes the test starts, in the
    environment: they read it when they import process_app (this process did already).
    """
    first = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=LEAD)
    if first.second + TICKS > 60:  # the window stays inside one minute
        first = (first + timedelta(minutes=1)).replace(second=0)
    last = first.second + TICKS - 1
    cron = f"{first.minute} {first.hour} {first.day} {first.month} * {first.second}-{last}"
    monkeypatch.setenv("JOBRUNNER_TEST_SCHEDULE", cron)
    return first


def start_processes(cluster: Cluster) -> None:
    """Three worker processes (under one supervisor) and two web processes.

    Each web process starts its scheduler with the first request, which
    :meth:`Cluster.web` makes while it waits for the process to answer.
    """
    cluster.worker("--processes", "3", "--threads", "2", ready=3)
    cluster.web()
    cluster.web()


def scheduled_jobs(cluster: Cluster) -> list[Job]:
    backend = cluster.app().extensions["jobrunner"].backend
    records, _ = backend.list_jobs(task="scheduled_run", limit=100)
    return [Job(record, backend) for record in records]


def now() -> datetime:
    return datetime.now(timezone.utc)


def seconds_until(moment: datetime) -> float:
    return max((moment - now()).total_seconds(), 0.0)


def wait_for_the_window_to_end(first: datetime) -> None:
    end = first + timedelta(seconds=TICKS + 2)
    wait_for(lambda: now() > end, "the end of the window", timeout=seconds_until(end) + 5)


def assert_one_job_per_tick(cluster: Cluster, first: datetime) -> None:
    """Exactly TICKS jobs, each created at or after its own tick, each run once."""
    wait_for(
        lambda: (
            len(scheduled_jobs(cluster)) >= TICKS
            and all(job.status is JobStatus.COMPLETED for job in scheduled_jobs(cluster))
        ),
        f"{TICKS} completed jobs (now {len(scheduled_jobs(cluster))})",
    )
    jobs = scheduled_jobs(cluster)
    assert len(jobs) == TICKS, sorted(job.record.created_at for job in jobs)
    created = sorted(job.record.created_at for job in jobs)
    assert created[0] >= first - timedelta(seconds=0.5)  # never ahead of its tick
    starts = collections.Counter(job_id for event, job_id, _ in cluster.runs() if event == "start")
    assert starts == {job.id: 1 for job in jobs}


def test_five_processes_sharing_a_schedule_create_exactly_one_job_per_tick(
    cluster: Cluster, first_tick: datetime
) -> None:
    start_processes(cluster)
    first = first_tick
    assert now() < first, f"the processes took more than {LEAD} s to start"

    wait_for_the_window_to_end(first)

    assert_one_job_per_tick(cluster, first)


def test_a_restart_in_the_middle_loses_no_tick_and_doubles_none(
    cluster: Cluster, first_tick: datetime
) -> None:
    start_processes(cluster)
    first = first_tick
    assert now() < first, f"the processes took more than {LEAD} s to start"
    middle = first + timedelta(seconds=TICKS / 2 - 0.5)
    wait_for(lambda: now() > middle, "the middle of the window", timeout=seconds_until(middle) + 5)

    cluster.end_processes()  # every process: the ticks until they are back are missed
    before = len(scheduled_jobs(cluster))
    assert 0 < before < TICKS
    start_processes(cluster)  # within the catch-up window of 60 s
    wait_for_the_window_to_end(first)

    assert_one_job_per_tick(cluster, first)
