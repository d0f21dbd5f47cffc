"""Delayed and periodic jobs, through the Python API and HTTP, on every backend.

Periodic tests use a cron expression with seconds (croniter's sixth field)
that matches only a few seconds of one minute of today, so the number of
ticks, and of jobs, is exact. Schedulers run in real threads; waits are
bounded.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask

from conftest import PrivateRedis, assert_error, settings, wait_until
from flask_jobrunner import (
    Backend,
    ConfigurationError,
    InvalidArguments,
    Job,
    JobRunner,
    JobStatus,
    Task,
)
from flask_jobrunner.backends import load_backend
from flask_jobrunner.schedule import THREAD_NAME

NEW_YORK = ZoneInfo("America/New_York")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def seconds_window(count: int, lead: float = 1.0) -> tuple[datetime, str]:
    """The first tick and a cron expression (UTC) ticking each of *count* seconds from it.

    The window starts at least *lead* seconds from now, on a whole second,
    inside one minute.
    """
    first = (utcnow() + timedelta(seconds=lead)).replace(microsecond=0) + timedelta(seconds=1)
    if first.second + count > 60:
        first = (first + timedelta(minutes=1)).replace(second=0)
    last = first.second + count - 1
    return first, f"{first.minute} {first.hour} {first.day} {first.month} * {first.second}-{last}"


def jobs_of(app: Flask, runner: JobRunner, task: str) -> list[Job]:
    with app.app_context():
        return list(runner.list(task=task, limit=100))


def scheduler_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == THREAD_NAME]


@pytest.fixture
def note(jobs: JobRunner) -> Task[[], str]:
    @jobs.task(http=True)
    def note() -> str:
        return "noted"

    return note


# -- delayed jobs --------------------------------------------------------------


def test_a_delayed_job_does_not_start_before_its_time_and_starts_within_a_second(
    app: Flask, note: Task[[], str]
) -> None:
    with app.app_context():
        note.submit().wait(10)  # the worker runs, and waits in claim for the next job
        job = note.submit(delay=1.5)
        run_at = job.record.run_at
        assert run_at is not None
        assert job.to_dict()["status"] == "pending"

        job.wait(10)

    started = job.record.started_at
    assert job.status is JobStatus.COMPLETED
    assert started is not None
    # Both times are on the backend's clock, which claims compare with.
    assert started >= run_at
    assert started - run_at < timedelta(seconds=1)


def test_a_job_with_run_at_in_another_timezone_starts_at_that_moment(
    app: Flask, note: Task[[], str]
) -> None:
    with app.app_context():
        note.submit().wait(10)
        moment = app.extensions["jobrunner"].backend.now() + timedelta(seconds=1.5)
        job = note.submit(run_at=moment.astimezone(NEW_YORK))

        job.wait(10)

    assert job.record.run_at == moment
    started = job.record.started_at
    assert started is not None
    assert moment <= started < moment + timedelta(seconds=1)


@pytest.mark.parametrize("backend_id", ["memory"])
@settings(run_workers=False)
def test_scheduled_for_is_in_the_document_until_the_job_starts(
    app: Flask, jobs: JobRunner, note: Task[[], str], backend: Backend
) -> None:
    with app.app_context():
        later = note.submit(delay=3600)
        now = note.submit()
        past = note.submit(run_at=utcnow() - timedelta(seconds=1))

    assert later.record.run_at is not None
    document = later.to_dict()
    assert document["scheduled_for"] == later.record.run_at.isoformat().replace("+00:00", "Z")
    assert "scheduled_for" not in now.to_dict()
    # Due already: it is claimed at once, and then it no longer waits for anything.
    claimed = {claim.record.id for claim in backend.claim(["default"], lease=30, limit=5)}
    assert claimed == {now.id, past.id}
    with app.app_context():
        started = jobs.get(past.id)
    assert started is not None
    assert started.status is JobStatus.IN_PROGRESS
    assert "scheduled_for" not in started.to_dict()


@pytest.mark.parametrize("backend_id", ["memory"])
@settings(run_workers=False, retry_after_max=60)
def test_retry_after_waits_for_a_delayed_job(app: Flask, note: Task[[], str]) -> None:
    client = app.test_client()

    soon = client.post("/api/jobs", json={"task": "note", "delay": 20})
    later = client.post("/api/jobs", json={"task": "note", "delay": 3600})
    at_once = client.post("/api/jobs", json={"task": "note"})

    assert 19 <= int(soon.headers["Retry-After"]) <= 20
    assert later.headers["Retry-After"] == "60"
    assert at_once.headers["Retry-After"] == "5"
    polled = client.get(soon.headers["Location"])
    assert 18 <= int(polled.headers["Retry-After"]) <= 20
    assert "scheduled_for" in polled.get_json()
    assert client.get(later.headers["Location"]).headers["Retry-After"] == "60"


@pytest.mark.parametrize("backend_id", ["memory"])
@settings(run_workers=False)
def test_http_submits_take_delay_and_run_at(app: Flask, note: Task[[], str]) -> None:
    client = app.test_client()
    run_at = "2030-01-31T02:00:00Z"

    answers = [
        client.post("/api/jobs", json={"task": "note", "delay": 30}),
        client.post("/api/jobs", json={"task": "note", "run_at": run_at}),
        client.post("/api/jobs", json={"task": "note", "run_at": "2030-01-30T21:00:00-05:00"}),
        client.post("/api/jobs/note?delay=30"),
        client.post("/api/jobs/note?run_at=2030-01-31T02:00:00Z"),
        client.post("/api/jobs/note?delay=0.5", json={}),
    ]

    assert [answer.status_code for answer in answers] == [202] * 6
    documents = [client.get(answer.headers["Location"]).get_json() for answer in answers]
    assert [document["status"] for document in documents] == ["pending"] * 6
    assert documents[1]["scheduled_for"] == run_at
    assert documents[2]["scheduled_for"] == run_at
    assert documents[4]["scheduled_for"] == run_at
    for document in (documents[0], documents[3]):
        scheduled = datetime.fromisoformat(document["scheduled_for"].replace("Z", "+00:00"))
        created = datetime.fromisoformat(document["created_at"].replace("Z", "+00:00"))
        assert timedelta(seconds=29) < scheduled - created < timedelta(seconds=31)


BAD_BODIES = [
    ({"delay": -1}, "delay"),
    ({"delay": "30"}, "delay"),
    ({"delay": True}, "delay"),
    ({"delay": [1]}, "delay"),
    ({"delay": 1e300}, "delay"),
    ({"delay": 10**20}, "delay"),
    ({"run_at": "tomorrow"}, "run_at"),
    ({"run_at": "2030-01-31T02:00:00"}, "run_at"),
    ({"run_at": 1893456000}, "run_at"),
    ({"run_at": ""}, "run_at"),
    ({"run_at": "2030-01-31T02:00:00Z" * 10}, "run_at"),
    ({"delay": 5, "run_at": "2030-01-31T02:00:00Z"}, "delay"),
]


@pytest.mark.parametrize("backend_id", ["memory"])
@pytest.mark.parametrize(("extra", "named"), BAD_BODIES)
@settings(run_workers=False)
def test_a_bad_delay_or_run_at_answers_400_and_stores_nothing(
    app: Flask, note: Task[[], str], backend: Backend, extra: dict[str, Any], named: str
) -> None:
    answer = app.test_client().post("/api/jobs", json={"task": "note", **extra})

    body = assert_error(answer, 400)
    assert f"'{named}'" in body["error"]
    assert sum(backend.counts().values()) == 0


@pytest.mark.parametrize("backend_id", ["memory"])
@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("delay=abc", "delay"),
        ("delay=-1", "delay"),
        ("delay=1e3", "delay"),
        ("delay=", "delay"),
        ("run_at=2030-01-31T02:00:00", "run_at"),
        ("run_at=soon", "run_at"),
        ("delay=5&run_at=2030-01-31T02:00:00Z", "delay"),
    ],
)
@settings(run_workers=False)
def test_bad_delay_or_run_at_query_parameters_answer_400(
    app: Flask, note: Task[[], str], backend: Backend, query: str, named: str
) -> None:
    answer = app.test_client().post(f"/api/jobs/note?{query}")

    body = assert_error(answer, 400)
    assert f"'{named}'" in body["error"] or f"'?{named}=" in body["error"]
    assert sum(backend.counts().values()) == 0


@pytest.mark.parametrize("backend_id", ["memory"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delay": -0.5}, "'delay' must be finite seconds >= 0"),
        ({"delay": math.nan}, "'delay' must be finite seconds >= 0"),
        ({"delay": math.inf}, "'delay' must be finite seconds >= 0"),
        ({"delay": True}, "'delay' must be a number of seconds"),
        ({"delay": "5"}, "'delay' must be a number of seconds"),
        ({"delay": 1e300}, "too far ahead"),
        ({"run_at": datetime(2030, 1, 1)}, "has no timezone"),
        ({"run_at": "2030-01-01T00:00:00Z"}, "'run_at' must be a datetime"),
        ({"delay": 1, "run_at": datetime(2030, 1, 1, tzinfo=timezone.utc)}, "not both"),
    ],
)
@settings(run_workers=False)
def test_submit_refuses_unusable_delay_and_run_at(
    app: Flask, note: Task[[], str], backend: Backend, options: dict[str, Any], message: str
) -> None:
    with app.app_context(), pytest.raises(InvalidArguments, match=message):
        note.submit(**options)

    assert sum(backend.counts().values()) == 0


@pytest.mark.parametrize("backend_id", ["memory"])
@settings(run_workers=False)
def test_a_task_with_its_own_delay_parameter_takes_it_through_enqueue(
    app: Flask, jobs: JobRunner, backend: Backend
) -> None:
    @jobs.task
    def remind(delay: int, run_at: str = "") -> int:
        return delay

    with app.app_context():
        with pytest.raises(InvalidArguments, match=r"'submit\(delay=...\)' is ambiguous"):
            remind.submit(delay=3)
        with pytest.raises(InvalidArguments, match=r"'submit\(run_at=...\)' is ambiguous"):
            jobs.submit("remind", 3, run_at="x")
        assert sum(backend.counts().values()) == 0

        by_position = remind.submit(3)
        options_apart = jobs.enqueue(remind, kwargs={"delay": 3, "run_at": "x"}, delay=60)

    assert by_position.record.kwargs == {"delay": 3}
    assert by_position.record.run_at is None
    assert options_apart.record.kwargs == {"delay": 3, "run_at": "x"}
    assert options_apart.record.run_at is not None


# -- periodic schedules: registration ----------------------------------------------


def test_periodic_registers_a_plain_function_as_a_task(jobs: JobRunner) -> None:
    @jobs.periodic("0 2 * * *", timezone="America/New_York")
    def nightly() -> None: ...

    assert isinstance(nightly, Task)
    assert jobs.tasks["nightly"] is nightly
    schedule = jobs.schedules["nightly"]
    assert schedule.task is nightly
    assert schedule.cron == "0 2 * * *"
    assert schedule.timezone == NEW_YORK


def test_periodic_takes_an_existing_task_with_arguments(jobs: JobRunner) -> None:
    @jobs.task(retries=2)
    def load(etfs: list[str], full: bool = False) -> None: ...

    returned = jobs.periodic(every=timedelta(hours=1), args=[["SPY"]], name="hourly")(load)
    jobs.periodic(every=60, kwargs={"etfs": ["QQQ"], "full": True}, name="minutely")(load)

    assert returned is load
    # Checked and stored as the job will be: by keyword where the function allows it.
    assert jobs.schedules["hourly"].kwargs == {"etfs": ["SPY"]}
    assert jobs.schedules["minutely"].every == timedelta(minutes=1)
    assert jobs.schedules["minutely"].kwargs == {"etfs": ["QQQ"], "full": True}
    assert list(jobs.tasks) == ["load"]


@pytest.mark.parametrize(
    ("arguments", "options", "message"),
    [
        ((), {}, "needs a cron expression or 'every='"),
        (("* * * * *",), {"every": 60}, "not both"),
        (("every day",), {}, "is not a cron expression"),
        (("61 * * * *",), {}, "is not a cron expression"),
        (("0 0 31 2 *",), {}, "never runs"),
        (("0 2 * * *",), {"timezone": "Mars/Olympus"}, "unknown timezone"),
        ((), {"every": 0.5}, "at least one second"),
        ((), {"every": math.inf}, "'every' must be a timedelta or seconds"),
        ((), {"every": 60, "kwargs": {"count": "many"}}, "'count'"),
        ((), {"every": 60, "name": "x" * 151}, "1 to 150 characters"),
    ],
)
def test_periodic_refuses_an_unusable_schedule(
    jobs: JobRunner, arguments: tuple[Any, ...], options: dict[str, Any], message: str
) -> None:
    @jobs.task
    def count(count: int = 1) -> None: ...

    with pytest.raises(ConfigurationError, match=message):
        jobs.periodic(*arguments, **options)(count)
    assert jobs.schedules == {}


def test_a_second_schedule_of_the_same_name_is_refused(jobs: JobRunner) -> None:
    @jobs.periodic(every=60)
    def refresh() -> None: ...

    with pytest.raises(ConfigurationError, match=r"Pass name='\.\.\.'"):
        jobs.periodic("0 * * * *")(refresh)
    jobs.periodic("0 * * * *", name="refresh-hourly")(refresh)
    assert sorted(jobs.schedules) == ["refresh", "refresh-hourly"]


def test_cron_in_a_timezone_follows_daylight_saving_time_as_croniter_does(
    jobs: JobRunner,
) -> None:
    @jobs.periodic("0 2 * * *", timezone="America/New_York")
    def nightly() -> None: ...

    schedule = jobs.schedules["nightly"]
    before_spring = datetime(2026, 3, 7, 12, tzinfo=timezone.utc)
    ticks = list(schedule.ticks(before_spring, before_spring + timedelta(days=3)))
    # 02:00 does not exist on 8 March: that day's run is at 03:00 EDT.
    assert [tick.isoformat() for tick in ticks] == [
        "2026-03-08T07:00:00+00:00",
        "2026-03-09T06:00:00+00:00",
        "2026-03-10T06:00:00+00:00",
    ]


def test_every_ticks_on_whole_multiples_since_the_epoch(jobs: JobRunner) -> None:
    @jobs.periodic(every=timedelta(minutes=15))
    def quarterly() -> None: ...

    schedule = jobs.schedules["quarterly"]
    moment = datetime(2030, 1, 1, 10, 7, 30, tzinfo=timezone.utc)
    assert schedule.next_tick(moment) == datetime(2030, 1, 1, 10, 15, tzinfo=timezone.utc)
    assert schedule.next_tick(schedule.next_tick(moment)) == datetime(
        2030, 1, 1, 10, 30, tzinfo=timezone.utc
    )


# -- periodic schedules: submitting ------------------------------------------------


@pytest.fixture
def second_app(
    jobs: JobRunner, backend: Backend, backend_url: str, backend_options: dict[str, Any]
) -> Iterator[Callable[..., Flask]]:
    """Makes more apps of ``jobs`` on the same store, each with a backend instance of its own.

    On memory they share the one backend: it lives in the process.
    """
    made: list[tuple[Flask, Backend]] = []

    def make(**config: Any) -> Flask:
        other = backend if not backend.is_shared else load_backend(backend_url, **backend_options)
        app = Flask(f"schedule_app_{len(made)}")
        app.testing = True
        app.config.update({"JOBRUNNER_BACKEND": other, "JOBRUNNER_SHUTDOWN_TIMEOUT": 5})
        app.config.update({f"JOBRUNNER_{key.upper()}": value for key, value in config.items()})
        jobs.init_app(app)
        made.append((app, other))
        return app

    yield make
    for app, other in made:
        jobs.shutdown(app, timeout=10)
        if other is not backend:
            other.close()


def start_scheduler(app: Flask) -> None:
    """Start the app's scheduler (and worker) as a first request does."""
    app.test_client().get("/api/jobs?limit=1")


def test_each_tick_submits_exactly_one_job_across_schedulers_sharing_a_backend(
    app: Flask, jobs: JobRunner, second_app: Callable[..., Flask]
) -> None:
    first, cron = seconds_window(3)

    @jobs.periodic(cron, timezone="UTC", name=f"window-{uuid.uuid4().hex[:8]}")
    def ticked() -> str:
        return "ticked"

    apps = [app, second_app(), second_app(run_workers=False)]
    for each in apps:
        start_scheduler(each)
    assert len(scheduler_threads()) == 3
    last = first + timedelta(seconds=2)
    wait_until(lambda: utcnow() > last + timedelta(seconds=1.5), timeout=15, what="the window")
    for each in apps:
        jobs.shutdown(each, timeout=10)

    submitted = jobs_of(app, jobs, "ticked")
    assert len(submitted) == 3
    created = sorted(job.record.created_at for job in submitted)
    # Submitted at (or just after) their tick, not before it.
    for number, moment in enumerate(created):
        tick = first + timedelta(seconds=number)
        assert tick - timedelta(seconds=0.2) <= moment < tick + timedelta(seconds=1)


@pytest.mark.parametrize("backend_id", ["sqlite", "postgresql", "mysql", "redis"])
@settings(schedule_catchup=3600)
def test_a_start_submits_the_missed_tick_inside_the_catch_up_window_once(
    app: Flask, jobs: JobRunner, second_app: Callable[..., Flask]
) -> None:
    @jobs.periodic(every=timedelta(hours=1), name=f"hourly-{uuid.uuid4().hex[:8]}")
    def hourly() -> str:
        return "hourly"

    start_scheduler(app)
    wait_until(lambda: jobs_of(app, jobs, "hourly"), timeout=10, what="the missed tick's job")
    jobs.shutdown(app, timeout=10)
    # A restart, and a second process, find the tick's job and submit no other.
    again = second_app(schedule_catchup=3600)
    start_scheduler(again)
    start_scheduler(app)
    time.sleep(1)  # room for a wrong second submit, which the count below would show

    submitted = jobs_of(app, jobs, "hourly")
    assert len(submitted) == 1
    tick = submitted[0].record.created_at.replace(minute=0, second=0, microsecond=0)
    assert utcnow() - tick < timedelta(hours=1)


@pytest.mark.parametrize("backend_id", ["memory", "sqlite", "redis"])
@settings(schedule_catchup=0)
def test_no_catch_up_outside_the_window(
    app: Flask, jobs: JobRunner, caplog: pytest.LogCaptureFixture
) -> None:
    @jobs.periodic(every=timedelta(hours=1))
    def hourly() -> str:
        return "hourly"

    caplog.set_level(logging.INFO, logger="flask_jobrunner")
    start_scheduler(app)
    time.sleep(0.5)
    jobs.shutdown(app, timeout=10)

    assert jobs_of(app, jobs, "hourly") == []


@pytest.mark.parametrize("backend_id", ["memory"])
@settings(schedule_catchup=3600)
def test_the_memory_backend_catches_nothing_up(app: Flask, jobs: JobRunner) -> None:
    @jobs.periodic(every=timedelta(hours=1))
    def hourly() -> str:
        return "hourly"

    start_scheduler(app)
    assert len(scheduler_threads()) == 1
    time.sleep(0.5)
    jobs.shutdown(app, timeout=10)

    assert jobs_of(app, jobs, "hourly") == []


@pytest.mark.parametrize("backend_id", ["sqlite"])
@settings(schedule_catchup=3600)
def test_older_ticks_are_skipped_with_a_log_line(
    app: Flask, jobs: JobRunner, caplog: pytest.LogCaptureFixture
) -> None:
    @jobs.periodic(every=timedelta(hours=1))
    def hourly() -> str:
        return "hourly"

    caplog.set_level(logging.INFO, logger="flask_jobrunner")
    start_scheduler(app)
    wait_until(lambda: jobs_of(app, jobs, "hourly"), timeout=10, what="the missed tick's job")
    jobs.shutdown(app, timeout=10)

    assert "older missed ticks are skipped" in caplog.text
    assert "Schedule 'hourly': tick" in caplog.text


@pytest.mark.parametrize("backend_id", ["memory", "sqlite"])
@pytest.mark.parametrize("config", [{"JOBRUNNER_SCHEDULER": False}, {"JOBRUNNER_EAGER": True}])
def test_no_scheduler_runs_when_turned_off_or_eager(
    app: Flask, jobs: JobRunner, note: Task[[], str]
) -> None:
    @jobs.periodic(every=1)
    def often() -> None: ...

    start_scheduler(app)
    with app.app_context():
        note.submit()

    assert scheduler_threads() == []


@pytest.mark.parametrize("backend_id", ["memory"])
def test_a_scheduler_thread_stops_on_shutdown(app: Flask, jobs: JobRunner) -> None:
    @jobs.periodic(every=3600)
    def rarely() -> None: ...

    start_scheduler(app)
    start_scheduler(app)
    assert len(scheduler_threads()) == 1

    jobs.shutdown(app, timeout=10)

    assert scheduler_threads() == []


def test_the_scheduler_rides_out_a_backend_outage(
    jobs: JobRunner, private_redis: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    first, cron = seconds_window(8, lead=0.5)

    @jobs.periodic(cron)
    def ticked() -> None: ...

    app = Flask("outage")
    app.testing = True
    app.config.update(
        JOBRUNNER_BACKEND=f"{private_redis.url}?socket_timeout=2&socket_connect_timeout=1",
        JOBRUNNER_SHUTDOWN_TIMEOUT=5,
        JOBRUNNER_RUN_WORKERS=False,
        JOBRUNNER_SCHEDULE_CATCHUP=60,
    )
    jobs.init_app(app)
    caplog.set_level(logging.INFO, logger="flask_jobrunner")
    try:
        start_scheduler(app)
        wait_until(lambda: utcnow() > first + timedelta(seconds=1.5), timeout=15)
        private_redis.stop()
        wait_until(lambda: "The scheduler tries again" in caplog.text, timeout=15)
        private_redis.start()  # empty again: it kept nothing
        wait_until(lambda: utcnow() > first + timedelta(seconds=9), timeout=20)
        submitted = jobs_of(app, jobs, "ticked")
    finally:
        jobs.shutdown(app, timeout=10)
        app.extensions["jobrunner"].backend.close()

    # The ticks missed during the outage are submitted once Redis is back.
    ticks = {job.record.idempotency_key for job in submitted}
    assert len(ticks) == len(submitted)
    assert f"@{(first + timedelta(seconds=7)).isoformat().replace('+00:00', 'Z')}" in str(ticks)


# -- flask jobs schedule -------------------------------------------------------------


@pytest.mark.parametrize("backend_id", ["memory"])
def test_the_cli_lists_schedules_with_their_next_run(app: Flask, jobs: JobRunner) -> None:
    @jobs.periodic("0 2 * * *", timezone="America/New_York")
    def load_etf_holdings() -> None: ...

    @jobs.periodic(every=timedelta(minutes=5), name="refresh")
    def refresh_quotes() -> None: ...

    output = app.test_cli_runner().invoke(args=["jobs", "schedule"]).output

    lines = output.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("load_etf_holdings  task load_etf_holdings  cron '0 2 * * *'")
    assert "(America/New_York)" in lines[0]
    assert lines[0].endswith(":00 EST)") or lines[0].endswith(":00 EDT)")
    assert " 02:00:00 E" in lines[0]
    assert lines[1].startswith("refresh  task refresh_quotes  every 0:05:00  next ")


@pytest.mark.parametrize("backend_id", ["memory"])
@settings(scheduler=False)
def test_the_cli_says_when_there_is_nothing_to_list_or_the_scheduler_is_off(
    app: Flask, jobs: JobRunner
) -> None:
    runner = app.test_cli_runner()
    assert runner.invoke(args=["jobs", "schedule"]).output == (
        "No periodic schedules are registered.\n"
    )

    jobs.periodic(every=60)(jobs.task(lambda: None, name="tick"))

    assert "JOBRUNNER_SCHEDULER is False" in runner.invoke(args=["jobs", "schedule"]).output


@pytest.mark.parametrize("backend_id", ["memory"])
def test_clients_cannot_send_the_idempotency_keys_of_scheduled_jobs(
    app: Flask, note: Task[[], str], backend: Backend
) -> None:
    answer = app.test_client().post(
        "/api/jobs/note",
        headers={"Idempotency-Key": "jobrunner-schedule:note@2030-01-01T00:00:00Z"},
    )

    assert "reserved for periodic schedules" in assert_error(answer, 400)["error"]
    assert sum(backend.counts().values()) == 0


def test_tickstock_loads_etf_holdings_every_night_at_two_in_new_york() -> None:
    from examples.tickstock.extensions import jobs
    from examples.tickstock.tasks import load_etf_holdings

    schedule = jobs.schedules["nightly-etf-holdings"]

    assert schedule.task is load_etf_holdings
    tick = schedule.next_tick(datetime(2030, 1, 15, 12, tzinfo=timezone.utc))
    assert tick.astimezone(NEW_YORK) == datetime(2030, 1, 16, 2, tzinfo=NEW_YORK)


@pytest.mark.parametrize("backend_id", ["memory", "redis"])
def test_a_unique_task_skips_a_tick_while_its_last_job_still_runs(
    app: Flask, jobs: JobRunner, caplog: pytest.LogCaptureFixture
) -> None:
    _, cron = seconds_window(2)
    release = threading.Event()

    @jobs.periodic(cron, name=f"unique-{uuid.uuid4().hex[:8]}")
    @jobs.task(unique=True)
    def hold() -> None:
        release.wait(20)

    caplog.set_level(logging.INFO, logger="flask_jobrunner")
    try:
        start_scheduler(app)
        wait_until(lambda: "skipped:" in caplog.text, timeout=15, what="the second tick's skip")
    finally:
        release.set()

    submitted = jobs_of(app, jobs, "hold")
    assert len(submitted) == 1
    assert "already has a job" in caplog.text


@pytest.mark.parametrize("backend_id", ["memory"])
def test_the_openapi_document_describes_delay_run_at_and_scheduled_for(
    app: Flask, note: Task[[], str]
) -> None:
    document = app.test_client().get("/api/jobs/openapi.json").get_json()

    body = document["paths"]["/api/jobs"]["post"]["requestBody"]["content"]["application/json"]
    assert {"delay", "run_at"} <= set(body["schema"]["properties"])
    by_name = document["paths"]["/api/jobs/note"]["post"]["parameters"]
    assert {(item["name"], item["in"]) for item in by_name} >= {
        ("delay", "query"),
        ("run_at", "query"),
    }
    job = document["components"]["schemas"]["Job"]["properties"]
    assert job["scheduled_for"] == {"type": "string", "format": "date-time"}
