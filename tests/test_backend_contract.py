"""The backend contract suite: every backend must pass it unchanged.

Each test uses only the :class:`~flask_jobrunner.backends.base.Backend` methods
on the ``backend`` fixture (a fresh backend per test, ``result_ttl=3600``,
``max_jobs=10000``), so a new backend joins by adding its URL to
``tests/conftest.py``. Waits are bounded, threads are real, nothing is mocked.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from conftest import make_record, wait_until
from flask_jobrunner.backends import Backend, load_backend
from flask_jobrunner.errors import InvalidArguments, JobConflict
from flask_jobrunner.record import (
    Claim,
    ErrorType,
    JobRecord,
    JobStatus,
    LeaseState,
    Outcome,
    Progress,
    new_job_id,
)

LEASE = 60.0
QUEUE = "default"
DONE = Outcome(JobStatus.COMPLETED, result={"ok": True})
FAILED_ONCE = Outcome(
    JobStatus.FAILED,
    error="Internal error: boom",
    error_type=ErrorType.SYSTEM,
    error_details="RuntimeError",
)


# -- helpers -----------------------------------------------------------------


def enqueue(backend: Backend, **fields: Any) -> JobRecord:
    """Store a new job and return the stored record."""
    stored, created = backend.enqueue(make_record(**fields))
    assert created
    return stored


def enqueue_in_order(backend: Backend, count: int, **fields: Any) -> list[JobRecord]:
    """*count* jobs with strictly increasing ``created_at``, oldest first."""
    base = backend.now() - timedelta(seconds=60)
    return [
        enqueue(backend, created_at=base + timedelta(milliseconds=index), **fields)
        for index in range(count)
    ]


def claim_one(backend: Backend, queue: str = QUEUE, *, lease: float = LEASE) -> Claim:
    """Claim exactly one job from *queue*."""
    claims = backend.claim([queue], lease=lease)
    assert len(claims) == 1, claims
    return claims[0]


def stored(backend: Backend, job_id: str) -> JobRecord:
    """The stored record, which must exist."""
    record = backend.get(job_id)
    assert record is not None, f"job {job_id} is not stored"
    return record


def forged_cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


class InThread:
    """Run *function* in a real thread, timing it; :meth:`join` is bounded."""

    def __init__(self, function: Callable[[], Any], name: str = "contract-helper") -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.elapsed: float | None = None
        self._function = function
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.monotonic()
        try:
            self.result = self._function()
        except BaseException as error:  # reported by join()
            self.error = error
        finally:
            self.elapsed = time.monotonic() - start

    def join(self, timeout: float = 30) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"thread still running after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.result


def assert_token_refused(backend: Backend, job_id: str, token: str) -> None:
    """Every write with *token* is refused and leaves the stored job as it was."""
    before = stored(backend, job_id)
    later = backend.now() + timedelta(seconds=1)
    assert backend.heartbeat(job_id, token, lease=LEASE) is LeaseState.LOST
    assert backend.progress(job_id, token, Progress(50, "stale"), lease=LEASE) is LeaseState.LOST
    assert backend.finish(job_id, token, DONE) is False
    assert backend.retry_later(job_id, token, later, FAILED_ONCE) is False
    assert backend.release(job_id, token) is False
    assert stored(backend, job_id) == before


def expire_and_recover(backend: Backend, *, max_recoveries: int) -> list[JobRecord]:
    """Wait (bounded) until recover_expired takes back at least one job."""
    result: list[JobRecord] = wait_until(
        lambda: backend.recover_expired(max_recoveries=max_recoveries), timeout=10
    )
    return result


@pytest.fixture
def short_ttl_backend(backend_url: str, backend_options: dict[str, Any]) -> Iterator[Backend]:
    """A backend of the same kind whose finished jobs expire after 50 ms."""
    instance = load_backend(backend_url, **{**backend_options, "result_ttl": 0.05})
    instance.setup()
    instance.clear()
    yield instance
    instance.clear()
    instance.close()


# -- clock -------------------------------------------------------------------


def test_now_is_timezone_aware_utc(backend: Backend) -> None:
    now = backend.now()
    assert now.utcoffset() == timedelta(0)
    assert abs(now - datetime.now(timezone.utc)) < timedelta(minutes=5)


# -- enqueue and get ---------------------------------------------------------


def test_enqueue_stores_the_record_and_get_returns_an_equal_copy(backend: Backend) -> None:
    record = make_record(
        task="reports.build",
        queue="reports",
        args=[1, "two", [3.5, None], {"four": True}],
        kwargs={"name": "Zoë ✓", "nested": {"list": [1, 2], "flag": False}},
        max_retries=2,
        timeout=30.0,
        created_by="alice",
        unique_key="reports.build",
        idempotency_key="alice:key-1",
    )
    result, created = backend.enqueue(record)

    assert created is True
    assert result == record
    assert result.status is JobStatus.PENDING
    assert stored(backend, record.id) == record


def test_get_of_an_unknown_job_is_none(backend: Backend) -> None:
    assert backend.get(new_job_id()) is None


def test_changing_returned_records_changes_nothing_stored(backend: Backend) -> None:
    record = make_record(args=[[1]], kwargs={"nested": {"list": [1]}})
    result, _ = backend.enqueue(record)
    original = stored(backend, record.id)

    for copy in (record, result, stored(backend, record.id)):
        copy.status = JobStatus.COMPLETED
        copy.task = "changed"
        copy.args.append("extra")
        copy.args[0].append(2)
        copy.kwargs["added"] = 1
        copy.kwargs["nested"]["list"].append(2)
    listed, _ = backend.list_jobs()
    listed[0].kwargs["nested"]["list"].append(3)
    listed[0].message = "changed"

    assert stored(backend, record.id) == original
    assert original.args == [[1]]
    assert original.kwargs == {"nested": {"list": [1]}}


def test_changing_a_claimed_or_finished_record_changes_nothing_stored(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend)
    claim.record.status = JobStatus.FAILED
    claim.record.attempts = 99
    assert stored(backend, job.id).status is JobStatus.IN_PROGRESS
    assert stored(backend, job.id).attempts == 1

    result = {"rows": [1, 2]}
    assert backend.finish(job.id, claim.token, Outcome(JobStatus.COMPLETED, result=result))
    result["rows"].append(3)
    finished = stored(backend, job.id)
    finished.result["rows"].append(4)

    assert stored(backend, job.id).result == {"rows": [1, 2]}


# -- idempotency and unique keys ---------------------------------------------


def test_idempotency_key_returns_the_first_job_and_stores_nothing(backend: Backend) -> None:
    first = enqueue(backend, idempotency_key="alice:k1", args=[1])
    second = make_record(idempotency_key="alice:k1", args=[2])

    again, created = backend.enqueue(second)

    assert created is False
    assert again == first
    assert backend.get(second.id) is None
    assert sum(backend.counts().values()) == 1


def test_idempotency_key_still_returns_a_finished_job_within_the_ttl(backend: Backend) -> None:
    first = enqueue(backend, idempotency_key="alice:k1")
    claim = claim_one(backend)
    assert backend.finish(first.id, claim.token, DONE)

    again, created = backend.enqueue(make_record(idempotency_key="alice:k1"))

    assert created is False
    assert again.id == first.id
    assert again.status is JobStatus.COMPLETED


def test_different_idempotency_keys_make_different_jobs(backend: Backend) -> None:
    first = enqueue(backend, idempotency_key="alice:k1")
    second, created = backend.enqueue(make_record(idempotency_key="bob:k1"))
    assert created is True
    assert second.id != first.id


def test_unique_key_conflicts_with_a_pending_job_and_names_it(backend: Backend) -> None:
    holder = enqueue(backend, unique_key="sync")
    newcomer = make_record(unique_key="sync")

    with pytest.raises(JobConflict) as caught:
        backend.enqueue(newcomer)

    assert caught.value.existing.id == holder.id
    assert caught.value.existing.status is JobStatus.PENDING
    assert holder.id in str(caught.value)
    assert backend.get(newcomer.id) is None


def test_unique_key_conflicts_with_a_running_job(backend: Backend) -> None:
    holder = enqueue(backend, unique_key="sync")
    claim_one(backend)

    with pytest.raises(JobConflict) as caught:
        backend.enqueue(make_record(unique_key="sync"))

    assert caught.value.existing.id == holder.id
    assert caught.value.existing.status is JobStatus.IN_PROGRESS


def test_unique_key_is_still_held_by_a_job_waiting_to_retry(backend: Backend) -> None:
    holder = enqueue(backend, unique_key="sync")
    claim = claim_one(backend)
    later = backend.now() + timedelta(hours=1)
    assert backend.retry_later(holder.id, claim.token, later, FAILED_ONCE)

    with pytest.raises(JobConflict):
        backend.enqueue(make_record(unique_key="sync"))


def test_unique_key_is_free_again_after_finish(backend: Backend) -> None:
    holder = enqueue(backend, unique_key="sync")
    claim = claim_one(backend)
    assert backend.finish(holder.id, claim.token, DONE)

    _, created = backend.enqueue(make_record(unique_key="sync"))

    assert created is True


def test_unique_key_is_free_again_after_cancel(backend: Backend) -> None:
    holder = enqueue(backend, unique_key="sync")
    backend.request_cancel(holder.id)

    _, created = backend.enqueue(make_record(unique_key="sync"))

    assert created is True


def test_different_unique_keys_do_not_conflict(backend: Backend) -> None:
    enqueue(backend, unique_key="sync-a")
    _, created = backend.enqueue(make_record(unique_key="sync-b"))
    assert created is True


# -- claim -------------------------------------------------------------------


def test_claim_from_an_empty_queue_returns_nothing(backend: Backend) -> None:
    assert backend.claim([QUEUE], lease=LEASE) == []


def test_claim_takes_the_oldest_job_first(backend: Backend) -> None:
    jobs = enqueue_in_order(backend, 5)

    claimed = [claim_one(backend).record.id for _ in jobs]

    assert claimed == [job.id for job in jobs]
    assert backend.claim([QUEUE], lease=LEASE) == []


def test_claim_honours_the_limit(backend: Backend) -> None:
    jobs = enqueue_in_order(backend, 5)

    first = backend.claim([QUEUE], lease=LEASE, limit=2)
    rest = backend.claim([QUEUE], lease=LEASE, limit=10)

    assert [claim.record.id for claim in first] == [job.id for job in jobs[:2]]
    assert [claim.record.id for claim in rest] == [job.id for job in jobs[2:]]


def test_claim_marks_the_job_in_progress_with_a_token_and_a_lease(backend: Backend) -> None:
    job = enqueue(backend)
    before = backend.now()

    claim = claim_one(backend, lease=120)

    after = backend.now()
    record = stored(backend, job.id)
    assert claim.token
    assert record == claim.record
    assert record.status is JobStatus.IN_PROGRESS
    assert record.token == claim.token
    assert record.attempts == 1
    assert record.started_at is not None
    assert before - timedelta(seconds=1) <= record.started_at <= after + timedelta(seconds=1)
    assert record.lease_expires_at is not None
    expected_lease = record.lease_expires_at - record.started_at
    assert timedelta(seconds=119) <= expected_lease <= timedelta(seconds=121)


def test_each_claim_gets_a_new_token_and_keeps_the_first_start(backend: Backend) -> None:
    job = enqueue(backend)
    first = claim_one(backend)
    assert backend.retry_later(job.id, first.token, backend.now(), FAILED_ONCE)

    second = wait_until(lambda: backend.claim([QUEUE], lease=LEASE))[0]

    assert second.token != first.token
    assert second.record.attempts == 2
    assert second.record.started_at == first.record.started_at


def test_claim_takes_from_several_queues_oldest_first(backend: Backend) -> None:
    base = backend.now() - timedelta(seconds=60)
    order = ["q1", "q2", "q3", "q1", "q2", "q3"]
    jobs = [
        enqueue(backend, queue=queue, created_at=base + timedelta(milliseconds=index))
        for index, queue in enumerate(order)
    ]

    claims = backend.claim(["q1", "q2"], lease=LEASE, limit=10)

    assert [claim.record.id for claim in claims] == [
        job.id for job in jobs if job.queue in ("q1", "q2")
    ]
    assert [claim.record.id for claim in backend.claim(["q3"], lease=LEASE, limit=10)] == [
        job.id for job in jobs if job.queue == "q3"
    ]


def test_claim_ignores_queues_it_was_not_asked_for(backend: Backend) -> None:
    enqueue(backend, queue="other")
    assert backend.claim([QUEUE], lease=LEASE, limit=10) == []
    assert backend.claim(["nothing-here"], lease=LEASE) == []


def test_a_job_is_not_claimed_before_its_run_at(backend: Backend) -> None:
    run_at = backend.now() + timedelta(seconds=0.3)
    scheduled = enqueue(backend, run_at=run_at)
    now_job = enqueue(backend)

    assert [claim.record.id for claim in backend.claim([QUEUE], lease=LEASE, limit=10)] == [
        now_job.id
    ]
    assert backend.claim([QUEUE], lease=LEASE, limit=10) == []

    claims = wait_until(lambda: backend.claim([QUEUE], lease=LEASE, limit=10), timeout=10)

    assert [claim.record.id for claim in claims] == [scheduled.id]
    assert backend.now() >= run_at


def test_a_job_whose_run_at_passed_is_claimed_before_newer_jobs(backend: Backend) -> None:
    # Oldest first: a due job must not wait behind work submitted after it,
    # or retried jobs would starve under a steady stream of new ones.
    run_at = backend.now() + timedelta(seconds=0.1)
    scheduled = enqueue(backend, run_at=run_at)
    wait_until(lambda: backend.now() > run_at + timedelta(seconds=0.05))
    newer = enqueue(backend)

    claims = backend.claim([QUEUE], lease=LEASE, limit=10)

    assert [claim.record.id for claim in claims] == [scheduled.id, newer.id]


def test_a_job_created_on_a_clock_ahead_of_the_backends_is_claimable_at_once(
    backend: Backend,
) -> None:
    # A submitter's clock may run ahead of the backend's; its jobs are due
    # now all the same. Times far from now have more or fewer digits as
    # microseconds since the epoch, which a comparison of texts would get wrong.
    now = backend.now()
    created = [
        now + timedelta(hours=1),
        datetime(2400, 1, 1, tzinfo=timezone.utc),
        datetime(1999, 1, 1, tzinfo=timezone.utc),
    ]
    jobs = {enqueue(backend, created_at=moment).id for moment in created}
    jobs |= {enqueue(backend, created_at=moment, created_by="ann").id for moment in created}

    claims = backend.claim([QUEUE], lease=LEASE, limit=10)

    assert {claim.record.id for claim in claims} == jobs
    assert {claim.record.created_at for claim in claims} == set(created)


def test_claim_with_a_timeout_returns_nothing_after_that_long(backend: Backend) -> None:
    start = time.monotonic()
    claims = backend.claim([QUEUE], lease=LEASE, timeout=0.3)
    elapsed = time.monotonic() - start

    assert claims == []
    assert 0.25 <= elapsed < 5


def test_a_waiting_claim_returns_promptly_when_a_job_is_enqueued(backend: Backend) -> None:
    waiter = InThread(lambda: backend.claim([QUEUE], lease=LEASE, timeout=10))
    time.sleep(0.2)  # let it start waiting
    job = enqueue(backend)

    claims = waiter.join()

    assert [claim.record.id for claim in claims] == [job.id]
    assert waiter.elapsed is not None
    assert waiter.elapsed < 5


def test_a_waiting_claim_is_woken_though_another_queue_is_waited_on(backend: Backend) -> None:
    other = InThread(lambda: backend.claim(["other"], lease=LEASE, timeout=10), name="other")
    time.sleep(0.1)
    mine = InThread(lambda: backend.claim([QUEUE], lease=LEASE, timeout=10), name="mine")
    time.sleep(0.2)  # both are waiting, the other one first
    job = enqueue(backend)

    claims = mine.join()
    other_job = enqueue(backend, queue="other")
    other_claims = other.join()

    assert [claim.record.id for claim in claims] == [job.id]
    assert mine.elapsed is not None
    assert mine.elapsed < 5
    assert [claim.record.id for claim in other_claims] == [other_job.id]


def test_a_waiting_claim_returns_a_scheduled_job_when_it_becomes_due(backend: Backend) -> None:
    run_at = backend.now() + timedelta(seconds=0.3)
    job = enqueue(backend, run_at=run_at)

    start = time.monotonic()
    claims = backend.claim([QUEUE], lease=LEASE, timeout=10)
    elapsed = time.monotonic() - start

    assert [claim.record.id for claim in claims] == [job.id]
    assert backend.now() >= run_at
    assert elapsed < 5


def test_concurrent_claimers_never_share_a_job_and_take_them_all(backend: Backend) -> None:
    total, workers = 2000, 8
    jobs = {enqueue(backend).id for _ in range(total)}
    start = threading.Barrier(workers)

    def claimer(limit: int) -> list[str]:
        taken: list[str] = []
        start.wait(timeout=10)
        while claims := backend.claim([QUEUE], lease=LEASE, limit=limit):
            for claim in claims:
                taken.append(claim.record.id)
                assert backend.finish(claim.record.id, claim.token, DONE)
        return taken

    threads = [
        InThread(lambda limit=1 + index % 4: claimer(limit), name=f"claimer-{index}")
        for index in range(workers)
    ]
    taken = [job_id for thread in threads for job_id in thread.join(timeout=60)]

    assert len(taken) == len(set(taken)), "a job was handed to two claims"
    assert set(taken) == jobs
    assert backend.counts()[JobStatus.COMPLETED] == total


# -- heartbeat and progress --------------------------------------------------


def test_heartbeat_of_a_held_job_returns_held_and_renews_the_lease(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend, lease=0.5)

    assert backend.heartbeat(job.id, claim.token, lease=LEASE) is LeaseState.HELD

    record = stored(backend, job.id)
    assert record.lease_expires_at is not None
    assert record.lease_expires_at > backend.now() + timedelta(seconds=LEASE - 5)
    time.sleep(0.6)  # past the first lease, well within the renewed one
    assert backend.recover_expired(max_recoveries=3) == []
    assert stored(backend, job.id).status is JobStatus.IN_PROGRESS


def test_progress_of_a_held_job_is_stored_and_renews_the_lease(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend, lease=0.5)

    state = backend.progress(
        job.id,
        claim.token,
        Progress(percentage=40.0, message="reading", items_processed=4, total_items=10),
        lease=LEASE,
    )

    assert state is LeaseState.HELD
    record = stored(backend, job.id)
    assert (record.percentage, record.message, record.items_processed, record.total_items) == (
        40.0,
        "reading",
        4,
        10,
    )
    time.sleep(0.6)
    assert backend.recover_expired(max_recoveries=3) == []


def test_progress_keeps_fields_a_report_leaves_out(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend)
    backend.progress(job.id, claim.token, Progress(50.0, "half", 5, 10), lease=LEASE)

    backend.progress(job.id, claim.token, Progress(message="still going"), lease=LEASE)

    record = stored(backend, job.id)
    assert (record.percentage, record.message, record.items_processed, record.total_items) == (
        50.0,
        "still going",
        5,
        10,
    )


def test_heartbeat_and_progress_report_a_cancel_request(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend)
    backend.request_cancel(job.id)

    assert backend.heartbeat(job.id, claim.token, lease=LEASE) is LeaseState.CANCEL_REQUESTED
    assert (
        backend.progress(job.id, claim.token, Progress(10.0), lease=LEASE)
        is LeaseState.CANCEL_REQUESTED
    )
    assert stored(backend, job.id).percentage == 10.0


def test_writes_with_a_wrong_token_are_refused(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend)

    assert_token_refused(backend, job.id, "not-the-token")
    assert_token_refused(backend, job.id, "")

    assert backend.heartbeat(job.id, claim.token, lease=LEASE) is LeaseState.HELD


def test_writes_to_an_unknown_job_are_refused(backend: Backend) -> None:
    job_id = new_job_id()
    assert backend.heartbeat(job_id, "token", lease=LEASE) is LeaseState.LOST
    assert backend.progress(job_id, "token", Progress(1.0), lease=LEASE) is LeaseState.LOST
    assert backend.finish(job_id, "token", DONE) is False
    assert backend.retry_later(job_id, "token", backend.now(), FAILED_ONCE) is False
    assert backend.release(job_id, "token") is False
    assert backend.get(job_id) is None


def test_writes_to_a_pending_job_are_refused(backend: Backend) -> None:
    job = enqueue(backend)
    assert_token_refused(backend, job.id, "any-token")


@pytest.mark.parametrize(
    "how", ["finished", "retried", "released", "cancelled-and-finished", "claimed-again"]
)
def test_a_stale_token_can_write_nothing(backend: Backend, how: str) -> None:
    job = enqueue(backend)
    old = claim_one(backend)
    if how == "finished":
        assert backend.finish(job.id, old.token, DONE)
    elif how == "retried":
        assert backend.retry_later(job.id, old.token, backend.now(), FAILED_ONCE)
    elif how == "released":
        assert backend.release(job.id, old.token)
    elif how == "cancelled-and-finished":
        backend.request_cancel(job.id)
        assert backend.finish(job.id, old.token, Outcome(JobStatus.CANCELLED))
    else:
        assert backend.release(job.id, old.token)
        new = claim_one(backend)
        assert new.token != old.token

    assert_token_refused(backend, job.id, old.token)


# -- finish ------------------------------------------------------------------


def test_finish_writes_the_outcome(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend)
    outcome = Outcome(
        JobStatus.COMPLETED,
        result={"rows": 3, "names": ["a", "b"]},
        progress=Progress(100.0, "done", 3, 3),
    )

    assert backend.finish(job.id, claim.token, outcome) is True

    record = stored(backend, job.id)
    assert record.status is JobStatus.COMPLETED
    assert record.is_finished
    assert record.result == {"rows": 3, "names": ["a", "b"]}
    assert record.error is None
    assert record.error_type is None
    assert (record.percentage, record.message, record.items_processed, record.total_items) == (
        100.0,
        "done",
        3,
        3,
    )
    assert record.finished_at is not None
    assert record.started_at is not None
    assert record.finished_at >= record.started_at


def test_finish_writes_a_failure(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend)
    outcome = Outcome(
        JobStatus.FAILED,
        error="The value is wrong.",
        error_type=ErrorType.VALIDATION,
        error_details="ValueError",
    )

    assert backend.finish(job.id, claim.token, outcome)

    record = stored(backend, job.id)
    assert record.status is JobStatus.FAILED
    assert record.error == "The value is wrong."
    assert record.error_type is ErrorType.VALIDATION
    assert record.error_details == "ValueError"


def test_a_second_finish_is_refused_and_changes_nothing(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend)
    assert backend.finish(job.id, claim.token, DONE)
    first = stored(backend, job.id)

    assert backend.finish(job.id, claim.token, FAILED_ONCE) is False
    assert backend.finish(job.id, claim.token, DONE) is False

    assert stored(backend, job.id) == first


def test_racing_finishes_leave_exactly_one_final_state(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend)
    start = threading.Barrier(8)
    outcomes = [Outcome(JobStatus.COMPLETED, result=index) for index in range(8)]

    def finish(outcome: Outcome) -> bool:
        start.wait(timeout=10)
        return backend.finish(job.id, claim.token, outcome)

    threads = [
        InThread(lambda outcome=outcome: finish(outcome), name=f"finisher-{index}")
        for index, outcome in enumerate(outcomes)
    ]
    results = [thread.join() for thread in threads]

    assert results.count(True) == 1
    assert stored(backend, job.id).result == results.index(True)


# -- retry_later and release -------------------------------------------------


def test_retry_later_puts_the_job_back_pending_with_its_error(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend)
    run_at = backend.now() + timedelta(seconds=0.3)

    assert backend.retry_later(job.id, claim.token, run_at, FAILED_ONCE) is True

    record = stored(backend, job.id)
    assert record.status is JobStatus.PENDING
    assert record.error == "Internal error: boom"
    assert record.error_type is ErrorType.SYSTEM
    assert record.error_details == "RuntimeError"
    assert record.attempts == 1
    assert record.run_at == run_at
    assert record.finished_at is None


def test_a_retried_job_is_claimable_only_from_its_run_at(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend)
    run_at = backend.now() + timedelta(seconds=0.3)
    assert backend.retry_later(job.id, claim.token, run_at, FAILED_ONCE)

    assert backend.claim([QUEUE], lease=LEASE) == []
    claims = wait_until(lambda: backend.claim([QUEUE], lease=LEASE), timeout=10)

    assert backend.now() >= run_at
    assert [again.record.id for again in claims] == [job.id]
    assert claims[0].record.attempts == 2


def test_release_gives_the_job_back_without_counting_the_attempt(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend)

    assert backend.release(job.id, claim.token) is True

    record = stored(backend, job.id)
    assert record.status is JobStatus.PENDING
    assert record.attempts == 0
    assert record.token is None
    again = claim_one(backend)
    assert again.record.id == job.id
    assert again.record.attempts == 1


def test_a_released_job_keeps_its_place_before_newer_jobs(backend: Backend) -> None:
    first, second = enqueue_in_order(backend, 2)
    claim = claim_one(backend)
    assert claim.record.id == first.id

    assert backend.release(first.id, claim.token)

    assert [again.record.id for again in backend.claim([QUEUE], lease=LEASE, limit=2)] == [
        first.id,
        second.id,
    ]


# -- request_cancel ----------------------------------------------------------


def test_cancelling_a_pending_job_cancels_it_at_once(backend: Backend) -> None:
    job = enqueue(backend)

    record = backend.request_cancel(job.id)

    assert record is not None
    assert record.status is JobStatus.CANCELLED
    assert record.finished_at is not None
    assert stored(backend, job.id) == record
    assert backend.claim([QUEUE], lease=LEASE, limit=10) == []


def test_a_cancelled_scheduled_job_is_never_claimed(backend: Backend) -> None:
    job = enqueue(backend, run_at=backend.now() + timedelta(seconds=0.1))
    backend.request_cancel(job.id)

    assert backend.claim([QUEUE], lease=LEASE, timeout=0.3) == []
    assert stored(backend, job.id).status is JobStatus.CANCELLED


def test_cancelling_a_running_job_requests_the_cancel(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend)

    record = backend.request_cancel(job.id)

    assert record is not None
    assert record.status is JobStatus.IN_PROGRESS
    assert record.cancel_requested is True
    assert stored(backend, job.id).cancel_requested is True
    assert backend.finish(job.id, claim.token, Outcome(JobStatus.CANCELLED))
    assert stored(backend, job.id).status is JobStatus.CANCELLED


@pytest.mark.parametrize("given_back_by", ["release", "retry_later", "recover_expired"])
def test_a_cancel_request_is_kept_when_the_job_is_given_back(
    backend: Backend, given_back_by: str
) -> None:
    # The holder never saw the request; the job must not run again.
    job = enqueue(backend)
    claim = claim_one(backend, lease=0.05 if given_back_by == "recover_expired" else LEASE)
    backend.request_cancel(job.id)

    if given_back_by == "release":
        assert backend.release(job.id, claim.token)
    elif given_back_by == "retry_later":
        assert backend.retry_later(job.id, claim.token, backend.now(), FAILED_ONCE)
    else:
        assert [record.id for record in expire_and_recover(backend, max_recoveries=3)] == [job.id]

    assert stored(backend, job.id).status is JobStatus.CANCELLED
    assert backend.claim([QUEUE], lease=LEASE, timeout=0.1) == []
    assert_token_refused(backend, job.id, claim.token)


def test_cancelling_a_finished_job_changes_nothing(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend)
    assert backend.finish(job.id, claim.token, DONE)
    before = stored(backend, job.id)

    record = backend.request_cancel(job.id)

    assert record == before
    assert stored(backend, job.id) == before


def test_cancelling_an_unknown_job_returns_none(backend: Backend) -> None:
    assert backend.request_cancel(new_job_id()) is None


# -- list_jobs ---------------------------------------------------------------


def test_list_jobs_is_newest_first(backend: Backend) -> None:
    jobs = enqueue_in_order(backend, 5)

    page, cursor = backend.list_jobs()

    assert [record.id for record in page] == [job.id for job in reversed(jobs)]
    assert cursor is None


def test_list_jobs_of_an_empty_backend(backend: Backend) -> None:
    assert backend.list_jobs() == ([], None)


def test_list_jobs_filters_combine(backend: Backend) -> None:
    # The queue decides the status: 'q-running' is claimed, 'q-done' finished.
    base = backend.now() - timedelta(seconds=60)
    jobs: list[tuple[str, str | None, JobStatus, str]] = []
    statuses = {
        "q-pending": JobStatus.PENDING,
        "q-running": JobStatus.IN_PROGRESS,
        "q-done": JobStatus.COMPLETED,
    }
    index = 0
    for task in ("tasks.a", "tasks.b"):
        for user in ("u1", "u2", None):
            for queue, status in statuses.items():
                index += 1
                job = enqueue(
                    backend,
                    task=task,
                    created_by=user,
                    queue=queue,
                    created_at=base + timedelta(milliseconds=index),
                )
                jobs.append((task, user, status, job.id))
    for claim in backend.claim(["q-running", "q-done"], lease=LEASE, limit=100):
        if claim.record.queue == "q-done":
            assert backend.finish(claim.record.id, claim.token, DONE)

    newest_first = list(reversed(jobs))
    for status in (None, *statuses.values(), JobStatus.FAILED):
        for task in (None, "tasks.a", "tasks.b", "tasks.none"):
            for user in (None, "u1", "u2", "nobody"):
                page, cursor = backend.list_jobs(
                    status=status, task=task, created_by=user, limit=100
                )
                expected = [
                    job_id
                    for job_task, job_user, job_status, job_id in newest_first
                    if (status is None or job_status is status)
                    and (task is None or job_task == task)
                    and (user is None or job_user == user)
                ]
                assert [record.id for record in page] == expected, (status, task, user)
                assert all(record.status is stored(backend, record.id).status for record in page)
                assert cursor is None


def collect_pages(backend: Backend, **filters: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page, cursor = backend.list_jobs(cursor=cursor, **filters)
        pages.append([record.id for record in page])
        if cursor is None:
            return pages
        assert len(pages) < 100, "the cursors never end"


def test_cursor_pages_cover_every_job_once(backend: Backend) -> None:
    jobs = enqueue_in_order(backend, 23)

    pages = collect_pages(backend, limit=5)

    assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
    assert [job_id for page in pages for job_id in page] == [job.id for job in reversed(jobs)]


def test_cursor_pages_end_without_an_empty_page(backend: Backend) -> None:
    jobs = enqueue_in_order(backend, 10)

    pages = collect_pages(backend, limit=5)

    assert [len(page) for page in pages] == [5, 5]
    assert {job_id for page in pages for job_id in page} == {job.id for job in jobs}


def test_cursor_pages_cover_jobs_created_at_the_same_instant(backend: Backend) -> None:
    same = backend.now() - timedelta(seconds=1)
    jobs = [enqueue(backend, created_at=same) for _ in range(12)]

    pages = collect_pages(backend, limit=5)
    everything, _ = backend.list_jobs(limit=100)

    flat = [job_id for page in pages for job_id in page]
    assert len(flat) == len(set(flat)) == 12
    assert set(flat) == {job.id for job in jobs}
    assert flat == [record.id for record in everything]


def test_cursor_pages_keep_their_filters(backend: Backend) -> None:
    base = backend.now() - timedelta(seconds=60)
    mine = []
    for index in range(14):
        user = "alice" if index % 2 else "bob"
        job = enqueue(backend, created_by=user, created_at=base + timedelta(milliseconds=index))
        if user == "alice":
            mine.append(job.id)

    pages = collect_pages(backend, created_by="alice", limit=3)

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [job_id for page in pages for job_id in page] == list(reversed(mine))


def test_a_cursor_still_works_after_jobs_change_status(backend: Backend) -> None:
    jobs = enqueue_in_order(backend, 6)
    first, cursor = backend.list_jobs(limit=3)
    assert cursor is not None
    backend.request_cancel(jobs[0].id)

    rest, end = backend.list_jobs(limit=3, cursor=cursor)

    assert [record.id for record in first + rest] == [job.id for job in reversed(jobs)]
    assert end is None


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "%%%",
        base64.urlsafe_b64encode(b"not json").decode(),
        forged_cursor([1, 2, 3]),
        forged_cursor({"created_at": "2024-01-01T00:00:00+00:00"}),
        forged_cursor(["yesterday", "id"]),
        forged_cursor([None, "id"]),
        forged_cursor(["2024-01-01T00:00:00", "a-naive-time"]),
    ],
)
def test_an_invalid_cursor_raises_invalid_arguments(backend: Backend, cursor: str) -> None:
    enqueue_in_order(backend, 3)
    with pytest.raises(InvalidArguments):
        backend.list_jobs(cursor=cursor)


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_under_one_raises_invalid_arguments(backend: Backend, limit: int) -> None:
    enqueue_in_order(backend, 3)
    with pytest.raises(InvalidArguments, match="limit"):
        backend.list_jobs(limit=limit)


# -- purge_expired -----------------------------------------------------------


def test_purge_keeps_finished_jobs_within_the_ttl(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend)
    assert backend.finish(job.id, claim.token, DONE)

    assert backend.purge_expired() == 0
    assert backend.get(job.id) is not None


def test_purge_removes_only_finished_jobs_past_the_ttl(short_ttl_backend: Backend) -> None:
    backend = short_ttl_backend
    done, failed, running, pending, cancelled = enqueue_in_order(backend, 5)
    claims = backend.claim([QUEUE], lease=LEASE, limit=3)
    assert [claim.record.id for claim in claims] == [done.id, failed.id, running.id]
    assert backend.finish(done.id, claims[0].token, DONE)
    assert backend.finish(failed.id, claims[1].token, FAILED_ONCE)
    backend.request_cancel(cancelled.id)
    time.sleep(0.2)  # past the 50 ms TTL

    purged = backend.purge_expired()

    assert purged == 3
    assert backend.get(done.id) is None
    assert backend.get(failed.id) is None
    assert backend.get(cancelled.id) is None
    assert stored(backend, running.id).status is JobStatus.IN_PROGRESS
    assert stored(backend, pending.id).status is JobStatus.PENDING
    assert backend.purge_expired() == 0
    assert [record.id for record in backend.list_jobs()[0]] == [pending.id, running.id]
    assert sum(backend.counts().values()) == 2


def test_an_idempotency_key_is_free_after_its_job_expired(short_ttl_backend: Backend) -> None:
    backend = short_ttl_backend
    first = enqueue(backend, idempotency_key="alice:k1")
    claim = claim_one(backend)
    assert backend.finish(first.id, claim.token, DONE)
    time.sleep(0.2)
    backend.purge_expired()

    again, created = backend.enqueue(make_record(idempotency_key="alice:k1"))

    assert created is True
    assert again.id != first.id


# -- recover_expired ---------------------------------------------------------


def test_an_expired_lease_is_recovered_back_to_pending(backend: Backend) -> None:
    job = enqueue(backend)
    healthy = enqueue(backend)
    lost = claim_one(backend, lease=0.05)
    kept = claim_one(backend, lease=LEASE)
    assert (lost.record.id, kept.record.id) == (job.id, healthy.id)

    recovered = expire_and_recover(backend, max_recoveries=3)

    assert [record.id for record in recovered] == [job.id]
    record = stored(backend, job.id)
    assert recovered[0] == record
    assert record.status is JobStatus.PENDING
    assert record.recoveries == 1
    assert record.token is None
    assert stored(backend, healthy.id).status is JobStatus.IN_PROGRESS
    assert backend.heartbeat(healthy.id, kept.token, lease=LEASE) is LeaseState.HELD


def test_the_token_of_a_recovered_job_can_write_nothing(backend: Backend) -> None:
    job = enqueue(backend)
    lost = claim_one(backend, lease=0.05)
    expire_and_recover(backend, max_recoveries=3)

    assert_token_refused(backend, job.id, lost.token)

    again = claim_one(backend)
    assert again.token != lost.token
    assert again.record.attempts == 2
    assert_token_refused(backend, job.id, lost.token)
    assert backend.finish(job.id, again.token, DONE)


def test_recover_leaves_jobs_with_a_live_lease_alone(backend: Backend) -> None:
    enqueue(backend)
    enqueue(backend)
    claim_one(backend, lease=LEASE)

    assert backend.recover_expired(max_recoveries=3) == []


def test_a_job_lost_too_often_ends_failed_interrupted(backend: Backend) -> None:
    job = enqueue(backend, unique_key="sync")
    for recoveries in (1, 2):
        claim_one(backend, lease=0.05)
        recovered = expire_and_recover(backend, max_recoveries=2)
        assert recovered[0].status is JobStatus.PENDING
        assert recovered[0].recoveries == recoveries
    last = claim_one(backend, lease=0.05)

    recovered = expire_and_recover(backend, max_recoveries=2)

    record = stored(backend, job.id)
    assert recovered == [record]
    assert record.status is JobStatus.FAILED
    assert record.error_type is ErrorType.INTERRUPTED
    assert record.error
    assert record.finished_at is not None
    assert record.attempts == 3
    assert_token_refused(backend, job.id, last.token)
    assert backend.claim([QUEUE], lease=LEASE) == []
    _, created = backend.enqueue(make_record(unique_key="sync"))
    assert created is True


def test_with_no_recoveries_allowed_a_lost_job_fails_at_once(backend: Backend) -> None:
    job = enqueue(backend)
    claim_one(backend, lease=0.05)

    recovered = expire_and_recover(backend, max_recoveries=0)

    assert [record.id for record in recovered] == [job.id]
    assert stored(backend, job.id).status is JobStatus.FAILED
    assert stored(backend, job.id).error_type is ErrorType.INTERRUPTED


# -- counts ------------------------------------------------------------------


def test_counts_of_an_empty_backend_are_zero(backend: Backend) -> None:
    assert backend.counts() == dict.fromkeys(JobStatus, 0)


def test_counts_each_status(backend: Backend) -> None:
    done, failed, _running, _pending_a, _pending_b, cancelled = enqueue_in_order(backend, 6)
    claims = backend.claim([QUEUE], lease=LEASE, limit=3)
    assert backend.finish(done.id, claims[0].token, DONE)
    assert backend.finish(failed.id, claims[1].token, FAILED_ONCE)
    backend.request_cancel(cancelled.id)

    assert backend.counts() == {
        JobStatus.PENDING: 2,
        JobStatus.IN_PROGRESS: 1,
        JobStatus.COMPLETED: 1,
        JobStatus.FAILED: 1,
        JobStatus.CANCELLED: 1,
    }


# -- wait_finished -----------------------------------------------------------


def test_wait_finished_returns_once_the_job_finishes(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend)

    def finish_soon() -> bool:
        time.sleep(0.2)
        return backend.finish(job.id, claim.token, DONE)

    finisher = InThread(finish_soon, name="finisher")
    start = time.monotonic()
    record = backend.wait_finished(job.id, timeout=10)
    elapsed = time.monotonic() - start

    assert finisher.join() is True
    assert record is not None
    assert record.status is JobStatus.COMPLETED
    assert record.result == {"ok": True}
    assert elapsed < 5


def test_wait_finished_returns_a_finished_job_at_once(backend: Backend) -> None:
    job = enqueue(backend)
    backend.request_cancel(job.id)

    start = time.monotonic()
    record = backend.wait_finished(job.id, timeout=10)

    assert time.monotonic() - start < 5
    assert record is not None
    assert record.status is JobStatus.CANCELLED


def test_wait_finished_returns_the_unfinished_job_after_its_timeout(backend: Backend) -> None:
    job = enqueue(backend)

    start = time.monotonic()
    record = backend.wait_finished(job.id, timeout=0.3)
    elapsed = time.monotonic() - start

    assert record == stored(backend, job.id)
    assert record.status is JobStatus.PENDING
    assert 0.25 <= elapsed < 5


def test_wait_finished_of_an_unknown_job_is_none(backend: Backend) -> None:
    assert backend.wait_finished(new_job_id(), timeout=0.1) is None


# -- wait_changed ------------------------------------------------------------


def revision_of(record: JobRecord) -> datetime:
    """A job's revision as the contract defines it: ``updated_at``, else ``created_at``."""
    return record.updated_at or record.created_at


def test_wait_changed_returns_at_once_without_a_revision_or_when_newer(backend: Backend) -> None:
    job = enqueue(backend)
    earlier = revision_of(job) - timedelta(microseconds=1)

    start = time.monotonic()
    first = backend.wait_changed(job.id, None, timeout=10)
    newer = backend.wait_changed(job.id, earlier, timeout=10)

    assert time.monotonic() - start < 5
    assert first == stored(backend, job.id)
    assert newer == stored(backend, job.id)


def test_wait_changed_wakes_on_a_change_from_another_thread(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend)
    seen = revision_of(stored(backend, job.id))

    def report_soon() -> LeaseState:
        time.sleep(0.2)
        return backend.progress(job.id, claim.token, Progress(percentage=40.0), lease=LEASE)

    reporter = InThread(report_soon, name="reporter")
    start = time.monotonic()
    record = backend.wait_changed(job.id, seen, timeout=10)
    elapsed = time.monotonic() - start

    assert reporter.join() is LeaseState.HELD
    assert record is not None
    assert record.percentage == 40.0
    assert revision_of(record) > seen
    assert elapsed < 5


def test_wait_changed_returns_the_unchanged_job_at_its_timeout(backend: Backend) -> None:
    job = enqueue(backend)
    claim = claim_one(backend)
    seen = stored(backend, job.id)
    # A heartbeat renews the lease only: it is not a change.
    beats = InThread(lambda: backend.heartbeat(job.id, claim.token, lease=LEASE), name="beat")

    start = time.monotonic()
    record = backend.wait_changed(job.id, revision_of(seen), timeout=0.4)
    elapsed = time.monotonic() - start

    assert beats.join() is LeaseState.HELD
    assert record is not None
    assert revision_of(record) == revision_of(seen)
    assert record.status is JobStatus.IN_PROGRESS
    assert 0.35 <= elapsed < 5


def test_wait_changed_of_an_unknown_job_is_none(backend: Backend) -> None:
    assert backend.wait_changed(new_job_id(), None, timeout=0.1) is None
    assert backend.wait_changed(new_job_id(), backend.now(), timeout=0.1) is None


def test_every_change_moves_the_revision_forward(backend: Backend) -> None:
    job = enqueue(backend)
    revisions = [revision_of(job)]

    def changed(what: str) -> None:
        record = backend.wait_changed(job.id, revisions[-1], timeout=0)
        assert record is not None
        assert revision_of(record) > revisions[-1], f"{what} did not move the revision"
        revisions.append(revision_of(record))

    claim = claim_one(backend)
    changed("claim")
    backend.progress(job.id, claim.token, Progress(percentage=10.0), lease=LEASE)
    changed("progress")
    assert backend.retry_later(job.id, claim.token, backend.now(), FAILED_ONCE)
    changed("retry_later")
    claim = claim_one(backend)
    changed("claim after a retry")
    assert backend.release(job.id, claim.token)
    changed("release")
    claim = claim_one(backend, lease=0.05)
    changed("claim with a short lease")
    expire_and_recover(backend, max_recoveries=3)
    changed("recovery")
    claim = claim_one(backend)
    changed("claim after a recovery")
    backend.request_cancel(job.id)
    changed("cancel request")
    assert backend.finish(job.id, claim.token, DONE)
    changed("finish")


# -- claim_tick: a periodic schedule's tick is claimed once ------------------------


def a_schedule_name() -> str:
    """A schedule name no other test uses: tick records outlive ``clear()`` on SQL."""
    return f"contract-{uuid.uuid4().hex}"


def test_claim_tick_is_true_for_exactly_one_of_many_racing_threads(backend: Backend) -> None:
    schedule = a_schedule_name()
    tick = datetime(2030, 1, 1, 2, 0, tzinfo=timezone.utc)
    racers = 8
    start = threading.Barrier(racers)
    answers: list[bool] = []
    errors: list[BaseException] = []

    def race() -> None:
        try:
            start.wait(10)
            answers.append(backend.claim_tick(schedule, tick))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert sorted(answers) == [False] * (racers - 1) + [True]
    assert backend.claim_tick(schedule, tick) is False


def test_claim_tick_tells_ticks_and_schedules_apart(backend: Backend) -> None:
    schedule, other = a_schedule_name(), a_schedule_name()
    tick = datetime(2030, 1, 1, 2, 0, tzinfo=timezone.utc)

    assert backend.claim_tick(schedule, tick) is True
    assert backend.claim_tick(schedule, tick + timedelta(seconds=1)) is True
    assert backend.claim_tick(schedule, tick + timedelta(microseconds=1)) is True
    assert backend.claim_tick(other, tick) is True
    # The same moment written in another timezone is the same tick.
    assert backend.claim_tick(schedule, tick.astimezone(timezone(timedelta(hours=-5)))) is False


# -- enqueue_many and finish_many ------------------------------------------------


def test_enqueue_many_stores_every_job_pending_and_claimable_oldest_first(
    backend: Backend,
) -> None:
    base = backend.now() - timedelta(seconds=60)
    records = [
        make_record(created_at=base + timedelta(milliseconds=index), args=[index], created_by="ann")
        for index in range(30)
    ]

    backend.enqueue_many(records)

    for record in records:
        assert stored(backend, record.id).status is JobStatus.PENDING
        assert stored(backend, record.id).args == record.args
    assert backend.counts()[JobStatus.PENDING] == 30
    page, _ = backend.list_jobs(created_by="ann", limit=100)
    assert [job.id for job in page] == [record.id for record in reversed(records)]
    claimed = [claim.record.id for claim in backend.claim([QUEUE], lease=LEASE, limit=12)]
    claimed += [claim.record.id for claim in backend.claim([QUEUE], lease=LEASE, limit=100)]
    assert claimed == [record.id for record in records]


def test_enqueue_many_honours_run_at_and_queues(backend: Backend) -> None:
    later = make_record(run_at=backend.now() + timedelta(seconds=0.6))
    other = make_record(queue="other")
    now = make_record()

    backend.enqueue_many([later, other, now])

    assert [claim.record.id for claim in backend.claim([QUEUE], lease=LEASE, limit=5)] == [now.id]
    assert [claim.record.id for claim in backend.claim(["other"], lease=LEASE)] == [other.id]
    claims = backend.claim([QUEUE], lease=LEASE, limit=5, timeout=5)
    assert [claim.record.id for claim in claims] == [later.id]


def test_enqueue_many_wakes_a_waiting_claim(backend: Backend) -> None:
    waiting = InThread(lambda: backend.claim([QUEUE], lease=LEASE, limit=10, timeout=10))
    time.sleep(0.2)  # let the claim start waiting; it returns as soon as jobs are stored
    records = [make_record() for _ in range(3)]
    backend.enqueue_many(records)

    claims = waiting.join()
    assert claims, "the waiting claim was not woken"
    assert waiting.elapsed is not None
    assert waiting.elapsed < 5


def test_enqueue_many_refuses_unique_and_idempotency_keys_and_stores_nothing(
    backend: Backend,
) -> None:
    plain = make_record()
    for keyed in (make_record(unique_key="nightly"), make_record(idempotency_key="u:k")):
        with pytest.raises(ValueError, match="has a unique or an idempotency key"):
            backend.enqueue_many([plain, keyed])
    assert backend.get(plain.id) is None
    assert backend.counts()[JobStatus.PENDING] == 0


def test_enqueue_many_of_nothing_stores_nothing(backend: Backend) -> None:
    backend.enqueue_many([])
    assert backend.counts()[JobStatus.PENDING] == 0


def test_enqueue_many_again_stores_no_job_twice(backend: Backend) -> None:
    records = [make_record() for _ in range(5)]
    backend.enqueue_many(records)
    backend.enqueue_many(records)  # a replay, say of a call whose answer was lost

    assert backend.counts()[JobStatus.PENDING] == 5
    assert len(backend.claim([QUEUE], lease=LEASE, limit=20)) == 5


def test_enqueue_many_takes_more_jobs_than_one_batch(backend: Backend) -> None:
    records = [make_record() for _ in range(2500)]
    backend.enqueue_many(records)

    assert backend.counts()[JobStatus.PENDING] == 2500
    claimed = {
        claim.record.id for _ in range(3) for claim in backend.claim([QUEUE], lease=60, limit=1000)
    }
    assert claimed == {record.id for record in records}


def test_finish_many_answers_each_finish_as_finish_would(backend: Backend) -> None:
    held = [enqueue(backend) for _ in range(3)]
    claims = backend.claim([QUEUE], lease=LEASE, limit=3)
    lost = claims[2]
    assert backend.release(lost.record.id, lost.token)

    answers = backend.finish_many(
        [
            (claims[0].record.id, claims[0].token, DONE),
            (claims[1].record.id, claims[1].token, FAILED_ONCE),
            (lost.record.id, lost.token, DONE),
            (claims[0].record.id, claims[0].token, DONE),
        ]
    )

    assert answers == [True, True, False, False]
    first, second, third = (stored(backend, job.id) for job in held)
    assert (first.status, first.result) == (JobStatus.COMPLETED, {"ok": True})
    assert (second.status, second.error_type) == (JobStatus.FAILED, ErrorType.SYSTEM)
    assert third.status is JobStatus.PENDING
    assert backend.finish_many([]) == []
