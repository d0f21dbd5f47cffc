"""``flask jobs …``: list, show, submit (and watch), cancel, cleanup."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import Result
from flask import Flask

from conftest import settings, wait_until
from flask_jobrunner import Backend, JobRunner, JobStatus, Task, current_job


def run(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["jobs", *args])


@pytest.fixture
def load_holdings(jobs: JobRunner) -> Task[..., dict[str, Any]]:
    @jobs.task
    def load_holdings(etfs: list[str], limit: int = 10, note: str = "") -> dict[str, Any]:
        for done, etf in enumerate(etfs, 1):
            current_job.progress(done=done, total=len(etfs), message=f"Processed {etf}")
        return {"etfs": etfs, "limit": limit, "note": note}

    return load_holdings


@settings(run_workers=False)
def test_list_shows_jobs_newest_first_and_filters(
    app: Flask, jobs: JobRunner, load_holdings: Task[..., Any]
) -> None:
    older = load_holdings.submit(["SPY"])
    newer = load_holdings.submit(["QQQ"])
    jobs.cancel(older.id)

    result = run(app, "list")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[:3] for line in lines] == [
        [newer.id, "pending", "load_holdings"],
        [older.id, "cancelled", "load_holdings"],
    ]
    pending = run(app, "list", "--status", "pending")
    assert [line.split()[0] for line in pending.output.splitlines()] == [newer.id]
    assert run(app, "list", "--task", "other").output == ""
    assert len(run(app, "list", "--limit", "1").output.splitlines()) == 1


def test_list_shows_the_percentage_of_a_job(
    app: Flask, jobs: JobRunner, load_holdings: Task[..., Any]
) -> None:
    job = load_holdings.submit(["SPY", "QQQ", "DIA", "IWM"]).wait(timeout=5)

    result = run(app, "list")

    assert result.exit_code == 0, result.output
    assert result.output.split() == [job.id, "completed", "load_holdings", "100.0%"]


@settings(run_workers=False)
def test_list_refuses_an_unknown_status(app: Flask) -> None:
    result = run(app, "list", "--status", "bogus")

    assert result.exit_code == 2
    assert "'bogus' is not one of 'pending', 'in_progress'" in result.output


@pytest.mark.parametrize("limit", ["0", "-1", "many"])
@settings(run_workers=False)
def test_list_refuses_a_limit_that_is_not_a_positive_number(app: Flask, limit: str) -> None:
    result = run(app, "list", "--limit", limit)

    assert result.exit_code == 2
    assert "Invalid value for '--limit'" in result.output


def test_show_prints_the_status_document(
    app: Flask, jobs: JobRunner, load_holdings: Task[..., Any]
) -> None:
    job = load_holdings.submit(["SPY", "QQQ"], limit=3).wait(timeout=5)

    result = run(app, "show", job.id)

    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document == job.to_dict()
    assert document["status"] == "completed"
    assert document["result"] == {"etfs": ["SPY", "QQQ"], "limit": 3, "note": ""}
    assert document["message"] == "Processed QQQ"


@pytest.mark.parametrize("job_id", ["5f0c8a5e-8a5c-4c6e-9a0e-3e8f7d1b2c3d", "not-a-job-id"])
def test_show_of_an_unknown_job_fails(app: Flask, job_id: str) -> None:
    result = run(app, "show", job_id)

    assert result.exit_code == 1
    assert f"There is no job with id '{job_id}'." in result.output


@settings(run_workers=False)
def test_submit_parses_arguments_as_json_or_text(
    app: Flask, jobs: JobRunner, load_holdings: Task[..., Any]
) -> None:
    result = run(
        app, "submit", "load_holdings", "--arg", 'etfs=["SPY", "QQQ"]', "--arg", "limit=3",
        "--arg", "note=a=b c",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Submitted job ")
    job_id = result.output.split()[2]
    job = jobs.get(job_id)
    assert job is not None
    assert job.status is JobStatus.PENDING
    assert job.record.kwargs == {"etfs": ["SPY", "QQQ"], "limit": 3, "note": "a=b c"}


@settings(run_workers=False)
def test_submit_takes_the_task_name_with_dashes(
    app: Flask, jobs: JobRunner, load_holdings: Task[..., Any]
) -> None:
    result = run(app, "submit", "load-holdings", "--arg", 'etfs=["SPY"]')

    assert result.exit_code == 0, result.output
    [job] = jobs.list()
    assert job.task == "load_holdings"


def test_submit_watch_follows_the_job_until_completed(
    app: Flask, jobs: JobRunner, load_holdings: Task[..., Any]
) -> None:
    result = run(app, "submit", "load-holdings", "--arg", 'etfs=["SPY", "QQQ"]', "--watch")

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Submitted job ")
    document = json.loads(result.output[result.output.index("{") :])
    assert document["status"] == "completed"
    assert document["result"]["etfs"] == ["SPY", "QQQ"]
    [job] = jobs.list()
    assert document["job_id"] == job.id


def test_submit_watch_exits_nonzero_when_the_job_fails(app: Flask, jobs: JobRunner) -> None:
    @jobs.task
    def refuses() -> None:
        raise ValueError("no data for today")

    result = run(app, "submit", "refuses", "--watch")

    assert result.exit_code == 1
    document = json.loads(result.output[result.output.index("{") :])
    assert (document["status"], document["error_type"]) == ("failed", "validation")
    assert document["error"] == "no data for today"


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["missing"], 1, "There is no task named 'missing'."),
        (["load_holdings"], 1, "missing a required argument: 'etfs'"),
        (["load_holdings", "--arg", "etfs=SPY"], 1, "'etfs'"),
        (["load_holdings", "--arg", "etfs"], 2, "'etfs' is not NAME=VALUE."),
    ],
    ids=["unknown-task", "missing-argument", "wrong-type", "not-name-value"],
)
@settings(run_workers=False)
def test_submit_errors_say_what_is_wrong_and_store_nothing(
    app: Flask,
    jobs: JobRunner,
    load_holdings: Task[..., Any],
    args: list[str],
    code: int,
    text: str,
) -> None:
    result = run(app, "submit", *args)

    assert result.exit_code == code
    assert text in result.output
    assert "Traceback" not in result.output
    assert len(jobs.list()) == 0


@settings(run_workers=False)
def test_cancel_of_a_pending_job(
    app: Flask, jobs: JobRunner, load_holdings: Task[..., Any]
) -> None:
    job = load_holdings.submit(["SPY"])

    result = run(app, "cancel", job.id)

    assert result.exit_code == 0, result.output
    assert result.output == f"Job {job.id} is cancelled.\n"
    assert job.refresh().status is JobStatus.CANCELLED


@pytest.mark.parametrize("job_id", ["5f0c8a5e-8a5c-4c6e-9a0e-3e8f7d1b2c3d", "nope"])
def test_cancel_of_an_unknown_job_fails(app: Flask, job_id: str) -> None:
    result = run(app, "cancel", job_id)

    assert result.exit_code == 1
    assert f"There is no job with id '{job_id}'." in result.output


@settings(run_workers=False)
def test_cleanup_deletes_finished_jobs_past_the_result_ttl(
    app: Flask, jobs: JobRunner, backend: Backend, load_holdings: Task[..., Any]
) -> None:
    backend.result_ttl = 0.05
    finished = load_holdings.submit(["SPY"])
    jobs.cancel(finished.id)
    pending = load_holdings.submit(["QQQ"])

    first = run(app, "cleanup")
    assert first.exit_code == 0, first.output
    assert first.output in ("Deleted 0 expired jobs.\n", "Deleted 1 expired jobs.\n")
    if first.output.startswith("Deleted 0"):
        wait_until(lambda: run(app, "cleanup").output == "Deleted 1 expired jobs.\n", timeout=5)

    assert jobs.get(finished.id) is None
    assert jobs.get(pending.id) is not None
    assert run(app, "cleanup").output == "Deleted 0 expired jobs.\n"


@settings(run_workers=False)
def test_worker_burst_runs_the_ready_jobs_of_its_queues_then_returns(
    app: Flask, jobs: JobRunner
) -> None:
    @jobs.task
    def double(number: int) -> int:
        return 2 * number

    @jobs.task(queue="reports")
    def report() -> str:
        return "done"

    doubled = [double.submit(number) for number in range(5)]
    elsewhere = report.submit()

    result = run(app, "worker", "--burst", "--threads", "2", "--queue", "default")

    assert result.exit_code == 0, result.output
    assert [job.refresh().result for job in doubled] == [0, 2, 4, 6, 8]
    assert elsewhere.refresh().status is JobStatus.PENDING
    assert run(app, "worker", "--burst", "--queue", "reports").exit_code == 0
    assert elsewhere.refresh().result == "done"


def test_worker_with_processes_refuses_the_memory_backend(jobs: JobRunner) -> None:
    app = Flask("memory_only")
    jobs.init_app(app)

    result = run(app, "worker", "--processes", "2")

    assert result.exit_code == 2
    assert "needs a backend shared between processes" in result.output


def test_init_db_prepares_the_backend(app: Flask, backend: Backend) -> None:
    result = run(app, "init-db")

    assert result.exit_code == 0, result.output
    assert f"The {type(backend).__name__} is ready." in result.output
