"""Bulk submit: ``jobs.submit_many`` and ``Task.submit_many`` over every backend.

Every test runs against the ``app`` fixture (each backend in turn) with the
app's worker threads, or in eager mode; waits are bounded.
"""

from __future__ import annotations

import threading
from typing import Annotated

import pytest
from flask import Flask
from pydantic import Field

from conftest import settings
from flask_jobrunner import (
    InvalidArguments,
    Job,
    JobRunner,
    JobStatus,
    TaskNotFound,
    job_submitted,
)


def test_submit_many_runs_one_job_per_call_and_returns_them_in_order(
    app: Flask, jobs: JobRunner
) -> None:
    @jobs.task
    def add(a: int, b: int = 10) -> int:
        return a + b

    submitted = jobs.submit_many("add", [{"a": 1}, (2, 3), [4], {"a": 5, "b": 6}])

    assert [job.status for job in submitted] == [JobStatus.PENDING] * 4
    assert len({job.id for job in submitted}) == 4
    assert [job.wait(timeout=10).result for job in submitted] == [11, 5, 14, 11]
    assert [job.record.kwargs for job in submitted] == [
        {"a": 1},
        {"a": 2, "b": 3},
        {"a": 4},
        {"a": 5, "b": 6},
    ]


def test_task_submit_many_stores_every_job_readable_by_id(app: Flask, jobs: JobRunner) -> None:
    @jobs.task
    def square(x: int) -> int:
        return x * x

    submitted = square.submit_many({"x": x} for x in range(50))

    for x, job in enumerate(submitted):
        assert job.wait(timeout=20).result == x * x
        found = jobs.get(job.id)
        assert found is not None
        assert found.status is JobStatus.COMPLETED
    page = jobs.list(task="square", limit=100)
    assert {job.id for job in page} == {job.id for job in submitted}


@settings(run_workers=False)
def test_a_wrong_call_is_refused_by_index_and_parameter_and_nothing_is_stored(
    app: Flask, jobs: JobRunner
) -> None:
    @jobs.task
    def scale(factor: Annotated[int, Field(ge=1)]) -> None:
        pass

    with pytest.raises(InvalidArguments) as caught:
        scale.submit_many([{"factor": 2}, {"factor": 3}, {"factor": 0}, {"factor": 4}])

    assert "Call 2 of 'submit_many'" in caught.value.message
    assert "'factor'" in caught.value.message
    assert caught.value.details[0]["call"] == 2
    assert caught.value.details[0]["parameter"] == "factor"
    assert len(jobs.list(task="scale")) == 0


@settings(run_workers=False)
def test_a_call_that_is_neither_a_mapping_nor_a_sequence_is_refused(
    app: Flask, jobs: JobRunner
) -> None:
    @jobs.task
    def echo(text: str) -> str:
        return text

    with pytest.raises(InvalidArguments, match=r"Call 1 of 'submit_many' .* is a str"):
        echo.submit_many([{"text": "a"}, "b"])  # type: ignore[list-item]
    with pytest.raises(InvalidArguments, match=r"Call 0 of 'submit_many'.*'extra'"):
        echo.submit_many([{"text": "a", "extra": 1}])
    assert len(jobs.list(task="echo")) == 0


@settings(run_workers=False)
def test_a_unique_task_is_refused_with_a_clear_error(app: Flask, jobs: JobRunner) -> None:
    @jobs.task(unique=True)
    def nightly() -> None:
        pass

    with pytest.raises(InvalidArguments, match=r"'nightly' is unique.*Call 'submit' once per job"):
        nightly.submit_many([{}, {}])
    assert len(jobs.list(task="nightly")) == 0


def test_an_unknown_task_name_is_refused(app: Flask, jobs: JobRunner) -> None:
    with pytest.raises(TaskNotFound):
        jobs.submit_many("nothing_by_that_name", [{}])


@settings(run_workers=False)
def test_no_calls_store_nothing_and_return_an_empty_list(app: Flask, jobs: JobRunner) -> None:
    @jobs.task
    def noop() -> None:
        pass

    assert noop.submit_many([]) == []
    assert len(jobs.list()) == 0


@settings(eager=True)
def test_submit_many_runs_every_job_at_once_in_eager_mode(app: Flask, jobs: JobRunner) -> None:
    ran: list[int] = []

    @jobs.task
    def record(n: int) -> int:
        ran.append(n)
        return n

    submitted = record.submit_many([{"n": n} for n in range(5)])

    assert sorted(ran) == [0, 1, 2, 3, 4]
    assert [job.status for job in submitted] == [JobStatus.COMPLETED] * 5
    assert [job.result for job in submitted] == [0, 1, 2, 3, 4]


def test_each_job_sends_job_submitted_and_the_worker_pool_starts(
    app: Flask, jobs: JobRunner
) -> None:
    seen: list[str] = []
    started = threading.Event()

    @jobs.task
    def wait_for_start() -> None:
        started.set()

    def on_submitted(sender: Flask, job: Job) -> None:
        seen.append(job.id)

    with job_submitted.connected_to(on_submitted, app):
        submitted = wait_for_start.submit_many([{}, {}, {}])

    assert seen == [job.id for job in submitted]
    assert started.wait(timeout=10), "no worker ran the jobs"
    for job in submitted:
        assert job.wait(timeout=10).status is JobStatus.COMPLETED


@settings(run_workers=False)
def test_jobs_submitted_together_are_each_claimed_once(app: Flask, jobs: JobRunner) -> None:
    @jobs.task
    def step(n: int) -> None:
        pass

    submitted = step.submit_many([{"n": n} for n in range(20)])
    backend = jobs.get_state(app).backend

    claimed = []
    while claims := backend.claim(["default"], lease=30, limit=3):
        claimed += [claim.record.id for claim in claims]
    assert sorted(claimed) == sorted(job.id for job in submitted)
    assert backend.counts()[JobStatus.IN_PROGRESS] == 20
