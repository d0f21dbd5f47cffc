"""What only the in-memory backend promises: bounded memory and its own wake-ups.

The contract every backend keeps is in ``test_backend_contract.py``; these
tests look inside :class:`~flask_jobrunner.backends.memory.MemoryBackend`
where the point is that its internal indexes stay small.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from conftest import make_record
from flask_jobrunner.backends import Backend
from flask_jobrunner.backends.memory import MemoryBackend
from flask_jobrunner.errors import BackendUnavailable
from flask_jobrunner.record import JobRecord, JobStatus, Outcome, new_job_id, utcnow

DONE = Outcome(JobStatus.COMPLETED)
LEASE = 60.0


def run_one_job(backend: MemoryBackend, **fields: Any) -> JobRecord:
    """Enqueue, claim and finish one job; returns it as stored."""
    stored, created = backend.enqueue(make_record(**fields))
    assert created
    (claim,) = backend.claim([stored.queue], lease=LEASE)
    assert claim.record.id == stored.id
    assert backend.finish(stored.id, claim.token, DONE)
    return stored


def index_sizes(backend: MemoryBackend) -> dict[str, int]:
    return {
        "jobs": len(backend._jobs),
        "ready heap entries": sum(len(heap) for heap in backend._ready.values()),
        "ready sequences": len(backend._ready_seq),
        "running": len(backend._running),
        "finished": len(backend._finished),
        "unique keys": len(backend._unique),
        "idempotency keys": len(backend._idempotency),
    }


class Blocked:
    """A claim waiting in a real thread, timed."""

    def __init__(self, backend: MemoryBackend, queues: list[str], timeout: float) -> None:
        self.claims: list[Any] | None = None
        self.elapsed: float | None = None
        self._thread = threading.Thread(
            target=self._run, args=(backend, queues, timeout), name="blocked-claim", daemon=True
        )
        self._thread.start()

    def _run(self, backend: MemoryBackend, queues: list[str], timeout: float) -> None:
        start = time.monotonic()
        self.claims = backend.claim(queues, lease=LEASE, timeout=timeout)
        self.elapsed = time.monotonic() - start

    def join(self) -> None:
        self._thread.join(30)
        assert not self._thread.is_alive()


@pytest.mark.slow  # ~4 s alone, ~10 s under coverage
def test_stays_bounded_after_100000_jobs() -> None:
    backend = MemoryBackend(result_ttl=3600, max_jobs=1000)
    total, batch = 100_000, 100
    created_at = utcnow()
    for start in range(0, total, batch):
        for number in range(start, start + batch):
            record = JobRecord(  # plain ids and one time keep the test itself quick
                id=f"job-{number}",
                task="tests.task",
                created_at=created_at,
                unique_key=f"unique-{number}",
                idempotency_key=f"key-{number}",
            )
            backend.enqueue(record)
        claims = backend.claim(["default"], lease=LEASE, limit=batch)
        assert len(claims) == batch
        for claim in claims:
            assert backend.finish(claim.record.id, claim.token, DONE)
        assert len(backend) <= 1000

    assert len(backend) == 1000
    assert index_sizes(backend) == {
        "jobs": 1000,
        "ready heap entries": 0,
        "ready sequences": 0,
        "running": 0,
        "finished": 1000,
        "unique keys": 0,
        "idempotency keys": 1000,
    }
    assert set(backend._finished) == set(backend._jobs)
    assert set(backend._idempotency.values()) == set(backend._jobs)
    assert backend.get("job-0") is None
    assert backend.get(f"job-{total - 1001}") is None
    assert backend.get(f"job-{total - 1000}") is not None
    assert backend.get(f"job-{total - 1}") is not None
    assert backend.counts()[JobStatus.COMPLETED] == 1000


def test_stays_bounded_when_jobs_are_cancelled_before_anyone_claims_them() -> None:
    backend = MemoryBackend(result_ttl=3600, max_jobs=1000)
    for _ in range(20_000):
        stored, _ = backend.enqueue(make_record(queue="nobody-claims-this"))
        backend.request_cancel(stored.id)

    sizes = index_sizes(backend)
    assert sizes["jobs"] == sizes["finished"] == 1000
    assert sizes["ready sequences"] == 0
    assert sizes["ready heap entries"] <= 100


def test_cancelled_jobs_leave_live_ones_claimable_in_order() -> None:
    backend = MemoryBackend(result_ttl=3600, max_jobs=10000)
    kept = []
    for number in range(600):
        stored, _ = backend.enqueue(make_record())
        if number % 5 == 0:
            kept.append(stored.id)
        else:
            backend.request_cancel(stored.id)

    claims = backend.claim(["default"], lease=LEASE, limit=1000)

    assert [claim.record.id for claim in claims] == kept


def test_the_oldest_finished_job_is_evicted_first() -> None:
    backend = MemoryBackend(result_ttl=3600, max_jobs=3)
    first, second = (backend.enqueue(make_record())[0] for _ in range(2))
    claims = backend.claim(["default"], lease=LEASE, limit=2)
    assert backend.finish(second.id, claims[1].token, DONE)  # finished first
    assert backend.finish(first.id, claims[0].token, DONE)
    pending, _ = backend.enqueue(make_record())

    backend.enqueue(make_record())

    assert backend.get(second.id) is None
    assert backend.get(first.id) is not None
    assert backend.get(pending.id) is not None
    assert len(backend) == 3

    backend.enqueue(make_record())

    assert backend.get(first.id) is None
    assert len(backend) == 3


def test_enqueue_refuses_when_max_jobs_unfinished_jobs_are_held() -> None:
    backend = MemoryBackend(result_ttl=3600, max_jobs=3)
    for _ in range(3):
        backend.enqueue(make_record())
    (running,) = backend.claim(["default"], lease=LEASE)
    refused = make_record()

    with pytest.raises(BackendUnavailable, match="JOBRUNNER_MAX_JOBS"):
        backend.enqueue(refused)

    assert backend.get(refused.id) is None
    assert len(backend) == 3
    assert backend.finish(running.record.id, running.token, DONE)
    accepted, created = backend.enqueue(refused)
    assert created is True
    assert backend.get(running.record.id) is None
    assert backend.get(accepted.id) is not None


def test_a_full_backend_still_answers_a_repeated_idempotency_key() -> None:
    backend = MemoryBackend(result_ttl=3600, max_jobs=2)
    first, _ = backend.enqueue(make_record(idempotency_key="alice:k"))
    backend.enqueue(make_record())

    again, created = backend.enqueue(make_record(idempotency_key="alice:k"))

    assert created is False
    assert again.id == first.id


def test_expired_jobs_are_purged_on_enqueue() -> None:
    backend = MemoryBackend(result_ttl=0.05, max_jobs=1000)
    old = run_one_job(backend, idempotency_key="alice:k")
    time.sleep(0.15)

    fresh, created = backend.enqueue(make_record(idempotency_key="alice:k"))

    assert created is True
    assert fresh.id != old.id
    assert backend.get(old.id) is None
    assert len(backend) == 1
    assert backend.purge_expired() == 0


def test_finished_jobs_within_the_ttl_are_not_purged_on_enqueue() -> None:
    backend = MemoryBackend(result_ttl=3600, max_jobs=1000)
    old = run_one_job(backend)

    backend.enqueue(make_record())

    assert backend.get(old.id) is not None


def test_interrupt_wakes_a_blocked_claim() -> None:
    backend = MemoryBackend()
    waiters = [Blocked(backend, ["default"], timeout=10) for _ in range(3)]
    time.sleep(0.2)  # let them block

    backend.interrupt()

    for waiter in waiters:
        waiter.join()
        assert waiter.claims == []
        assert waiter.elapsed is not None
        assert waiter.elapsed < 5


def test_an_earlier_interrupt_does_not_cut_a_later_claim_short() -> None:
    backend = MemoryBackend()
    backend.interrupt()

    start = time.monotonic()
    assert backend.claim(["default"], lease=LEASE, timeout=0.3) == []
    assert time.monotonic() - start >= 0.25


def test_from_url_takes_its_settings_and_ignores_others() -> None:
    backend = MemoryBackend.from_url("memory://", result_ttl=12.5, max_jobs=7, lease=30)

    assert backend.result_ttl == 12.5
    assert backend.max_jobs == 7
    assert backend.blocking is True
    assert backend.is_shared is False


def test_from_url_defaults() -> None:
    backend = MemoryBackend.from_url("memory://")

    assert backend.result_ttl == 86400
    assert backend.max_jobs == 10000


def test_the_default_wait_finished_returns_once_the_job_finishes() -> None:
    # Backend.wait_finished (polling get) is what backends without a
    # finish notification inherit; run it over this backend's get.
    backend = MemoryBackend()
    stored, _ = backend.enqueue(make_record())
    (claim,) = backend.claim(["default"], lease=LEASE)
    finisher = threading.Timer(0.2, backend.finish, args=(stored.id, claim.token, DONE))
    finisher.start()
    try:
        start = time.monotonic()
        record = Backend.wait_finished(backend, stored.id, timeout=10)
        elapsed = time.monotonic() - start
    finally:
        finisher.join(10)

    assert record is not None
    assert record.status is JobStatus.COMPLETED
    assert 0.15 <= elapsed < 5


def test_the_default_wait_finished_gives_up_after_its_timeout() -> None:
    backend = MemoryBackend()
    stored, _ = backend.enqueue(make_record())

    start = time.monotonic()
    record = Backend.wait_finished(backend, stored.id, timeout=0.3)

    assert 0.25 <= time.monotonic() - start < 5
    assert record is not None
    assert record.status is JobStatus.PENDING
    assert Backend.wait_finished(backend, new_job_id(), timeout=0.1) is None


def test_a_result_of_another_type_is_copied_too() -> None:
    backend = MemoryBackend()
    stored, _ = backend.enqueue(make_record())
    (claim,) = backend.claim(["default"], lease=LEASE)
    result = ([1], {"a": [2]})
    assert backend.finish(stored.id, claim.token, Outcome(JobStatus.COMPLETED, result=result))

    result[0].append("changed")
    first = backend.get(stored.id)
    assert first is not None
    first.result[1]["a"].append("changed")

    again = backend.get(stored.id)
    assert again is not None
    assert again.result == ([1], {"a": [2]})


def test_enqueue_many_refuses_a_batch_there_is_no_room_for_and_stores_none() -> None:
    backend = MemoryBackend(max_jobs=5)
    backend.enqueue_many([make_record() for _ in range(3)])
    refused = [make_record() for _ in range(3)]

    with pytest.raises(BackendUnavailable, match="cannot take 3 more jobs"):
        backend.enqueue_many(refused)

    assert len(backend) == 3
    assert all(backend.get(record.id) is None for record in refused)


def test_enqueue_many_evicts_finished_jobs_to_make_room() -> None:
    backend = MemoryBackend(max_jobs=3)
    finished = [run_one_job(backend) for _ in range(3)]

    backend.enqueue_many([make_record() for _ in range(2)])

    assert len(backend) == 3
    assert [backend.get(record.id) is None for record in finished] == [True, True, False]
