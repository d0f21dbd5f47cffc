"""The HTTP contract of DESIGN §2, through the Flask test client (``/events`` aside)."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import settings, wait_until
from flask_jobrunner import Backend, JobRunner, Task, current_job
from flask_jobrunner.record import JobRecord, Progress, new_job_id

PREFIX = "/api/jobs"
ACCEPTED_KEYS = {"job_id", "status", "message", "polling_url"}


#: Jobs stay ``pending``: the app enqueues and no worker ever claims.
enqueue_only = settings(run_workers=False)


@pytest.fixture
def noop(jobs: JobRunner) -> Task[[], None]:
    """An HTTP task named 'noop' that does nothing."""

    @jobs.task(http=True)
    def noop() -> None:
        pass

    return noop


@pytest.fixture
def gate(app: Flask) -> Iterator[threading.Event]:
    """An event a task waits on; set at teardown, before the app's worker stops."""
    event = threading.Event()
    yield event
    event.set()


@dataclasses.dataclass
class Window:
    """A date window, as a task parameter that is a nested model."""

    start: str
    days: int = 7


def submit(client: FlaskClient, task: str, **kwargs: Any) -> str:
    """Submit *task* over HTTP; returns the new job's id."""
    response = client.post(f"{PREFIX}/{task}", json=kwargs)
    assert response.status_code == 202, response.get_json()
    job_id: str = response.get_json()["job_id"]
    return job_id


def read(client: FlaskClient, job_id: str) -> dict[str, Any]:
    response = client.get(f"{PREFIX}/{job_id}")
    assert response.status_code == 200, response.get_json()
    document: dict[str, Any] = response.get_json()
    return document


def wait_finished(jobs: JobRunner, job_id: str) -> None:
    job = jobs.get(job_id)
    assert job is not None
    job.wait(timeout=10)


def parse_time(text: str) -> datetime:
    assert text.endswith("Z"), text
    moment = datetime.fromisoformat(text[:-1] + "+00:00")
    assert moment.utcoffset() == timedelta(0)
    return moment


# -- 202 Accepted ---------------------------------------------------------------


@enqueue_only
def test_submit_answers_202_with_location_retry_after_and_the_accepted_body(
    app: Flask, jobs: JobRunner, client: FlaskClient
) -> None:
    @jobs.task(http=True)
    def add(a: int, b: int) -> int:
        return a + b

    response = client.post(f"{PREFIX}/add", json={"a": 1, "b": 2})

    assert response.status_code == 202
    body = response.get_json()
    assert set(body) == ACCEPTED_KEYS
    assert uuid.UUID(body["job_id"]).version == 4
    assert body["status"] == "pending"
    assert body["message"] == "Job accepted for processing"
    assert body["polling_url"] == f"{PREFIX}/{body['job_id']}"
    assert response.headers["Location"] == body["polling_url"]
    assert response.headers["Retry-After"] == str(app.config["JOBRUNNER_RETRY_AFTER_INITIAL"])


@enqueue_only
@pytest.mark.usefixtures("noop")
def test_location_of_a_new_job_is_where_the_client_reads_it(
    jobs: JobRunner, client: FlaskClient
) -> None:
    location = client.post(f"{PREFIX}/noop").headers["Location"]

    document = read(client, location.removeprefix(PREFIX + "/"))
    assert client.get(location).get_json() == document
    assert document["task"] == "noop"


@enqueue_only
@pytest.mark.usefixtures("noop")
def test_location_keeps_the_script_root_of_an_app_mounted_below_the_server_root(
    jobs: JobRunner, client: FlaskClient
) -> None:
    response = client.post(f"{PREFIX}/noop", base_url="http://localhost/tools")

    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    assert response.headers["Location"] == f"/tools{PREFIX}/{job_id}"
    assert response.get_json()["polling_url"] == f"/tools{PREFIX}/{job_id}"
    document = client.get(f"{PREFIX}/{job_id}", base_url="http://localhost/tools").get_json()
    assert document["polling_url"] == f"/tools{PREFIX}/{job_id}"


@pytest.mark.parametrize(
    "config", [{"JOBRUNNER_RETRY_AFTER_INITIAL": 2}], indirect=True, ids=["initial-2"]
)
@pytest.mark.usefixtures("noop")
def test_accepted_retry_after_is_the_configured_initial_delay(
    jobs: JobRunner, client: FlaskClient
) -> None:
    assert client.post(f"{PREFIX}/noop").headers["Retry-After"] == "2"


def test_submit_by_name_in_the_body_passes_args_and_kwargs(
    jobs: JobRunner, client: FlaskClient
) -> None:
    @jobs.task(http=True)
    def scale(values: list[int], factor: int = 1, *, offset: int = 0) -> list[int]:
        return [value * factor + offset for value in values]

    response = client.post(
        PREFIX, json={"task": "scale", "args": [[1, 2, 3], 10], "kwargs": {"offset": 5}}
    )

    assert response.status_code == 202
    assert set(response.get_json()) == ACCEPTED_KEYS
    job_id = response.get_json()["job_id"]
    wait_finished(jobs, job_id)
    assert read(client, job_id)["result"] == [15, 25, 35]


def test_submit_by_name_in_the_body_defaults_args_and_kwargs(
    jobs: JobRunner, client: FlaskClient
) -> None:
    @jobs.task(http=True)
    def greet(name: str = "world") -> str:
        return f"hello {name}"

    response = client.post(PREFIX, json={"task": "greet"})

    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    wait_finished(jobs, job_id)
    assert read(client, job_id)["result"] == "hello world"


@pytest.mark.parametrize("path_name", ["load-etf-holdings", "load_etf_holdings"])
def test_submit_by_path_accepts_the_task_name_with_dashes_or_underscores(
    jobs: JobRunner, client: FlaskClient, path_name: str
) -> None:
    @jobs.task(http=True)
    def load_etf_holdings(etfs: list[str] = ["SPY", "QQQ"]) -> dict[str, int]:  # noqa: B006
        return {"etfs_processed": len(etfs)}

    response = client.post(f"{PREFIX}/{path_name}", json={"etfs": ["SPY", "QQQ", "DIA"]})

    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    wait_finished(jobs, job_id)
    document = read(client, job_id)
    assert document["task"] == "load_etf_holdings"
    assert document["result"] == {"etfs_processed": 3}


def test_submit_by_path_finds_a_task_whose_name_has_dashes(
    jobs: JobRunner, client: FlaskClient
) -> None:
    @jobs.task(name="send-report", http=True)
    def send_report(to: str) -> str:
        return to

    response = client.post(f"{PREFIX}/send-report", json={"to": "ops@example.com"})

    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    wait_finished(jobs, job_id)
    assert read(client, job_id)["result"] == "ops@example.com"


def test_submit_by_path_takes_the_path_the_openapi_document_gives(
    jobs: JobRunner, client: FlaskClient
) -> None:
    @jobs.task(name="daily_report-v2", http=True)
    def daily_report() -> str:
        return "sent"

    path = next(p for p in client.get(f"{PREFIX}/openapi.json").get_json()["paths"] if "v2" in p)
    assert path == f"{PREFIX}/daily-report-v2"  # neither the name nor the name with '_'

    response = client.post(path)

    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    wait_finished(jobs, job_id)
    assert read(client, job_id)["result"] == "sent"


def test_submit_by_path_with_no_body_uses_the_defaults(
    jobs: JobRunner, client: FlaskClient
) -> None:
    @jobs.task(http=True)
    def count(limit: int = 3) -> int:
        return limit

    response = client.post(f"{PREFIX}/count")

    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    wait_finished(jobs, job_id)
    assert read(client, job_id)["result"] == 3


# -- status documents -----------------------------------------------------------


@enqueue_only
@pytest.mark.usefixtures("noop")
def test_pending_job_document_has_only_the_fields_that_apply(
    jobs: JobRunner, client: FlaskClient
) -> None:
    job_id = submit(client, "noop")

    response = client.get(f"{PREFIX}/{job_id}")
    assert response.status_code == 200
    document = response.get_json()
    assert set(document) == {
        "job_id",
        "task",
        "status",
        "created_at",
        "updated_at",
        "attempts",
        "polling_url",
    }
    assert document["job_id"] == job_id
    assert document["task"] == "noop"
    assert document["status"] == "pending"
    assert document["attempts"] == 0
    assert document["polling_url"] == f"{PREFIX}/{job_id}"
    created = parse_time(document["created_at"])
    assert abs(datetime.now(timezone.utc) - created) < timedelta(minutes=1)
    assert parse_time(document["updated_at"]) >= created
    assert "Retry-After" in response.headers


def test_running_job_document_shows_its_progress(
    jobs: JobRunner, client: FlaskClient, gate: threading.Event
) -> None:
    @jobs.task(http=True)
    def import_rows(total: int) -> int:
        current_job.progress(done=2, total=total, message=f"Imported 2 of {total} rows")
        gate.wait(10)
        return total

    job_id = submit(client, "import_rows", total=4)

    document = wait_until(lambda: (doc := read(client, job_id)).get("items_processed") == 2 and doc)
    assert document["status"] == "in_progress"
    assert document["percentage"] == 50
    assert document["message"] == "Imported 2 of 4 rows"
    assert document["items_processed"] == 2
    assert document["total_items"] == 4
    assert document["attempts"] == 1
    assert parse_time(document["started_at"]) >= parse_time(document["created_at"])
    for absent in ("result", "completed_at", "failed_at", "cancelled_at", "error"):
        assert absent not in document
    assert "Retry-After" in client.get(f"{PREFIX}/{job_id}").headers

    gate.set()
    wait_finished(jobs, job_id)


def test_completed_job_document_has_its_result_and_completed_at(
    jobs: JobRunner, client: FlaskClient
) -> None:
    @jobs.task(http=True)
    def summarise(symbols: list[str]) -> dict[str, Any]:
        for done, _ in enumerate(symbols, 1):
            current_job.progress(done=done, total=len(symbols), message=f"Checked {done}")
        return {"checked": symbols}

    job_id = submit(client, "summarise", symbols=["AAPL", "MSFT"])
    wait_finished(jobs, job_id)

    response = client.get(f"{PREFIX}/{job_id}")
    document = response.get_json()
    assert document["status"] == "completed"
    assert document["result"] == {"checked": ["AAPL", "MSFT"]}
    assert document["percentage"] == 100
    assert document["items_processed"] == document["total_items"] == 2
    assert document["message"] == "Checked 2"
    completed = parse_time(document["completed_at"])
    assert completed >= parse_time(document["started_at"]) >= parse_time(document["created_at"])
    for absent in ("failed_at", "cancelled_at", "error", "error_type"):
        assert absent not in document
    assert "Retry-After" not in response.headers


@pytest.mark.usefixtures("noop")
def test_completed_job_with_no_return_value_has_a_null_result(
    jobs: JobRunner, client: FlaskClient
) -> None:
    job_id = submit(client, "noop")
    wait_finished(jobs, job_id)

    document = read(client, job_id)
    assert document["status"] == "completed"
    assert "result" in document
    assert document["result"] is None


def test_task_raising_value_error_fails_with_error_type_validation(
    jobs: JobRunner, client: FlaskClient
) -> None:
    @jobs.task(http=True, retries=2)
    def load_symbol(symbol: str) -> None:
        raise ValueError(f"Unknown symbol '{symbol}'.")

    job_id = submit(client, "load_symbol", symbol="XYZ")
    wait_finished(jobs, job_id)

    response = client.get(f"{PREFIX}/{job_id}")
    document = response.get_json()
    assert document["status"] == "failed"
    assert document["error_type"] == "validation"
    assert document["error"] == "Unknown symbol 'XYZ'."
    assert document["attempts"] == 1  # a ValueError is not retried
    assert parse_time(document["failed_at"]) >= parse_time(document["created_at"])
    for absent in ("result", "completed_at", "cancelled_at"):
        assert absent not in document
    assert "Retry-After" not in response.headers


def test_task_raising_anything_else_fails_with_error_type_system(
    jobs: JobRunner, client: FlaskClient
) -> None:
    @jobs.task(http=True)
    def crash() -> None:
        raise RuntimeError("disk on fire")

    job_id = submit(client, "crash")
    wait_finished(jobs, job_id)

    document = read(client, job_id)
    assert document["status"] == "failed"
    assert document["error_type"] == "system"
    assert document["error"].startswith("Internal error:")
    assert "disk on fire" in document["error"]
    assert "failed_at" in document
    assert "result" not in document


@enqueue_only
@pytest.mark.usefixtures("noop")
def test_cancelled_job_document_has_cancelled_at(jobs: JobRunner, client: FlaskClient) -> None:
    job_id = submit(client, "noop")
    assert client.post(f"{PREFIX}/{job_id}/cancel").status_code == 202

    response = client.get(f"{PREFIX}/{job_id}")
    document = response.get_json()
    assert document["status"] == "cancelled"
    assert parse_time(document["cancelled_at"]) >= parse_time(document["created_at"])
    for absent in ("result", "completed_at", "failed_at", "error"):
        assert absent not in document
    assert "Retry-After" not in response.headers


# -- Retry-After ------------------------------------------------------------------


def store_pending(backend: Backend, age: float, **fields: Any) -> str:
    """Store a pending job that was created *age* seconds ago, straight in the backend."""
    created = backend.now() - timedelta(seconds=age)
    record = JobRecord(id=new_job_id(), task="report", created_at=created, **fields)
    stored, created_new = backend.enqueue(record)
    assert created_new
    return stored.id


def retry_after(client: FlaskClient, job_id: str) -> int:
    response = client.get(f"{PREFIX}/{job_id}")
    assert response.status_code == 200
    return int(response.headers["Retry-After"])


@enqueue_only
@pytest.mark.usefixtures("noop")
def test_retry_after_of_a_new_job_is_the_initial_delay(
    app: Flask, jobs: JobRunner, client: FlaskClient
) -> None:
    job_id = submit(client, "noop")

    assert retry_after(client, job_id) == app.config["JOBRUNNER_RETRY_AFTER_INITIAL"]


@pytest.mark.parametrize(
    "config",
    [
        {
            "JOBRUNNER_RUN_WORKERS": False,
            "JOBRUNNER_RETRY_AFTER_INITIAL": 2,
            "JOBRUNNER_RETRY_AFTER_MAX": 30,
        }
    ],
    indirect=True,
    ids=["enqueue-only"],
)
def test_retry_after_grows_with_the_age_of_the_job_within_its_bounds(
    backend: Backend, client: FlaskClient
) -> None:
    ages = [0, 30, 120, 600, 86400]
    delays = [retry_after(client, store_pending(backend, age)) for age in ages]

    assert delays == sorted(delays)
    assert delays[0] == 2
    assert delays[2] > delays[1] > delays[0]
    assert all(2 <= delay <= 30 for delay in delays)
    assert delays[-1] == 30


@pytest.mark.parametrize(
    "config",
    [{"JOBRUNNER_RUN_WORKERS": False, "JOBRUNNER_RETRY_AFTER_INITIAL": 1}],
    indirect=True,
    ids=["enqueue-only"],
)
def test_retry_after_is_shorter_for_a_running_job_that_is_nearly_done(
    backend: Backend, client: FlaskClient
) -> None:
    def running(percentage: float) -> str:
        # Created and started five minutes ago, now reporting *percentage*.
        started = backend.now() - timedelta(seconds=300)
        job_id = store_pending(backend, 300, queue="parked", started_at=started)
        (claim,) = backend.claim(["parked"], lease=60)
        backend.progress(job_id, claim.token, Progress(percentage=percentage), lease=60)
        return job_id

    barely_started, nearly_done = running(5), running(99)

    assert retry_after(client, nearly_done) < retry_after(client, barely_started)
    assert retry_after(client, nearly_done) >= 1


@pytest.mark.usefixtures("noop")
def test_retry_after_is_absent_once_the_job_finished(jobs: JobRunner, client: FlaskClient) -> None:
    job_id = submit(client, "noop")
    wait_finished(jobs, job_id)

    assert "Retry-After" not in client.get(f"{PREFIX}/{job_id}").headers


# -- listing ---------------------------------------------------------------------


def list_page(client: FlaskClient, query: str = "") -> dict[str, Any]:
    response = client.get(f"{PREFIX}?{query}")
    assert response.status_code == 200, response.get_json()
    page: dict[str, Any] = response.get_json()
    assert set(page) == {"jobs", "next_cursor"}
    return page


def listed_ids(client: FlaskClient, query: str = "") -> list[str]:
    return [document["job_id"] for document in list_page(client, query)["jobs"]]


@enqueue_only
@pytest.mark.usefixtures("noop")
def test_list_answers_status_documents_newest_first(jobs: JobRunner, client: FlaskClient) -> None:
    submitted = [submit(client, "noop") for _ in range(3)]

    page = list_page(client)
    assert [document["job_id"] for document in page["jobs"]] == submitted[::-1]
    assert page["next_cursor"] is None
    assert page["jobs"][0] == read(client, submitted[-1])


@enqueue_only
def test_list_filters_by_status_and_task(jobs: JobRunner, client: FlaskClient) -> None:
    @jobs.task(http=True)
    def alpha() -> None:
        pass

    @jobs.task(http=True)
    def beta() -> None:
        pass

    alpha_pending = submit(client, "alpha")
    alpha_cancelled = submit(client, "alpha")
    beta_pending = submit(client, "beta")
    beta_cancelled = submit(client, "beta")
    for job_id in (alpha_cancelled, beta_cancelled):
        assert client.post(f"{PREFIX}/{job_id}/cancel").status_code == 202

    assert set(listed_ids(client, "status=pending")) == {alpha_pending, beta_pending}
    assert set(listed_ids(client, "status=cancelled")) == {alpha_cancelled, beta_cancelled}
    assert set(listed_ids(client, "task=alpha")) == {alpha_pending, alpha_cancelled}
    assert listed_ids(client, "task=beta&status=cancelled") == [beta_cancelled]
    assert listed_ids(client, "status=completed") == []
    assert listed_ids(client, "task=gamma") == []


def test_list_filters_finished_jobs_by_status(jobs: JobRunner, client: FlaskClient) -> None:
    @jobs.task(http=True)
    def check(value: int) -> int:
        if value < 0:
            raise ValueError("value must not be negative")
        return value

    completed = submit(client, "check", value=1)
    failed = submit(client, "check", value=-1)
    for job_id in (completed, failed):
        wait_finished(jobs, job_id)

    assert listed_ids(client, "status=completed") == [completed]
    assert listed_ids(client, "status=failed") == [failed]
    assert listed_ids(client, "status=in_progress") == []


@enqueue_only
@pytest.mark.usefixtures("noop")
def test_list_limit_caps_the_page_size(jobs: JobRunner, client: FlaskClient) -> None:
    for _ in range(4):
        submit(client, "noop")

    page = list_page(client, "limit=3")
    assert len(page["jobs"]) == 3
    assert page["next_cursor"]


def follow_pages(client: FlaskClient, query: str, cursor: str | None = None) -> list[list[str]]:
    """The job ids of each page, following ``next_cursor`` from *cursor* to the end."""
    pages = []
    for _ in range(50):
        page = list_page(client, query + (f"&cursor={cursor}" if cursor else ""))
        pages.append([document["job_id"] for document in page["jobs"]])
        cursor = page["next_cursor"]
        if cursor is None:
            return pages
    pytest.fail("the cursor never ran out")


@enqueue_only
@pytest.mark.usefixtures("noop")
def test_cursor_pagination_visits_every_job_once_in_order(
    jobs: JobRunner, client: FlaskClient
) -> None:
    submitted = [submit(client, "noop") for _ in range(7)]

    pages = follow_pages(client, "limit=3")

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [job_id for page in pages for job_id in page] == submitted[::-1]


@enqueue_only
@pytest.mark.usefixtures("noop")
def test_cursor_pagination_ending_on_a_full_page_has_no_next_cursor(
    jobs: JobRunner, client: FlaskClient
) -> None:
    submitted = [submit(client, "noop") for _ in range(6)]

    pages = follow_pages(client, "limit=3")

    assert [len(page) for page in pages] == [3, 3]
    assert [job_id for page in pages for job_id in page] == submitted[::-1]


@enqueue_only
@pytest.mark.usefixtures("noop")
def test_cursor_pagination_is_not_shifted_by_jobs_submitted_while_paging(
    jobs: JobRunner, client: FlaskClient
) -> None:
    submitted = [submit(client, "noop") for _ in range(5)]
    first = list_page(client, "limit=2")
    later = [submit(client, "noop") for _ in range(3)]

    rest = follow_pages(client, "limit=2", first["next_cursor"])

    seen = [document["job_id"] for document in first["jobs"]] + [i for p in rest for i in p]
    assert seen == submitted[::-1]
    assert not set(later) & set(seen)


@enqueue_only
def test_cursor_pagination_keeps_the_filters(jobs: JobRunner, client: FlaskClient) -> None:
    @jobs.task(http=True)
    def alpha() -> None:
        pass

    @jobs.task(http=True)
    def beta() -> None:
        pass

    alphas = []
    for _ in range(5):
        alphas.append(submit(client, "alpha"))
        submit(client, "beta")

    pages = follow_pages(client, "task=alpha&limit=2")

    assert [job_id for page in pages for job_id in page] == alphas[::-1]


# -- cancel ----------------------------------------------------------------------


@enqueue_only
@pytest.mark.usefixtures("noop")
def test_cancel_of_a_pending_job_answers_202_and_cancels_it_at_once(
    jobs: JobRunner, client: FlaskClient
) -> None:
    job_id = submit(client, "noop")

    response = client.post(f"{PREFIX}/{job_id}/cancel")

    assert response.status_code == 202
    assert response.get_json()["job_id"] == job_id
    assert response.get_json()["status"] == "cancelled"
    assert read(client, job_id)["status"] == "cancelled"


def test_cancel_of_a_running_job_answers_202_and_stops_it_at_its_next_check(
    jobs: JobRunner, client: FlaskClient, gate: threading.Event
) -> None:
    @jobs.task(http=True)
    def crawl() -> str:
        current_job.progress(percentage=1, message="started")
        while not gate.wait(0.01):
            current_job.check()
        return "ran to the end"

    job_id = submit(client, "crawl")
    wait_until(lambda: read(client, job_id).get("message") == "started")

    response = client.post(f"{PREFIX}/{job_id}/cancel")

    assert response.status_code == 202
    body = response.get_json()
    assert body["job_id"] == job_id
    assert body["status"] in {"in_progress", "cancelled"}
    wait_finished(jobs, job_id)
    document = read(client, job_id)
    assert document["status"] == "cancelled"
    assert "cancelled_at" in document
    assert "result" not in document


def test_cancel_of_a_finished_job_answers_409(jobs: JobRunner, client: FlaskClient) -> None:
    @jobs.task(http=True)
    def noop() -> str:
        return "done"

    job_id = submit(client, "noop")
    wait_finished(jobs, job_id)

    response = client.post(f"{PREFIX}/{job_id}/cancel")

    assert response.status_code == 409
    body = response.get_json()
    assert set(body) == {"error", "details"}
    assert job_id in body["error"]
    document = read(client, job_id)
    assert document["status"] == "completed"
    assert document["result"] == "done"


@enqueue_only
@pytest.mark.usefixtures("noop")
def test_cancel_of_a_cancelled_job_answers_409(jobs: JobRunner, client: FlaskClient) -> None:
    job_id = submit(client, "noop")
    assert client.post(f"{PREFIX}/{job_id}/cancel").status_code == 202

    assert client.post(f"{PREFIX}/{job_id}/cancel").status_code == 409


# -- unique and idempotent submits -------------------------------------------------


@enqueue_only
def test_unique_task_with_a_pending_job_answers_409_naming_that_job(
    jobs: JobRunner, client: FlaskClient
) -> None:
    @jobs.task(http=True, unique=True)
    def rebuild() -> None:
        pass

    first = submit(client, "rebuild")

    response = client.post(f"{PREFIX}/rebuild")

    assert response.status_code == 409
    body = response.get_json()
    assert set(body) == {"error", "details"}
    assert first in body["error"]
    assert body["details"]["job_id"] == first
    assert response.headers["Location"] == f"{PREFIX}/{first}"
    assert listed_ids(client) == [first]


def test_unique_task_with_a_running_job_answers_409_naming_that_job(
    jobs: JobRunner, client: FlaskClient, gate: threading.Event
) -> None:
    @jobs.task(http=True, unique=True)
    def rebuild() -> None:
        current_job.progress(message="running")
        gate.wait(10)

    first = submit(client, "rebuild")
    wait_until(lambda: read(client, first)["status"] == "in_progress")

    response = client.post(PREFIX, json={"task": "rebuild"})

    assert response.status_code == 409
    assert response.get_json()["details"]["job_id"] == first
    assert response.headers["Location"] == f"{PREFIX}/{first}"
    gate.set()
    wait_finished(jobs, first)


@enqueue_only
def test_unique_task_accepts_a_new_job_once_the_first_ended(
    jobs: JobRunner, client: FlaskClient
) -> None:
    @jobs.task(http=True, unique=True)
    def rebuild() -> None:
        pass

    first = submit(client, "rebuild")
    client.post(f"{PREFIX}/{first}/cancel")

    second = submit(client, "rebuild")

    assert second != first


@enqueue_only
@pytest.mark.parametrize("route", ["path", "body"])
def test_idempotency_key_returns_the_first_job(
    jobs: JobRunner, client: FlaskClient, route: str
) -> None:
    @jobs.task(http=True)
    def charge(amount: int) -> None:
        pass

    def post(key: str, amount: int) -> Any:
        headers = {"Idempotency-Key": key}
        if route == "path":
            return client.post(f"{PREFIX}/charge", json={"amount": amount}, headers=headers)
        return client.post(
            PREFIX, json={"task": "charge", "kwargs": {"amount": amount}}, headers=headers
        )

    first = post("order-17", 100)
    again = post("order-17", 100)
    other = post("order-18", 100)

    assert first.status_code == again.status_code == other.status_code == 202
    assert again.get_json()["job_id"] == first.get_json()["job_id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert other.get_json()["job_id"] != first.get_json()["job_id"]
    assert len(listed_ids(client)) == 2


@enqueue_only
@pytest.mark.usefixtures("noop")
def test_submits_without_an_idempotency_key_each_create_a_job(
    jobs: JobRunner, client: FlaskClient
) -> None:
    assert submit(client, "noop") != submit(client, "noop")


# -- OpenAPI ---------------------------------------------------------------------


def resolve(document: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    assert isinstance(node, dict)
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def test_openapi_document_describes_each_http_task_with_json_schema(
    jobs: JobRunner, client: FlaskClient
) -> None:
    @jobs.task(http=True)
    def load_prices(
        symbols: list[str],
        window: Window,
        adjusted: bool = True,
        mode: Literal["fast", "full"] = "fast",
    ) -> None:
        """Load daily prices for some symbols."""

    @jobs.task
    def rebuild_index() -> None:
        pass

    response = client.get(f"{PREFIX}/openapi.json")

    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document = response.get_json()
    assert document["openapi"].startswith("3.1")
    assert {"title", "version"} <= set(document["info"])
    operation = document["paths"][f"{PREFIX}/load-prices"]["post"]
    assert operation["summary"] == "Load daily prices for some symbols."
    assert "202" in operation["responses"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    schema = resolve(document, body["$ref"]) if "$ref" in body else body
    assert schema["type"] == "object"
    assert set(schema["required"]) == {"symbols", "window"}
    assert schema.get("additionalProperties") is False
    properties = schema["properties"]
    assert properties["symbols"]["type"] == "array"
    assert properties["symbols"]["items"] == {"type": "string"}
    assert properties["adjusted"]["type"] == "boolean"
    assert properties["adjusted"]["default"] is True
    assert properties["mode"]["enum"] == ["fast", "full"]
    assert properties["mode"]["default"] == "fast"
    window = resolve(document, properties["window"]["$ref"])
    assert window["properties"]["start"]["type"] == "string"
    assert window["properties"]["days"]["type"] == "integer"
    assert window["required"] == ["start"]
    for ref in refs(document):
        resolve(document, ref)


@dataclasses.dataclass
class Job:
    """A task parameter whose model has the name of the API's own ``Job`` schema."""

    symbol: str


def test_openapi_document_keeps_each_schema_under_a_name_of_its_own(
    jobs: JobRunner, client: FlaskClient
) -> None:
    @jobs.task(http=True)
    def first(job: Job) -> None:
        pass

    @jobs.task(http=True)
    def second(job: Window, **options: int) -> None:
        pass

    document = client.get(f"{PREFIX}/openapi.json").get_json()

    schemas = document["components"]["schemas"]
    assert "status" in schemas["Job"]["properties"]  # the API's own status document, untouched
    nested = resolve(document, schemas["FirstArguments"]["properties"]["job"]["$ref"])
    assert set(nested["properties"]) == {"symbol"}
    second_body = schemas["SecondArguments"]
    assert set(second_body["properties"]) == {"job"}  # '**options' is no property of its own
    assert second_body["additionalProperties"] == {"type": "integer"}
    assert "start" in resolve(document, second_body["properties"]["job"]["$ref"])["properties"]
    for ref in refs(document):
        resolve(document, ref)


def test_openapi_document_marks_a_body_required_only_when_an_argument_is(
    jobs: JobRunner, client: FlaskClient
) -> None:
    @jobs.task(http=True)
    def needs_symbol(symbol: str) -> None:
        pass

    @jobs.task(http=True)
    def has_defaults(days: int = 7) -> None:
        pass

    @jobs.task(http=True)
    def positional_only(symbol: str, /) -> None:
        pass

    paths = client.get(f"{PREFIX}/openapi.json").get_json()["paths"]

    assert paths[f"{PREFIX}/needs-symbol"]["post"]["requestBody"]["required"] is True
    assert paths[f"{PREFIX}/has-defaults"]["post"]["requestBody"]["required"] is False
    # No keyword body can pass a positional-only argument: only 'POST {prefix}' with "args".
    assert f"{PREFIX}/positional-only" not in paths
    assert paths[PREFIX]["post"]["requestBody"]["required"] is True


def test_openapi_document_leaves_out_tasks_not_open_to_http(
    jobs: JobRunner, client: FlaskClient
) -> None:
    @jobs.task(http=True)
    def public_report() -> None:
        pass

    @jobs.task
    def rebuild_index() -> None:
        pass

    document = client.get(f"{PREFIX}/openapi.json").get_json()

    text = client.get(f"{PREFIX}/openapi.json").get_data(as_text=True)
    assert "rebuild" not in text.lower()
    assert f"{PREFIX}/public-report" in document["paths"]
    submit_schema = document["paths"][PREFIX]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]
    assert submit_schema["properties"]["task"]["enum"] == ["public_report"]


def test_openapi_document_describes_every_route_of_the_api(client: FlaskClient) -> None:
    document = client.get(f"{PREFIX}/openapi.json").get_json()

    paths = document["paths"]
    assert {"get", "post"} <= set(paths[PREFIX])
    assert "get" in paths[f"{PREFIX}/{{job_id}}"]
    assert "post" in paths[f"{PREFIX}/{{job_id}}/cancel"]
    for code in ("400", "404", "503"):
        assert code in paths[PREFIX]["post"]["responses"]
    for ref in refs(document):
        resolve(document, ref)


@pytest.mark.parametrize(
    "config", [{"JOBRUNNER_URL_PREFIX": "/v2/work/"}], indirect=True, ids=["prefix"]
)
@pytest.mark.usefixtures("noop")
def test_api_lives_under_the_configured_prefix(jobs: JobRunner, client: FlaskClient) -> None:
    response = client.post("/v2/work/noop")

    assert response.status_code == 202
    job_id = response.get_json()["job_id"]
    assert response.headers["Location"] == f"/v2/work/{job_id}"
    assert client.get(f"/v2/work/{job_id}").status_code == 200
    assert "/v2/work/{job_id}" in client.get("/v2/work/openapi.json").get_json()["paths"]
    assert client.get(f"{PREFIX}/{job_id}").status_code == 404
