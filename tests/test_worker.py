"""The thread worker in the web process: app contexts, concurrency, timeouts, retries.

Every test runs real worker threads against the ``backend`` fixture; waits
are bounded by ``Job.wait(timeout)`` or ``wait_until``.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, current_app, g, has_app_context, has_request_context
from flask.globals import _cv_app
from flask_sqlalchemy import SQLAlchemy

from conftest import DURABLE_IDS, settings, wait_until
from flask_jobrunner import (
    ErrorType,
    Job,
    JobCancelled,
    JobInterrupted,
    JobRunner,
    JobStatus,
    JobTimeout,
    current_job,
    job_finished,
    job_progress,
    job_started,
    job_submitted,
)
from flask_jobrunner.worker import SELF_CLAIM_AFTER


def worker_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("jobrunner-")]


# -- app context -------------------------------------------------------------


@settings(max_workers=1)
def test_job_runs_in_an_app_context_of_the_real_app_popped_after_each_job(
    app: Flask, jobs: JobRunner
) -> None:
    seen: list[dict[str, Any]] = []
    torn_down: list[str] = []

    @app.teardown_appcontext
    def record_teardown(error: BaseException | None) -> None:
        torn_down.append(threading.current_thread().name)

    @jobs.task
    def inspect_context(marker: str) -> None:
        seen.append(
            {
                "app": current_app._get_current_object(),
                "context": _cv_app.get(),
                "g_before": g.get("marker"),
                "request": has_request_context(),
                "thread": threading.current_thread().name,
            }
        )
        g.marker = marker

    first = inspect_context.submit("first").wait(timeout=5)
    second = inspect_context.submit("second").wait(timeout=5)

    assert first.status is second.status is JobStatus.COMPLETED
    assert [entry["app"] for entry in seen] == [app, app]
    assert all(entry["app"] is app for entry in seen)
    # One worker thread ran both, each in a fresh context that nothing carried over to.
    assert seen[0]["thread"] == seen[1]["thread"]
    assert seen[0]["thread"].startswith("jobrunner-")
    assert seen[0]["context"] is not seen[1]["context"]
    assert seen[1]["g_before"] is None
    assert not any(entry["request"] for entry in seen)
    assert torn_down == [seen[0]["thread"], seen[1]["thread"]]


@settings(max_workers=1)
def test_flask_sqlalchemy_session_is_per_job_and_removed_after_it(
    app: Flask, jobs: JobRunner, tmp_path: Path
) -> None:
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'app.db'}"
    db = SQLAlchemy()

    class Note(db.Model):  # type: ignore[name-defined,misc]
        id = sa.Column(sa.Integer, primary_key=True)
        text = sa.Column(sa.String(50), nullable=False)

    db.init_app(app)
    db.create_all()
    main_session = db.session()
    seen: list[tuple[object, object, int]] = []

    @jobs.task
    def add_note_without_commit(text: str) -> None:
        seen.append((db.session(), db.session.registry.scopefunc(), threading.get_ident()))
        db.session.add(Note(text=text))
        db.session.flush()  # takes SQLite's write lock; only a rollback gives it back

    try:
        first = add_note_without_commit.submit("lost").wait(timeout=5)
        second = add_note_without_commit.submit("lost too").wait(timeout=5)
        assert first.status is second.status is JobStatus.COMPLETED

        (first_session, first_key, thread), (second_session, second_key, _) = seen
        assert thread != threading.get_ident()
        assert first_session is not main_session
        assert second_session is not first_session
        assert first_key not in db.session.registry.registry
        assert second_key not in db.session.registry.registry
        # Nothing the jobs added survived, and they hold no lock on the database.
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Note)) == 0
        db.session.add(Note(text="kept"))
        db.session.commit()
        assert db.session.scalars(sa.select(Note.text)).all() == ["kept"]
    finally:
        db.session.remove()
        db.engine.dispose()


# -- claiming and concurrency ------------------------------------------------


def test_no_job_runs_twice_when_many_threads_submit_at_once(app: Flask, jobs: JobRunner) -> None:
    runs: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()

    @jobs.task
    def record_run(number: int) -> int:
        with lock:
            runs[current_job.id] += 1
        return number

    submitters, per_thread = 8, 250
    barrier = threading.Barrier(submitters)
    submitted: dict[str, int] = {}
    errors: list[BaseException] = []

    def submit_many(offset: int) -> None:
        try:
            with app.app_context():
                barrier.wait(timeout=5)
                for number in range(offset, offset + per_thread):
                    job = record_run.submit(number)
                    with lock:
                        submitted[job.id] = number
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [
        threading.Thread(target=submit_many, args=(index * per_thread,))
        for index in range(submitters)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert len(submitted) == submitters * per_thread

    backend = jobs.get_state(app).backend
    wait_until(lambda: backend.counts()[JobStatus.COMPLETED] == len(submitted), timeout=30)
    assert set(runs) == set(submitted)
    assert set(runs.values()) == {1}
    for job_id, number in submitted.items():
        job = jobs.get(job_id)
        assert job is not None
        assert (job.status, job.result, job.record.attempts) == (JobStatus.COMPLETED, number, 1)


def test_task_registered_after_the_worker_started_has_its_queue_served(
    app: Flask, jobs: JobRunner
) -> None:
    @jobs.task
    def first() -> str:
        return "default"

    assert first.submit().wait(timeout=5).status is JobStatus.COMPLETED  # the worker runs now

    @jobs.task(queue="reports")
    def registered_later() -> str:  # as a module imported lazily, by a view, may do
        return "reports"

    assert registered_later.submit().wait(timeout=5).result == "reports"


@settings(max_workers=2)
def test_max_workers_bounds_how_many_jobs_run_at_once(app: Flask, jobs: JobRunner) -> None:
    lock = threading.Lock()
    release = threading.Event()
    running = 0
    most = 0

    @jobs.task
    def held() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        release.wait(timeout=10)
        with lock:
            running -= 1

    submitted = [held.submit() for _ in range(6)]
    try:
        wait_until(lambda: running == 2, timeout=5)
        counts = jobs.get_state(app).backend.counts()
        assert counts[JobStatus.IN_PROGRESS] == 2
        assert counts[JobStatus.PENDING] == 4
    finally:
        release.set()
    for job in submitted:
        assert job.wait(timeout=5).status is JobStatus.COMPLETED
    assert most == 2


@settings(max_workers=1)
def test_task_raising_system_exit_fails_its_job_and_the_thread_runs_the_next(
    app: Flask, jobs: JobRunner
) -> None:
    @jobs.task
    def exits() -> None:
        sys.exit(3)  # as a library or a CLI helper called by the task may do

    @jobs.task
    def after() -> str:
        return "ran"

    job = exits.submit().wait(timeout=5)

    assert (job.status, job.error_type, job.record.error_details) == (
        JobStatus.FAILED,
        ErrorType.SYSTEM,
        "SystemExit",
    )
    assert after.submit().wait(timeout=5).result == "ran"


def stall_the_monitor(
    stalled: threading.Event, release: threading.Event
) -> Callable[[Flask, Job], None]:
    """A ``job_progress`` receiver that holds up the worker's monitor once, until *release*."""

    def receive(sender: Flask, job: Job) -> None:
        if threading.current_thread().name.endswith("-monitor") and not stalled.is_set():
            stalled.set()
            release.wait(timeout=10)

    return receive


# The interval is far longer than any first write takes, so the task's own thread
# never finds the second report due: the monitor stores it with its next heartbeat.
@settings(max_workers=2, lease=1.0, progress_interval=5.0)
def test_job_taken_back_from_a_stalled_monitor_and_run_again_here_frees_both_threads(
    app: Flask, jobs: JobRunner
) -> None:
    backend = jobs.get_state(app).backend
    monitor_stalled = threading.Event()
    release_monitor = threading.Event()
    release_runs = threading.Event()
    attempts: list[int] = []

    @jobs.task
    def held() -> int:
        attempts.append(current_job.attempt)
        if current_job.attempt == 1:
            current_job.progress(done=1, total=2)
            current_job.progress(done=2, total=2)  # throttled: the monitor stores it, and stalls
        release_runs.wait(timeout=10)
        return current_job.attempt

    with job_progress.connected_to(stall_the_monitor(monitor_stalled, release_monitor)):
        job = held.submit()
        try:
            assert monitor_stalled.wait(timeout=5)
            # No heartbeat comes while the monitor stalls: once the lease ran out,
            # recovery (here, as another process's monitor would) gives the job back,
            # and the idle thread of this same worker takes it again.
            wait_until(lambda: backend.recover_expired(max_recoveries=3), timeout=5)
            wait_until(lambda: attempts == [1, 2], timeout=5)
        finally:
            release_monitor.set()
            release_runs.set()
        assert job.wait(timeout=5).status is JobStatus.COMPLETED
    assert job.result == 2

    # Both threads are back in the pool: two jobs can still run at once.
    barrier = threading.Barrier(2)

    @jobs.task
    def meets_another() -> None:
        barrier.wait(timeout=5)

    pair = [meets_another.submit(), meets_another.submit()]
    assert [other.wait(timeout=10).status for other in pair] == [JobStatus.COMPLETED] * 2


@settings(max_workers=2, lease=3.0, progress_interval=5.0)
def test_job_claimed_while_the_monitor_was_held_up_is_renewed_before_its_lease_runs_out(
    app: Flask, jobs: JobRunner
) -> None:
    # Its first heartbeat is due a third of the lease after its claim, not after
    # the monitor first saw it: a monitor held up for two thirds of the lease
    # would otherwise renew it a whole lease after its claim, too late.
    backend = jobs.get_state(app).backend
    monitor_stalled = threading.Event()
    release_monitor = threading.Event()
    release_jobs = threading.Event()
    silent_started = threading.Event()

    @jobs.task
    def reports() -> None:
        current_job.progress(done=1, total=2)
        current_job.progress(done=2, total=2)  # throttled: the monitor stores it, and stalls
        release_jobs.wait(timeout=10)

    @jobs.task
    def silent() -> None:
        silent_started.set()
        release_jobs.wait(timeout=10)

    with job_progress.connected_to(stall_the_monitor(monitor_stalled, release_monitor)):
        first = reports.submit()
        try:
            assert monitor_stalled.wait(timeout=5)
            second = silent.submit()
            assert silent_started.wait(timeout=5)
            lease_ends = time.monotonic() + 3.0  # later than the lease it was claimed with
            leased_until = backend.get(second.id).lease_expires_at
            time.sleep(2.2)  # the monitor is held up past the job's first heartbeat
            release_monitor.set()
            wait_until(lambda: backend.get(second.id).lease_expires_at != leased_until, timeout=5)
            renewed = time.monotonic()
        finally:
            release_monitor.set()
            release_jobs.set()
        assert renewed < lease_ends, f"renewed {renewed - lease_ends:.2f} s after its lease ran out"
        assert second.wait(timeout=5).status is JobStatus.COMPLETED
        assert second.to_dict()["attempts"] == 1
        assert first.wait(timeout=5).status is JobStatus.COMPLETED


# -- timeouts and cancellation -----------------------------------------------


def test_job_past_its_timeout_fails_even_if_its_thread_never_checks(
    app: Flask, jobs: JobRunner
) -> None:
    release = threading.Event()
    ended = threading.Event()

    @jobs.task(timeout=0.3)
    def never_checks() -> str:
        deadline = time.monotonic() + 10
        while not release.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        ended.set()
        return "too late"

    job = never_checks.submit()
    try:
        job.wait(timeout=5)
        assert not ended.is_set(), "the job was ended by its own thread, not by its timeout"
    finally:
        release.set()
    assert job.status is JobStatus.FAILED
    assert job.error_type is ErrorType.TIMEOUT
    assert "timeout of 0.3 seconds" in (job.error or "")

    # Once the thread does end, its late result does not overwrite the final state.
    assert jobs.shutdown(app, timeout=5)
    assert ended.is_set()
    job.refresh()
    assert (job.status, job.error_type, job.result) == (JobStatus.FAILED, ErrorType.TIMEOUT, None)


def test_task_that_checks_past_its_timeout_ends_timeout(app: Flask, jobs: JobRunner) -> None:
    raised: list[BaseException] = []

    @jobs.task(timeout=0.3)
    def checks_often() -> None:
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                current_job.check()
                time.sleep(0.01)
        except JobTimeout as error:
            raised.append(error)
            raise

    job = checks_often.submit().wait(timeout=5)

    assert job.status is JobStatus.FAILED
    assert job.error_type is ErrorType.TIMEOUT
    wait_until(lambda: raised, timeout=5)
    assert isinstance(raised[0], JobTimeout)


@pytest.mark.parametrize("way", ["check", "progress"])
def test_cancel_of_a_running_job_ends_it_cancelled(app: Flask, jobs: JobRunner, way: str) -> None:
    started = threading.Event()
    raised: list[BaseException] = []

    @jobs.task
    def loops_until_cancelled() -> None:
        started.set()
        try:
            for done in range(1000):
                if way == "check":
                    current_job.check()
                else:
                    current_job.progress(done=done, total=1000)
                time.sleep(0.01)
        except JobCancelled as error:
            raised.append(error)
            raise

    job = loops_until_cancelled.submit()
    assert started.wait(timeout=5)

    requested = jobs.cancel(job.id)

    assert requested.status is JobStatus.IN_PROGRESS
    assert requested.to_dict()["cancel_requested"] is True
    assert job.wait(timeout=5).status is JobStatus.CANCELLED
    assert "cancelled_at" in job.to_dict()
    assert job.error is None
    assert len(raised) == 1


@settings(run_workers=False)
def test_cancel_of_a_pending_job_ends_it_cancelled_at_once(app: Flask, jobs: JobRunner) -> None:
    @jobs.task
    def never_started() -> None:
        raise AssertionError("a cancelled job ran")

    job = never_started.submit()

    cancelled = jobs.cancel(job.id)

    assert cancelled.status is JobStatus.CANCELLED
    assert job.refresh().status is JobStatus.CANCELLED
    assert job.record.attempts == 0
    assert "cancelled_at" in job.to_dict()


@settings(max_workers=1)
def test_cancelled_pending_job_is_never_run_by_the_worker(app: Flask, jobs: JobRunner) -> None:
    release = threading.Event()
    started = threading.Event()
    ran: list[str] = []

    @jobs.task
    def blocker() -> None:
        started.set()
        release.wait(timeout=10)

    @jobs.task
    def recorded(name: str) -> None:
        ran.append(name)

    first = blocker.submit()
    assert started.wait(timeout=5)
    try:
        cancelled = recorded.submit("cancelled")
        assert jobs.cancel(cancelled.id).status is JobStatus.CANCELLED
        after = recorded.submit("after")
    finally:
        release.set()

    assert first.wait(timeout=5).status is JobStatus.COMPLETED
    assert after.wait(timeout=5).status is JobStatus.COMPLETED
    assert ran == ["after"]
    assert cancelled.refresh().status is JobStatus.CANCELLED


# -- retries -----------------------------------------------------------------


def test_system_error_is_retried_then_fails_with_every_attempt_counted(
    app: Flask, jobs: JobRunner
) -> None:
    runs: list[int] = []

    @jobs.task(retries=2, retry_backoff=0.01)
    def always_breaks() -> None:
        runs.append(current_job.attempt)
        raise RuntimeError("the provider is down")

    job = always_breaks.submit().wait(timeout=5)

    assert runs == [1, 2, 3]
    assert job.status is JobStatus.FAILED
    assert job.error_type is ErrorType.SYSTEM
    assert job.error == "Internal error: the provider is down"
    assert job.record.error_details == "RuntimeError"
    assert job.record.attempts == 3
    assert job.to_dict()["attempts"] == 3


def test_task_that_fails_once_then_succeeds_completes(app: Flask, jobs: JobRunner) -> None:
    runs: list[int] = []

    @jobs.task(retries=2, retry_backoff=0.01)
    def flaky() -> str:
        runs.append(current_job.attempt)
        if len(runs) == 1:
            raise ConnectionError("blip")
        return "ok"

    job = flaky.submit().wait(timeout=5)

    assert (job.status, job.result) == (JobStatus.COMPLETED, "ok")
    assert runs == [1, 2]
    assert job.record.attempts == 2


def test_value_error_is_a_validation_failure_and_not_retried(app: Flask, jobs: JobRunner) -> None:
    runs: list[int] = []

    @jobs.task(retries=3, retry_backoff=0.01)
    def refuses(symbol: str) -> None:
        runs.append(current_job.attempt)
        raise ValueError(f"Unknown symbol {symbol!r}")

    job = refuses.submit("XYZ").wait(timeout=5)

    assert runs == [1]
    assert job.status is JobStatus.FAILED
    assert job.error_type is ErrorType.VALIDATION
    assert job.error == "Unknown symbol 'XYZ'"
    assert job.record.attempts == 1


# -- async tasks and progress ------------------------------------------------


def test_async_task_runs_and_reports_progress(app: Flask, jobs: JobRunner) -> None:
    @jobs.task
    async def double_later(number: int) -> int:
        await asyncio.sleep(0.01)
        current_job.progress(done=1, total=2, message="half way")
        await asyncio.sleep(0.01)
        return number * 2

    assert double_later.is_async
    job = double_later.submit(21).wait(timeout=5)

    assert (job.status, job.result) == (JobStatus.COMPLETED, 42)
    assert job.percentage == 50.0
    assert job.message == "half way"
    assert job.record.items_processed == 1


def test_progress_is_stored_with_percentage_from_done_and_total(
    app: Flask, jobs: JobRunner
) -> None:
    release = threading.Event()

    @jobs.task
    def counts_symbols() -> str:
        current_job.progress(done=1, total=4, message="Processed 1 of 4 symbols")
        release.wait(timeout=10)
        current_job.progress(done=3, total=4)
        current_job.progress(percentage=150, message="almost")
        return "done"

    job = counts_symbols.submit()
    try:
        wait_until(lambda: job.refresh().percentage == 25.0, timeout=5)
        assert job.status is JobStatus.IN_PROGRESS
        assert job.message == "Processed 1 of 4 symbols"
        document = job.to_dict()
        assert (document["items_processed"], document["total_items"]) == (1, 4)
    finally:
        release.set()

    job.wait(timeout=5)
    assert (job.status, job.result) == (JobStatus.COMPLETED, "done")
    assert job.percentage == 100.0  # 150 is clamped
    assert job.message == "almost"
    assert (job.record.items_processed, job.record.total_items) == (3, 4)


@settings(progress_interval=30)
def test_progress_is_throttled_but_the_last_report_is_stored_with_the_final_state(
    app: Flask, jobs: JobRunner
) -> None:
    stored: list[int | None] = []

    def record_stored(sender: Flask, job: Job) -> None:
        stored.append(job.record.items_processed)

    @jobs.task
    def reports_often() -> None:
        for done in range(1, 11):
            current_job.progress(done=done, total=10, message=f"item {done}")

    with job_progress.connected_to(record_stored):
        job = reports_often.submit().wait(timeout=5)

    assert job.status is JobStatus.COMPLETED
    assert stored == [1]  # the first report is written, the next nine wait
    assert (job.record.items_processed, job.record.total_items) == (10, 10)
    assert job.percentage == 100.0
    assert job.message == "item 10"


# Longer than any first write takes, even on a loaded machine: else the task's
# own thread finds the second report due and stores it.
@settings(progress_interval=1.0)
def test_progress_signal_is_sent_in_an_app_context_also_when_the_monitor_stores_it(
    app: Flask, jobs: JobRunner
) -> None:
    received: list[tuple[str, object]] = []

    def record(sender: Flask, job: Job) -> None:
        current = current_app._get_current_object() if has_app_context() else None
        received.append((threading.current_thread().name, current))

    @jobs.task
    def reports_twice() -> None:
        current_job.progress(done=1, total=2)  # stored at once, by this thread
        current_job.progress(done=2, total=2)  # throttled: stored by the monitor
        deadline = time.monotonic() + 5
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)

    with job_progress.connected_to(record):
        assert reports_twice.submit().wait(timeout=10).status is JobStatus.COMPLETED

    assert [current for _, current in received] == [app, app]
    assert received[1][0].endswith("-monitor")


def test_progress_reported_after_the_job_ended_sends_no_progress_signal(
    app: Flask, jobs: JobRunner
) -> None:
    statuses: list[JobStatus] = []
    reported = threading.Event()

    def record(sender: Flask, job: Job) -> None:
        statuses.append(job.status)

    @jobs.task(timeout=0.3)
    def reports_too_late() -> None:
        deadline = time.monotonic() + 5
        while not jobs.get(current_job.id).is_finished and time.monotonic() < deadline:  # type: ignore[union-attr]
            time.sleep(0.01)
        try:
            current_job.progress(done=1, total=2)  # the monitor already ended it: timeout
        finally:
            reported.set()

    with job_progress.connected_to(record):
        job = reports_too_late.submit().wait(timeout=5)
        assert reported.wait(timeout=5)

    assert (job.status, job.error_type) == (JobStatus.FAILED, ErrorType.TIMEOUT)
    assert statuses == []


def test_result_that_is_not_json_fails_the_job_with_a_clear_error(
    app: Flask, jobs: JobRunner
) -> None:
    @jobs.task
    def returns_an_object():  # type: ignore[no-untyped-def]
        return object()

    job = returns_an_object.submit().wait(timeout=5)

    assert job.status is JobStatus.FAILED
    assert job.error_type is ErrorType.SYSTEM
    assert job.error is not None
    assert job.error.startswith("Internal error: The result of task 'returns_an_object'")
    assert "is not JSON (object)" in job.error
    assert job.result is None


# -- signals -----------------------------------------------------------------


def test_signals_are_sent_with_the_app_as_sender_and_the_job(app: Flask, jobs: JobRunner) -> None:
    received: list[tuple[str, object, str, JobStatus, str]] = []

    def receiver(name: str) -> Callable[..., None]:
        def receive(sender: Flask, job: Job) -> None:
            received.append((name, sender, job.id, job.status, threading.current_thread().name))

        return receive

    @jobs.task
    def reports_once() -> int:
        current_job.progress(done=1, total=1)
        return 1

    receivers = {
        "submitted": receiver("submitted"),
        "started": receiver("started"),
        "progress": receiver("progress"),
        "finished": receiver("finished"),
    }
    with (
        job_submitted.connected_to(receivers["submitted"]),
        job_started.connected_to(receivers["started"]),
        job_progress.connected_to(receivers["progress"]),
        job_finished.connected_to(receivers["finished"]),
    ):
        job = reports_once.submit().wait(timeout=5)
        wait_until(lambda: any(name == "finished" for name, *_ in received), timeout=5)

    assert [name for name, *_ in received] == ["submitted", "started", "progress", "finished"]
    assert all(sender is app for _, sender, *_ in received)
    assert {job_id for _, _, job_id, *_ in received} == {job.id}
    statuses = {name: status for name, _, _, status, _ in received}
    assert statuses == {
        "submitted": JobStatus.PENDING,
        "started": JobStatus.IN_PROGRESS,
        "progress": JobStatus.IN_PROGRESS,
        "finished": JobStatus.COMPLETED,
    }
    threads = {name: thread for name, *_, thread in received}
    assert threads["submitted"] == threading.current_thread().name
    assert threads["started"].startswith("jobrunner-")
    assert threads["finished"] == threads["started"]


# -- eager mode, shutdown, enqueue-only --------------------------------------


@settings(eager=True)
def test_eager_mode_runs_the_job_and_its_retries_at_submit_in_the_callers_thread(
    app: Flask, jobs: JobRunner
) -> None:
    threads: list[int] = []

    @jobs.task(retries=2, retry_backoff=30)
    def flaky(number: int) -> int:
        threads.append(threading.get_ident())
        if len(threads) < 3:
            raise RuntimeError("not yet")
        return number

    job = flaky.submit(7)

    assert (job.status, job.result) == (JobStatus.COMPLETED, 7)
    assert job.record.attempts == 3
    assert threads == [threading.get_ident()] * 3
    assert worker_threads() == []


@settings(eager=True)
def test_eager_mode_stores_a_final_failure_at_submit(app: Flask, jobs: JobRunner) -> None:
    @jobs.task(retries=1)
    def broken() -> None:
        raise RuntimeError("broken")

    job = broken.submit()

    assert (job.status, job.error_type, job.record.attempts) == (
        JobStatus.FAILED,
        ErrorType.SYSTEM,
        2,
    )


@settings(eager=True)
def test_eager_mode_sends_the_progress_signal_as_the_worker_does(
    app: Flask, jobs: JobRunner
) -> None:
    received: list[tuple[object, int | None, str]] = []

    def record(sender: Flask, job: Job) -> None:
        received.append((sender, job.record.items_processed, threading.current_thread().name))

    @jobs.task
    def reports_once() -> None:
        current_job.progress(done=1, total=2)

    with job_progress.connected_to(record):
        job = reports_once.submit()

    assert job.status is JobStatus.COMPLETED
    assert received == [(app, 1, threading.current_thread().name)]


@settings(eager=True)
def test_eager_mode_fails_a_job_that_ran_past_its_timeout_without_checking(
    app: Flask, jobs: JobRunner
) -> None:
    @jobs.task(timeout=0.1)
    def never_checks() -> str:
        time.sleep(0.2)  # the work itself, longer than the timeout
        return "too late"

    job = never_checks.submit()

    assert (job.status, job.error_type, job.result) == (JobStatus.FAILED, ErrorType.TIMEOUT, None)


@settings(eager=True)
def test_eager_mode_runs_an_async_task_submitted_from_a_running_event_loop(
    app: Flask, jobs: JobRunner
) -> None:
    @jobs.task
    async def double_later(number: int) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        current_job.progress(done=1, total=1)
        return {"double": number * 2, "app": current_app.name, "job": current_job.id}

    async def submit_from_a_coroutine() -> Job:  # as an async view or test would
        return double_later.submit(21)

    job = asyncio.run(submit_from_a_coroutine())

    assert job.status is JobStatus.COMPLETED, job.error
    assert job.result == {"double": 42, "app": app.name, "job": job.id}
    assert job.percentage == 100.0


def test_shutdown_lets_a_running_job_finish(app: Flask, jobs: JobRunner) -> None:
    started = threading.Event()

    @jobs.task
    def takes_a_while() -> str:
        started.set()
        time.sleep(0.3)  # the work itself
        return "finished"

    job = takes_a_while.submit()
    assert started.wait(timeout=5)

    assert jobs.shutdown(app) is True

    assert (job.refresh().status, job.result) == (JobStatus.COMPLETED, "finished")
    assert worker_threads() == []


def test_shutdown_gives_back_a_job_that_does_not_finish_in_time(
    app: Flask, jobs: JobRunner
) -> None:
    started = threading.Event()
    release = threading.Event()

    @jobs.task
    def stuck() -> None:
        started.set()
        release.wait(timeout=10)

    job = stuck.submit()
    assert started.wait(timeout=5)
    try:
        assert jobs.shutdown(app, timeout=0.2) is False
    finally:
        release.set()

    job.refresh()
    assert job.status is JobStatus.PENDING
    assert job.record.attempts == 0


def test_job_given_back_at_shutdown_is_told_to_stop_at_its_next_check(
    app: Flask, jobs: JobRunner
) -> None:
    started = threading.Event()
    raised: list[BaseException] = []

    @jobs.task
    def checks_often() -> None:
        started.set()
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                current_job.check()
                time.sleep(0.01)
        except JobInterrupted as error:
            raised.append(error)
            raise

    job = checks_often.submit()
    assert started.wait(timeout=5)

    assert jobs.shutdown(app, timeout=0.2) is False

    # Given back, the job is another worker's to run: this run stops.
    wait_until(lambda: raised, timeout=5)
    assert "taken over" in str(raised[0])
    assert job.refresh().status is JobStatus.PENDING


def test_job_submitted_by_a_running_job_during_shutdown_starts_no_new_worker(
    app: Flask, jobs: JobRunner
) -> None:
    started = threading.Event()
    release = threading.Event()
    drained: list[bool] = []

    @jobs.task
    def follow_up() -> None: ...

    @jobs.task
    def first() -> str:
        started.set()
        release.wait(timeout=10)
        return follow_up.submit().id

    job = first.submit()
    assert started.wait(timeout=5)
    stopper = threading.Thread(target=lambda: drained.append(jobs.shutdown(app, timeout=5)))
    stopper.start()
    try:
        wait_until(lambda: jobs.get_state(app).worker is None, timeout=5)  # draining now
    finally:
        release.set()
        stopper.join(timeout=10)

    assert drained == [True]
    follow = jobs.get(job.refresh().result)
    assert follow is not None
    assert follow.status is JobStatus.PENDING  # queued for whichever worker comes next
    assert jobs.get_state(app).worker is None
    assert worker_threads() == []


@settings(run_workers=False)
def test_run_workers_false_only_enqueues(app: Flask, jobs: JobRunner) -> None:
    ran: list[int] = []

    @jobs.task
    def never_here() -> None:
        ran.append(1)

    job = never_here.submit()
    app.test_client().get("/api/jobs")  # a request does not start a worker either

    assert job.refresh().status is JobStatus.PENDING
    assert jobs.get_state(app).worker is None
    assert worker_threads() == []
    assert ran == []


# -- batched finishes ------------------------------------------------------------


@settings(max_workers=4)
def test_shutdown_writes_every_final_state_handed_to_the_finisher(
    app: Flask, jobs: JobRunner
) -> None:
    @jobs.task
    def quick(n: int) -> int:
        return n

    submitted = quick.submit_many([{"n": n} for n in range(300)])
    backend = jobs.get_state(app).backend
    wait_until(lambda: backend.counts()[JobStatus.COMPLETED] >= 20, timeout=20)

    assert jobs.shutdown(app, timeout=10)

    # No job stays in progress: each one that ran has its final state stored,
    # and the rest wait, pending, for the next worker.
    counts = backend.counts()
    assert counts[JobStatus.IN_PROGRESS] == 0
    assert counts[JobStatus.COMPLETED] + counts[JobStatus.PENDING] == 300
    for job in submitted:
        job.refresh()
        if job.status is JobStatus.COMPLETED:
            assert job.result == job.record.kwargs["n"]


@settings(max_workers=4)
def test_many_quick_jobs_each_end_exactly_once_with_their_result(
    app: Flask, jobs: JobRunner
) -> None:
    runs: collections.Counter[int] = collections.Counter()
    finished: list[str] = []

    @jobs.task
    def counted(n: int) -> int:
        runs[n] += 1
        return n * 2

    def on_finished(sender: Flask, job: Job) -> None:
        finished.append(job.id)

    with job_finished.connected_to(on_finished, app):
        submitted = counted.submit_many([{"n": n} for n in range(200)])
        results = [job.wait(timeout=30).result for job in submitted]
        # Sent just after each final state is stored: it may trail the wait a little.
        wait_until(lambda: len(finished) == 200, timeout=10)

    assert results == [n * 2 for n in range(200)]
    assert set(runs.values()) == {1}
    assert sorted(finished) == sorted(job.id for job in submitted)


def spy_on_claims(backend: Any) -> list[tuple[str, str, float]]:
    """Notes (job id, claiming thread, claim timeout) of each job the real *backend* hands out."""
    claimed: list[tuple[str, str, float]] = []
    claim = backend.claim

    def noting(queues: Any, *, timeout: float = 0, **kwargs: Any) -> list[Any]:
        claims: list[Any] = claim(queues, timeout=timeout, **kwargs)
        thread = threading.current_thread().name
        claimed.extend((c.record.id, thread, timeout) for c in claims)
        return claims

    backend.claim = noting
    return claimed


@settings(max_workers=2)
def test_while_jobs_wait_a_thread_that_ends_one_claims_its_next_itself(
    app: Flask, jobs: JobRunner
) -> None:
    claimed = spy_on_claims(jobs.get_state(app).backend)

    @jobs.task
    def not_so_quick(n: int) -> int:
        time.sleep(SELF_CLAIM_AFTER)  # a quicker job's thread waits for its turn to claim
        return n

    submitted = not_so_quick.submit_many([{"n": n} for n in range(40)])
    assert [job.wait(timeout=30).result for job in submitted] == list(range(40))

    assert sorted(job_id for job_id, _, _ in claimed) == sorted(job.id for job in submitted)
    # The turn-taking claims wait for work; a thread's own claim for its next job does not.
    own = [job_id for job_id, _, timeout in claimed if timeout == 0]
    assert len(own) >= 30, claimed


@settings(max_workers=3)
def test_a_lone_job_runs_on_the_thread_that_claimed_it(app: Flask, jobs: JobRunner) -> None:
    claimed = spy_on_claims(jobs.get_state(app).backend)
    ran_on: dict[str, str] = {}

    def note_the_thread(sender: Flask, job: Job) -> None:
        ran_on[job.id] = threading.current_thread().name

    @jobs.task
    def alone() -> None:
        pass

    with job_started.connected_to(note_the_thread, app):
        done = [alone.submit().wait(timeout=10) for _ in range(5)]

    assert [job.status for job in done] == [JobStatus.COMPLETED] * 5
    # No hand-over between threads: the claim's thread is the job's.
    assert {job_id: thread for job_id, thread, _ in claimed} == ran_on


@pytest.mark.parametrize("backend_id", ["memory"])
@settings(max_workers=4)
def test_quick_jobs_on_a_local_backend_run_back_to_back_on_one_thread(
    app: Flask, jobs: JobRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # However long a thread is held up (a loaded machine), no other claims beside it.
    monkeypatch.setattr("flask_jobrunner.worker.CLAIM_BESIDE_AFTER", 60.0)
    ran_on: dict[str, str] = {}

    def note_the_thread(sender: Flask, job: Job) -> None:
        ran_on[job.id] = threading.current_thread().name

    @jobs.task
    def quick(n: int) -> int:
        return n

    with job_started.connected_to(note_the_thread, app):
        submitted = quick.submit_many([{"n": n} for n in range(200)])
        assert [job.wait(timeout=30).result for job in submitted] == list(range(200))

    # No batch handed out to idle threads, no thread claiming beside the busy one.
    assert len(ran_on) == 200
    assert len(set(ran_on.values())) == 1, collections.Counter(ran_on.values())


@pytest.mark.parametrize("backend_id", ["memory"])
@settings(max_workers=2)
def test_of_two_threads_running_quick_jobs_on_a_local_backend_one_steps_back(
    app: Flask, jobs: JobRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Jobs of 10 ms are quick beside 0.5 s, with room for a loaded machine's delays.
    monkeypatch.setattr("flask_jobrunner.worker.CLAIM_BESIDE_AFTER", 0.5)
    release = threading.Event()
    runs: list[tuple[str, bool]] = []

    @jobs.task
    def held() -> None:
        release.wait(timeout=10)

    @jobs.task
    def short() -> None:
        runs.append((threading.current_thread().name, release.is_set()))
        time.sleep(0.01)

    first = held.submit()
    wait_until(lambda: first.refresh().status is JobStatus.IN_PROGRESS, timeout=5)
    # The other thread claims beside the held job once it ran 0.5 s, and runs these.
    submitted = short.submit_many([{}] * 60)
    wait_until(lambda: len(runs) >= 5, timeout=10)
    release.set()  # the held job's thread claims its next itself: two threads run short jobs
    assert first.wait(timeout=10).status is JobStatus.COMPLETED
    assert all(job.wait(timeout=30).status is JobStatus.COMPLETED for job in submitted)

    after = collections.Counter(name for name, released in runs if released)
    # Without the step back, each of the two would run about half of those left.
    assert sum(after.values()) >= 40, runs
    assert sum(after.values()) - max(after.values()) <= 2, after


@pytest.mark.parametrize("backend_id", ["memory"])
@settings(max_workers=4)
def test_slow_jobs_on_a_local_backend_still_run_on_every_thread(
    app: Flask, jobs: JobRunner
) -> None:
    all_running = threading.Barrier(4, timeout=10)

    @jobs.task
    def slow() -> None:
        all_running.wait()  # broken, failing the jobs, unless all four run at once

    submitted = [slow.submit() for _ in range(8)]

    assert [job.wait(timeout=30).status for job in submitted] == [JobStatus.COMPLETED] * 8


def test_a_job_that_ends_just_at_its_timeout_is_written_once(app: Flask, jobs: JobRunner) -> None:
    @jobs.task(timeout=0.2)
    def slow_then_done() -> str:
        time.sleep(0.2)
        return "done"

    job = slow_then_done.submit().wait(timeout=10)

    # Either the task's outcome (a timeout, since it ended too late) or the
    # monitor's: one final state, and it says timeout.
    assert job.status is JobStatus.FAILED
    assert job.error_type is ErrorType.TIMEOUT


# -- claiming ahead ----------------------------------------------------------


@settings(max_workers=2)
def test_while_short_jobs_keep_every_thread_busy_the_next_is_claimed_ahead(
    app: Flask, jobs: JobRunner
) -> None:
    backend = jobs.get_state(app).backend
    claimed = spy_on_claims(backend)
    runs: collections.Counter[int] = collections.Counter()

    @jobs.task
    def short(n: int) -> int:
        runs[n] += 1
        time.sleep(0.01)
        return n

    submitted = [short.submit(n) for n in range(60)]
    assert [job.wait(timeout=30).result for job in submitted] == list(range(60))

    assert set(runs.values()) == {1}
    ahead = [job_id for job_id, thread, _ in claimed if thread.endswith("-ahead")]
    # A claim costs no round trip in memory: there, threads claim their next themselves.
    if backend.is_shared:
        assert len(ahead) >= 20, claimed
    else:
        assert not ahead


@pytest.mark.parametrize("backend_id", DURABLE_IDS, indirect=True)  # memory claims no spares
@settings(max_workers=1)
def test_a_job_claimed_ahead_that_waits_behind_a_long_one_goes_back_to_the_queue(
    app: Flask, jobs: JobRunner
) -> None:
    backend = jobs.get_state(app).backend
    claimed = spy_on_claims(backend)
    release = threading.Event()
    runs: collections.Counter[str] = collections.Counter()

    @jobs.task
    def short() -> None:
        time.sleep(0.01)

    @jobs.task
    def long() -> None:
        release.wait(timeout=20)

    @jobs.task
    def after() -> str:
        runs[current_job.id] += 1
        return "done"

    for _ in range(6):
        short.submit()
    blocker = long.submit()
    waiting = after.submit()
    try:
        # The only thread takes the long job, the next one was claimed ahead ...
        wait_until(
            lambda: any(
                job_id == waiting.id and thread.endswith("-ahead") for job_id, thread, _ in claimed
            ),
            what="the last job claimed ahead",
        )
        assert blocker.refresh().status is JobStatus.IN_PROGRESS
        # ... and goes back to the queue, its attempt not counted, while the long one runs.
        wait_until(lambda: waiting.refresh().status is JobStatus.PENDING, what="the job given back")
        assert waiting.record.attempts == 0
        assert blocker.refresh().status is JobStatus.IN_PROGRESS
    finally:
        release.set()
    assert waiting.wait(timeout=10).result == "done"
    assert waiting.record.attempts == 1
    assert list(runs.values()) == [1]
