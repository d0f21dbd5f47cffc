"""What the Redis backend adds to the contract: keys, expiry, blocking, events, outages.

The tests run against the real server of the suite (``JOBRUNNER_TEST_REDIS_URL``),
each under a private key prefix; a few start their own ``redis-server`` on a
free port to take it down. Nothing on the shared server outside the prefix
is written, and nothing is flushed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import redis
from redis.client import PubSub

from cluster import wait_for
from conftest import SERVER_URLS, PrivateRedis, free_port, make_record, server_down, wait_until
from flask_jobrunner.backends import _redis_codec as codec
from flask_jobrunner.backends import load_backend
from flask_jobrunner.backends import redis as redis_backend
from flask_jobrunner.backends.redis import RedisBackend
from flask_jobrunner.errors import BackendUnavailable, JobConflict
from flask_jobrunner.record import (
    ErrorType,
    JobRecord,
    JobStatus,
    LeaseState,
    Outcome,
    Progress,
    new_job_id,
)

URL = SERVER_URLS["redis"]
LEASE = 60.0
DONE = Outcome(JobStatus.COMPLETED, result={"ok": True})
FAILED = Outcome(JobStatus.FAILED, error="Internal error: boom", error_type=ErrorType.SYSTEM)


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test uses."""
    return f"jrtest:{uuid.uuid4().hex}"


@pytest.fixture
def server() -> Iterator[redis.Redis]:
    """A plain client of the shared server, for looking at keys behind the backend."""
    client = redis.Redis.from_url(URL, decode_responses=True)
    try:
        client.ping()
    except redis.ConnectionError as error:
        server_down("redis", error)
    yield client
    client.close()


@pytest.fixture
def make_backend(server: redis.Redis, prefix: str) -> Iterator[Any]:
    """Builds backends on the shared server under the test's prefix; clears them after."""
    made: list[RedisBackend] = []

    def make(url: str = URL, **settings: Any) -> RedisBackend:
        backend = load_backend(url, redis_prefix=prefix, **settings)
        assert isinstance(backend, RedisBackend)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.interrupt()
    if made:
        made[0].clear()
    for backend in made:
        backend.close()


@pytest.fixture
def backend(make_backend: Any) -> RedisBackend:
    """A backend under the test's prefix, with the suite's one-hour result TTL."""
    backend: RedisBackend = make_backend(result_ttl=3600)
    return backend


def enqueue(backend: RedisBackend, **fields: Any) -> JobRecord:
    stored, created = backend.enqueue(make_record(**fields))
    assert created
    return stored


def keys_with(server: redis.Redis, marker: str) -> set[str]:
    return set(server.scan_iter(match=f"*{marker}*", count=1000))


def blocked(server: redis.Redis, client_name: str) -> int:
    """How many connections named *client_name* are blocked in ``BLPOP`` now."""
    return sum(
        1
        for client in server.client_list()
        if client.get("name") == client_name and client.get("cmd") == "blpop"
    )


class InThread:
    """*function* in a thread, timed; :meth:`join` is bounded and re-raises."""

    def __init__(self, function: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.returned_at = float("inf")
        self._function = function
        self._thread = threading.Thread(target=self._run, name="redis-test-helper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.result = self._function()
        except BaseException as error:  # re-raised by join()
            self.error = error
        finally:
            self.returned_at = time.monotonic()

    def join(self, timeout: float = 30) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"still running after {timeout} s"
        if self.error is not None:
            raise self.error
        return self.result


# -- keys ----------------------------------------------------------------------


def test_every_key_starts_with_the_prefix(
    backend: RedisBackend, server: redis.Redis, prefix: str
) -> None:
    marker = prefix.split(":")[1]
    job = enqueue(
        backend,
        task=f"tasks.{marker}",
        queue=f"q-{marker}",
        created_by=f"user-{marker}",
        unique_key=f"unique-{marker}",
        idempotency_key=f"user-{marker}:key",
    )
    retried = enqueue(backend, queue=f"q-{marker}")
    claims = backend.claim([f"q-{marker}"], lease=LEASE, limit=2)
    tokens = {claim.record.id: claim.token for claim in claims}
    backend.progress(job.id, tokens[job.id], Progress(50.0, "half"), lease=LEASE)
    assert backend.finish(job.id, tokens[job.id], DONE)
    later = backend.now() + timedelta(hours=1)
    assert backend.retry_later(retried.id, tokens[retried.id], later, FAILED)
    backend.request_cancel(enqueue(backend, queue=f"q-{marker}").id)
    waiter = InThread(lambda: backend.claim([f"q-{marker}"], lease=LEASE, timeout=10))
    wait_until(lambda: backend._waiting)
    backend.interrupt()
    assert waiter.join() == []

    found = keys_with(server, marker) | keys_with(server, job.id)
    assert found, "the jobs left no keys"
    assert all(key.startswith(f"{prefix}:") for key in found), found
    assert f"{prefix}:job:{job.id}" in found
    assert f"{prefix}:unique:unique-{marker}" not in found, "a finished job freed its unique key"
    assert f"{prefix}:idempotency:user-{marker}:key" in found

    backend.clear()

    assert keys_with(server, marker) == set()
    assert keys_with(server, job.id) == set()
    assert list(server.scan_iter(match=f"{prefix}:*", count=1000)) == []


def test_clear_leaves_other_prefixes_alone(make_backend: Any, server: redis.Redis) -> None:
    mine = make_backend()
    neighbour = load_backend(URL, redis_prefix=f"jrtest:{uuid.uuid4().hex}")
    try:
        job = enqueue(mine)
        theirs = enqueue(neighbour)

        neighbour.clear()

        assert mine.get(job.id) is not None
        assert neighbour.get(theirs.id) is None
    finally:
        neighbour.clear()
        neighbour.close()


def test_from_url_reads_its_settings_and_ignores_the_others(
    server: redis.Redis, prefix: str
) -> None:
    backend = load_backend(
        f"{URL}?socket_timeout=7",
        result_ttl=12.5,
        redis_prefix=prefix,
        max_jobs=3,
        lease=30,
        create_tables=True,
        app=object(),
    )
    try:
        assert isinstance(backend, RedisBackend)
        assert backend.prefix == prefix
        assert backend.result_ttl == 12.5
        assert backend.blocking is True
        assert backend.is_shared is True
        assert backend.client.connection_pool.connection_kwargs["socket_timeout"] == 7
        for _ in range(5):  # max_jobs means nothing to Redis
            enqueue(backend)
        assert backend.counts()[JobStatus.PENDING] == 5
    finally:
        backend.clear()
        backend.close()


def test_a_client_given_to_the_constructor_is_used_and_left_open(
    server: redis.Redis, prefix: str
) -> None:
    # Without decode_responses every reply is bytes: the backend takes both.
    client = redis.Redis.from_url(URL)
    backend = RedisBackend(client, result_ttl=60, prefix=prefix)
    try:
        job = enqueue(backend, created_by="alice", idempotency_key="alice:k")
        assert backend.enqueue(make_record(idempotency_key="alice:k"))[0].id == job.id
        claim = backend.claim(["default"], lease=LEASE)[0]
        assert backend.heartbeat(job.id, claim.token, lease=LEASE) is LeaseState.HELD
        assert backend.finish(job.id, claim.token, DONE)
        assert backend.list_jobs(created_by="alice")[0][0].status is JobStatus.COMPLETED
        assert backend.counts()[JobStatus.COMPLETED] == 1
        waiter = InThread(lambda: backend.claim(["default"], lease=LEASE, timeout=10))
        wait_until(lambda: backend._waiting)
        backend.interrupt()
        assert waiter.join() == []

        backend.close()

        assert client.ping()
    finally:
        backend.clear()
        client.close()


# -- stored form ---------------------------------------------------------------


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1970, 1, 1, tzinfo=timezone.utc),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc),
        datetime(2000, 2, 29, 12, 0, 0, 1, tzinfo=timezone.utc),
        datetime(2024, 3, 1, 0, 0, tzinfo=timezone.utc),
        datetime(2100, 2, 28, 23, 59, 59, tzinfo=timezone.utc),
        datetime(2100, 3, 1, tzinfo=timezone.utc),
        datetime(2038, 1, 19, 3, 14, 8, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(1969, 7, 20, 20, 17, 40, 123456, tzinfo=timezone.utc),
    ],
)
def test_times_written_by_the_scripts_read_back_exactly(
    backend: RedisBackend, moment: datetime
) -> None:
    # The scripts format times themselves; every calendar corner must survive.
    record = make_record(created_at=moment, run_at=moment, started_at=moment, updated_at=moment)

    backend.enqueue(record)

    stored = backend.get(record.id)
    assert stored is not None
    assert stored == record
    assert (stored.run_at, stored.started_at, stored.updated_at) == (moment, moment, moment)


def test_a_record_with_every_field_set_is_stored_as_it_is(backend: RedisBackend) -> None:
    moment = backend.now() - timedelta(minutes=5)
    record = make_record(
        task="tasks.full",
        queue="full",
        args=[1],
        kwargs={"a": 1},
        started_at=moment,
        updated_at=moment,
        finished_at=moment,
        percentage=12.5,
        message="busy",
        items_processed=1,
        total_items=8,
        result={"partial": True},
        error="Internal error: earlier",
        error_type=ErrorType.SYSTEM,
        error_details="RuntimeError",
        attempts=2,
        max_retries=3,
        recoveries=1,
        timeout=9.5,
        created_by="alice",
        unique_key="tasks.full",
        idempotency_key="alice:full",
        cancel_requested=True,
        token="a-token",
        lease_expires_at=moment,
    )

    stored, created = backend.enqueue(record)

    assert created is True
    assert stored == backend.get(record.id) == record


def test_the_quick_record_builders_set_every_field() -> None:
    # They name each field rather than walk the dataclass: a new one must be added there.
    assert {field.name for field in dataclasses.fields(JobRecord)} == codec.BUILT_FIELDS


def test_a_job_stored_before_a_field_existed_still_loads(
    backend: RedisBackend, server: redis.Redis, prefix: str
) -> None:
    job = enqueue(backend, max_retries=2)
    key = f"{prefix}:job:{job.id}"
    doc = json.loads(server.hget(key, "doc") or "")
    del doc["max_retries"]
    server.hset(key, "doc", json.dumps(doc))

    stored = backend.get(job.id)
    claim = backend.claim(["default"], lease=LEASE)[0]

    assert stored is not None
    assert stored.max_retries == claim.record.max_retries == 0  # the default
    assert stored.id == claim.record.id == job.id


def test_times_of_different_days_in_one_script_read_back_exactly(backend: RedisBackend) -> None:
    # A script keeps the text of the moments and the date of the day it formatted
    # last: a listing renders many jobs in one run, back and forth between days.
    day = datetime(2024, 2, 28, 23, 59, 59, 999999, tzinfo=timezone.utc)
    moments = [day, day + timedelta(microseconds=1), day, day + timedelta(days=400), day]
    records = [
        make_record(
            started_at=moment,
            updated_at=moment + timedelta(days=n),
            finished_at=day,
            lease_expires_at=moment - timedelta(days=n),
        )
        for n, moment in enumerate(moments)
    ]
    for record in records:
        backend.enqueue(record)

    page, _ = backend.list_jobs(limit=10)

    assert sorted(page, key=lambda record: record.id) == sorted(records, key=lambda r: r.id)


def test_a_finish_clears_the_error_of_a_try_and_keeps_progress_it_leaves_out(
    backend: RedisBackend,
) -> None:
    # A finish sends only the fields it sets: the rest of the outcome is cleared,
    # the rest of the progress kept.
    job = enqueue(backend, max_retries=1)
    claim = backend.claim(["default"], lease=LEASE)[0]
    backend.progress(job.id, claim.token, Progress(50.0, "half", 1, 4), lease=LEASE)
    failed = Outcome(
        JobStatus.FAILED,
        error="Internal error: boom",
        error_type=ErrorType.SYSTEM,
        error_details="RuntimeError",
        result={"partial": True},
    )
    assert backend.retry_later(job.id, claim.token, backend.now(), failed)
    claim = backend.claim(["default"], lease=LEASE)[0]

    done = Outcome(JobStatus.COMPLETED, result=0, progress=Progress(items_processed=4))
    assert backend.finish_many([(job.id, claim.token, done)]) == [True]

    stored = backend.get(job.id)
    assert stored is not None
    assert (stored.status, stored.result) == (JobStatus.COMPLETED, 0)
    assert (stored.error, stored.error_type, stored.error_details) == (None, None, None)
    assert (stored.percentage, stored.message, stored.items_processed, stored.total_items) == (
        50.0,
        "half",
        4,
        4,
    )


def test_json_survives_the_scripts_untouched(backend: RedisBackend) -> None:
    # Lua's cjson would turn [] into {} and round big numbers: none of it may happen.
    awkward = {
        "empty_list": [],
        "empty_object": {},
        "big": 2**63 + 1,
        "float": 0.1 + 0.2,
        "tiny": 5e-324,
        "text": 'Zoë ✓ "quoted" \\ \u0000 \U0001f600',
        "nested": [[], [{}], None, True, False],
    }
    job = enqueue(backend, args=[[], {}], kwargs=awkward)
    claim = backend.claim(["default"], lease=LEASE)[0]
    message = "50 % — done?"
    backend.progress(job.id, claim.token, Progress(100 / 3, message, 2**53 + 1, 3), lease=LEASE)

    assert backend.finish(job.id, claim.token, Outcome(JobStatus.COMPLETED, result=awkward))

    stored = backend.get(job.id)
    assert stored is not None
    assert stored.args == [[], {}]
    assert stored.kwargs == awkward
    assert stored.result == awkward
    assert (stored.percentage, stored.message, stored.items_processed) == (
        100 / 3,
        message,
        2**53 + 1,
    )


def test_a_lone_surrogate_in_the_arguments_is_stored(backend: RedisBackend) -> None:
    job = enqueue(backend, args=["\ud800"])
    stored = backend.get(job.id)
    assert stored is not None
    assert stored.args == ["\ud800"]


# -- expiry --------------------------------------------------------------------


def test_a_finished_job_carries_the_result_ttl(
    make_backend: Any, server: redis.Redis, prefix: str
) -> None:
    backend = make_backend(result_ttl=30)
    job = enqueue(backend, unique_key="sync", idempotency_key="alice:k")
    claim = backend.claim(["default"], lease=LEASE)[0]
    assert server.pttl(f"{prefix}:job:{job.id}") == -1, "a running job never expires"

    assert backend.finish(job.id, claim.token, DONE)

    for key in (f"{prefix}:job:{job.id}", f"{prefix}:idempotency:alice:k"):
        assert 28_000 < server.pttl(key) <= 30_000, key
    assert not server.exists(f"{prefix}:unique:sync")


def test_an_expired_job_leaves_no_ghost_in_listings_or_counts(
    make_backend: Any, server: redis.Redis, prefix: str
) -> None:
    backend = make_backend(result_ttl=1.0)
    gone = enqueue(backend, task="tasks.a", created_by="alice")
    kept = enqueue(backend, task="tasks.a", created_by="alice")
    claim = backend.claim(["default"], lease=LEASE)[0]
    assert claim.record.id == gone.id
    assert backend.finish(gone.id, claim.token, DONE)
    assert 0 < server.pttl(f"{prefix}:job:{gone.id}") <= 1000
    assert backend.counts()[JobStatus.COMPLETED] == 1

    # Redis drops the key by itself; nobody purges.
    wait_until(lambda: not server.exists(f"{prefix}:job:{gone.id}"), timeout=5)

    assert backend.get(gone.id) is None
    assert backend.counts() == {**dict.fromkeys(JobStatus, 0), JobStatus.PENDING: 1}
    for filters in (
        {},
        {"task": "tasks.a"},
        {"created_by": "alice"},
        {"status": JobStatus.COMPLETED},
        {"task": "tasks.a", "created_by": "alice", "status": JobStatus.COMPLETED},
    ):
        page, cursor = backend.list_jobs(**filters)
        expected = [] if "status" in filters else [kept.id]
        assert ([record.id for record in page], cursor) == (expected, None), filters

    assert backend.purge_expired() == 1
    assert backend.purge_expired() == 0
    for index in ("jobs", "task:tasks.a", "user:alice", "status:completed", "expires:completed"):
        members = server.zrange(f"{prefix}:{index}", 0, -1)
        assert all(gone.id not in member for member in members), index


def test_a_cursor_page_skips_expired_jobs_and_stays_full(
    make_backend: Any, server: redis.Redis, prefix: str
) -> None:
    backend = make_backend(result_ttl=0.2)
    base = backend.now() - timedelta(seconds=10)
    jobs = [enqueue(backend, created_at=base + timedelta(milliseconds=i)) for i in range(9)]
    for claim in backend.claim(["default"], lease=LEASE, limit=3):  # the three oldest
        assert backend.finish(claim.record.id, claim.token, DONE)
    wait_until(lambda: backend.counts()[JobStatus.COMPLETED] == 0, timeout=5)

    first, cursor = backend.list_jobs(limit=4)
    rest, end = backend.list_jobs(limit=4, cursor=cursor)

    assert [record.id for record in first + rest] == [job.id for job in reversed(jobs[3:])]
    assert [len(first), len(rest), end] == [4, 2, None]


# -- blocking and wake-up ------------------------------------------------------

#: A child process: claims once with a timeout, then prints what it got and when.
CLAIMER = """
import json, sys, time
from flask_jobrunner.backends import load_backend
url, prefix, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
backend = load_backend(url, redis_prefix=prefix)
claims = backend.claim(["default"], lease=60, timeout=timeout)
print(json.dumps({"ids": [claim.record.id for claim in claims], "at": time.time()}))
backend.close()
"""


def test_an_idle_claim_in_another_process_wakes_on_enqueue(
    backend: RedisBackend, server: redis.Redis, prefix: str
) -> None:
    name = f"jrtest-{uuid.uuid4().hex[:12]}"
    child = subprocess.Popen(
        [sys.executable, "-c", CLAIMER, f"{URL}?client_name={name}", prefix, "20"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        # Blocked in BLPOP, not sleeping between polls.
        wait_until(lambda: blocked(server, name) == 1, timeout=20)
        job = enqueue(backend)
        enqueued_at = time.time()
        out, _ = child.communicate(timeout=20)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 0
    answer = json.loads(out)
    assert answer["ids"] == [job.id]
    assert answer["at"] - enqueued_at < 1.0


def test_every_waiting_claimer_on_a_queue_gets_a_job(backend: RedisBackend) -> None:
    waiters = [
        InThread(lambda: backend.claim(["default"], lease=LEASE, timeout=10)) for _ in range(3)
    ]
    wait_until(lambda: len(backend._waiting) == 3, timeout=5)
    start = time.monotonic()
    jobs = {enqueue(backend).id for _ in range(3)}

    results = [waiter.join() for waiter in waiters]

    assert sorted(len(claims) for claims in results) == [1, 1, 1]
    assert {claims[0].record.id for claims in results} == jobs
    assert max(waiter.returned_at for waiter in waiters) - start < 3


def test_a_claimer_passes_on_a_wake_up_it_could_not_use_alone(
    backend: RedisBackend, server: redis.Redis
) -> None:
    # One script gives back two jobs, so one marker wakes one claimer: that one
    # takes a job and must wake the next, long before its own wait would end.
    lost = [enqueue(backend), enqueue(backend)]
    for claim in backend.claim(["default"], lease=0.2, limit=2):
        assert claim.record.id in {job.id for job in lost}
    name = f"jrtest-{uuid.uuid4().hex[:12]}"
    waiters = []
    for _ in range(2):
        other = load_backend(
            f"{URL}?socket_timeout=60&client_name={name}", redis_prefix=backend.prefix
        )
        assert isinstance(other, RedisBackend)
        other._max_block = 30  # one BLPOP for the whole wait: no second chance
        waiters.append(
            (other, InThread(lambda other=other: other.claim(["default"], lease=LEASE, timeout=20)))
        )
    try:
        wait_until(lambda: blocked(server, name) == 2, timeout=5)
        recovered = wait_until(lambda: backend.recover_expired(max_recoveries=3), timeout=5)
        start = time.monotonic()
        assert len(recovered) == 2

        results = [waiter.join() for _, waiter in waiters]

        assert sorted(claim.record.id for claims in results for claim in claims) == sorted(
            job.id for job in lost
        )
        assert max(waiter.returned_at for _, waiter in waiters) - start < 5
    finally:
        for other, waiter in waiters:
            other.interrupt()
            waiter.join()
            other.close()


def test_the_wake_up_list_of_a_queue_holds_one_marker(
    backend: RedisBackend, server: redis.Redis, prefix: str
) -> None:
    for _ in range(20):
        enqueue(backend)
    assert server.llen(f"{prefix}:notify:default") == 1


def test_interrupt_wakes_every_blocked_claim_at_once(backend: RedisBackend) -> None:
    waiters = [
        InThread(lambda queue=queue: backend.claim([queue], lease=LEASE, timeout=30))
        for queue in ("a", "b", "a")
    ]
    wait_until(lambda: len(backend._waiting) == 3, timeout=5)
    start = time.monotonic()

    backend.interrupt()

    assert [waiter.join(timeout=5) for waiter in waiters] == [[], [], []]
    assert max(waiter.returned_at for waiter in waiters) - start < 1
    # A claim after the interrupt waits again, as the worker's next round would.
    start = time.monotonic()
    assert backend.claim(["a"], lease=LEASE, timeout=0.3) == []
    assert time.monotonic() - start >= 0.25


def test_a_waiting_claim_right_after_a_drained_one_waits_at_once(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last claim found the queue empty: the next one that may wait skips its
    # first look and waits, and a job enqueued meanwhile still reaches it.
    monkeypatch.setattr(redis_backend, "_DRAINED_FOR", 60.0)  # however slow the machine
    assert backend.claim(["default"], lease=LEASE) == []
    scripts: list[Any] = []
    run = backend._run
    monkeypatch.setattr(
        backend, "_run", lambda script, *args: scripts.append(script) or run(script, *args)
    )
    job = enqueue(backend)

    claims = backend.claim(["default"], lease=LEASE, timeout=5)

    assert [claim.record.id for claim in claims] == [job.id]
    assert backend._claim not in scripts  # the claim behind the BLPOP took it
    # A claim that may not wait always looks.
    assert backend.claim(["default"], lease=LEASE) == []
    assert scripts.count(backend._claim) == 1


def test_a_claim_that_skips_its_first_look_still_wakes_for_a_scheduled_job(
    backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_backend, "_DRAINED_FOR", 60.0)
    job = enqueue(backend, run_at=backend.now() + timedelta(seconds=0.3))
    assert backend.claim(["default"], lease=LEASE) == []  # learns when it is due
    backend._max_block = 30  # the BLPOP alone would not end in time
    start = time.monotonic()

    claims = backend.claim(["default"], lease=LEASE, timeout=10)

    assert [claim.record.id for claim in claims] == [job.id]
    assert time.monotonic() - start < 3


def test_a_claim_stopped_by_an_interrupt_leaves_the_wake_up_it_took(
    backend: RedisBackend, server: redis.Redis, prefix: str
) -> None:
    # interrupt() pushes two markers on the claim's own list; if its BLPOP takes the
    # queue's marker instead, the claim behind it takes nothing and puts it back.
    enqueue(backend)
    notify, wake = f"{prefix}:notify:default", f"{prefix}:wake:{uuid.uuid4().hex}"
    server.lpush(wake, "1", "1")
    args: list[str | int] = [round(LEASE * 1_000_000), 1, uuid.uuid4().hex, "default", wake]

    woken, reply = backend._block_then_claim([notify, wake], 1.0, [f"{prefix}:queue:default"], args)

    assert woken[0] == notify
    assert reply == [-1]
    assert server.llen(notify) == 1
    assert len(backend.claim(["default"], lease=LEASE)) == 1


# -- events --------------------------------------------------------------------


def next_events(pubsub: PubSub, count: int) -> list[dict[str, Any]]:
    """The next *count* events *pubsub* receives, decoded, each within 10 s."""
    return [
        json.loads(wait_for(lambda: pubsub.get_message(timeout=0.5), "an event", 10)["data"])
        for _ in range(count)
    ]


def test_every_transition_is_published_on_the_jobs_channel(
    backend: RedisBackend, server: redis.Redis, prefix: str
) -> None:
    record = make_record()
    pubsub = server.pubsub()
    pubsub.subscribe(f"{prefix}:events:{record.id}")
    try:
        confirmed = wait_for(lambda: pubsub.get_message(timeout=0.5), "the subscription", 10)
        assert confirmed["type"] == "subscribe"
        backend.enqueue(record)
        claim = backend.claim(["default"], lease=0.05)[0]
        backend.progress(record.id, claim.token, Progress(10.0, "started"), lease=0.05)
        wait_until(lambda: backend.recover_expired(max_recoveries=3), timeout=5)
        claim = backend.claim(["default"], lease=LEASE)[0]
        assert backend.release(record.id, claim.token)
        claim = backend.claim(["default"], lease=LEASE)[0]
        assert backend.retry_later(record.id, claim.token, backend.now(), FAILED)
        claim = wait_until(lambda: backend.claim(["default"], lease=LEASE))[0]
        backend.heartbeat(record.id, claim.token, lease=LEASE)  # not a change anyone sees
        backend.request_cancel(record.id)
        assert backend.finish(record.id, claim.token, Outcome(JobStatus.CANCELLED))

        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while len(events) < 11 and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=0.5)
            if message is not None:
                events.append(json.loads(message["data"]))
    finally:
        pubsub.close()

    assert [(event["status"], event["attempts"]) for event in events] == [
        ("pending", 0),  # enqueue
        ("in_progress", 1),  # claim
        ("in_progress", 1),  # progress
        ("pending", 1),  # recovered
        ("in_progress", 2),
        ("pending", 1),  # released: the attempt does not count
        ("in_progress", 2),
        ("pending", 2),  # retry later
        ("in_progress", 3),
        ("in_progress", 3),  # cancel requested
        ("cancelled", 3),  # finish
    ]
    assert all("token" not in event for event in events)
    assert events[2]["message"] == "started"
    assert events[3]["recoveries"] == 1
    assert events[7]["error"] == "Internal error: boom"
    assert events[9]["cancel_requested"] is True
    last = JobRecord.from_dict(events[-1])
    assert last == backend.get(record.id)


def test_a_claim_and_a_finish_publish_to_a_pattern_subscriber_too(
    backend: RedisBackend, server: redis.Redis, prefix: str
) -> None:
    # They render an event only where someone listens: a pattern counts for every job.
    jobs = [enqueue(backend), enqueue(backend)]
    pubsub = server.pubsub()
    pubsub.psubscribe(f"{prefix}:events:*")
    try:
        wait_for(lambda: pubsub.get_message(timeout=0.5), "the subscription", 10)
        claims = backend.claim(["default"], lease=LEASE, limit=2)
        assert backend.finish_many([(c.record.id, c.token, DONE) for c in claims]) == [True] * 2
        published = next_events(pubsub, 4)
    finally:
        pubsub.close()

    ids = [job.id for job in jobs]
    assert [(event["id"], event["status"]) for event in published] == [
        *((job_id, "in_progress") for job_id in ids),
        *((job_id, "completed") for job_id in ids),
    ]
    for claim, event in zip(claims, published[:2], strict=True):
        assert JobRecord.from_dict(event) == dataclasses.replace(claim.record, token=None)
    for event in published[2:]:
        assert JobRecord.from_dict(event) == backend.get(event["id"])


def test_a_finish_nobody_hears_stores_what_a_heard_one_stores(
    backend: RedisBackend, server: redis.Redis, prefix: str
) -> None:
    # A finish renders nothing for a job nobody listens to and reads only a few of
    # its fields: it must still clear the lease, the token and the last try's error.
    jobs = [enqueue(backend, max_retries=1), enqueue(backend, max_retries=1)]
    for _ in jobs:
        claim = backend.claim(["default"], lease=LEASE)[0]
        backend.progress(claim.record.id, claim.token, Progress(50.0, "half"), lease=LEASE)
        assert backend.retry_later(claim.record.id, claim.token, backend.now(), FAILED)
    heard = jobs[0].id
    pubsub = server.pubsub()
    pubsub.subscribe(f"{prefix}:events:{heard}")
    try:
        wait_for(lambda: pubsub.get_message(timeout=0.5), "the subscription", 10)
        claims = wait_until(lambda: backend.claim(["default"], lease=LEASE, limit=2))
        assert len(claims) == 2
        outcome = Outcome(JobStatus.COMPLETED, result=[1], progress=Progress(100.0))
        assert backend.finish_many([(c.record.id, c.token, outcome) for c in claims]) == [True] * 2
        events = next_events(pubsub, 2)
    finally:
        pubsub.close()

    stored = {job.id: backend.get(job.id) for job in jobs}
    assert [event["status"] for event in events] == ["in_progress", "completed"]
    assert JobRecord.from_dict(events[1]) == stored[heard]
    first, second = (dataclasses.asdict(stored[job.id]) for job in jobs)
    for record in (first, second):
        assert (record["status"], record["result"], record["attempts"]) == (
            JobStatus.COMPLETED,
            [1],
            2,
        )
        assert record["error"] is record["error_type"] is record["token"] is None
        assert record["lease_expires_at"] is None
        assert (record["percentage"], record["message"]) == (100.0, "half")
    for name in ("id", "created_at", "started_at", "updated_at", "finished_at", "run_at"):
        first.pop(name), second.pop(name)
    assert first == second


def test_wait_finished_listens_on_the_jobs_channel(
    backend: RedisBackend, server: redis.Redis, prefix: str
) -> None:
    job = enqueue(backend)
    claim = backend.claim(["default"], lease=LEASE)[0]
    channel = f"{prefix}:events:{job.id}"
    waiter = InThread(lambda: backend.wait_finished(job.id, timeout=20))
    wait_until(lambda: server.pubsub_numsub(channel) == [(channel, 1)], timeout=5)
    finished_at = time.monotonic()

    assert backend.finish(job.id, claim.token, DONE)

    record = waiter.join()
    assert record is not None
    assert record.status is JobStatus.COMPLETED
    assert record.result == {"ok": True}
    assert waiter.returned_at - finished_at < 1
    assert server.pubsub_numsub(channel) == [(channel, 0)]


# -- several processes ---------------------------------------------------------

#: A child process: claims and finishes jobs until none are left, printing their ids.
DRAINER = """
import json, sys
from flask_jobrunner.backends import load_backend
from flask_jobrunner.record import JobStatus, Outcome
url, prefix, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
backend = load_backend(url, redis_prefix=prefix)
taken = []
while claims := backend.claim(["default"], lease=60, limit=limit, timeout=0.5):
    for claim in claims:
        taken.append(claim.record.id)
        assert backend.finish(claim.record.id, claim.token, Outcome(JobStatus.COMPLETED))
print(json.dumps(taken))
backend.close()
"""


def test_claims_from_several_processes_never_share_a_job(
    backend: RedisBackend, prefix: str
) -> None:
    jobs = {enqueue(backend).id for _ in range(600)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", DRAINER, URL, prefix, str(limit)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for limit in (1, 2, 3, 5)
    ]
    try:
        outputs = [child.communicate(timeout=60)[0] for child in children]
    finally:
        for child in children:
            child.kill()
            child.wait()

    assert [child.returncode for child in children] == [0, 0, 0, 0]
    taken = [job_id for out in outputs for job_id in json.loads(out)]
    assert len(taken) == len(set(taken)), "a job was claimed twice"
    assert set(taken) == jobs
    assert backend.counts()[JobStatus.COMPLETED] == 600


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_gets_its_own_connections(backend: RedisBackend) -> None:
    parent_job = enqueue(backend)  # the pool now holds a connection
    child_record = make_record()
    pid = os.fork()
    if pid == 0:  # the child: must not talk over the parent's socket
        code = 1
        try:
            backend.enqueue(child_record)
            code = 0 if backend.get(parent_job.id) is not None else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert backend.get(child_record.id) is not None
    assert [record.id for record in backend.list_jobs()[0]] == [child_record.id, parent_job.id]


# -- outages -------------------------------------------------------------------


def test_an_unreachable_server_raises_backend_unavailable_promptly() -> None:
    port = free_port()
    backend = load_backend(f"redis://:secret@127.0.0.1:{port}/0", redis_prefix="jrtest:nothing")
    job_id = new_job_id()
    calls = {
        "now": backend.now,
        "enqueue": lambda: backend.enqueue(make_record()),
        "claim": lambda: backend.claim(["default"], lease=LEASE, timeout=5),
        "heartbeat": lambda: backend.heartbeat(job_id, "t", lease=LEASE),
        "progress": lambda: backend.progress(job_id, "t", Progress(1.0), lease=LEASE),
        "finish": lambda: backend.finish(job_id, "t", DONE),
        "retry_later": lambda: backend.retry_later(job_id, "t", datetime.now(timezone.utc), FAILED),
        "release": lambda: backend.release(job_id, "t"),
        "request_cancel": lambda: backend.request_cancel(job_id),
        "get": lambda: backend.get(job_id),
        "list_jobs": backend.list_jobs,
        "purge_expired": backend.purge_expired,
        "recover_expired": lambda: backend.recover_expired(max_recoveries=3),
        "counts": backend.counts,
        "clear": backend.clear,
        "wait_finished": lambda: backend.wait_finished(job_id, timeout=5),
    }
    try:
        for name, call in calls.items():
            start = time.monotonic()
            with pytest.raises(BackendUnavailable) as caught:
                call()
            assert time.monotonic() - start < 2, name
            assert f"127.0.0.1:{port}" in caught.value.message, name
            assert "secret" not in caught.value.message
        backend.interrupt()  # the worker calls it at shutdown, whatever the server's state
    finally:
        backend.close()


def test_the_same_instance_works_again_after_the_server_comes_back(
    private_redis: PrivateRedis,
) -> None:
    backend = load_backend(private_redis.url, redis_prefix="jrtest:outage")
    try:
        before = enqueue(backend)
        waiter = InThread(lambda: backend.claim(["nothing"], lease=LEASE, timeout=30))
        wait_until(lambda: backend._waiting, timeout=5)

        private_redis.stop()

        with pytest.raises(BackendUnavailable):
            waiter.join(timeout=10)
        with pytest.raises(BackendUnavailable):
            backend.get(before.id)

        private_redis.start()  # empty: it kept nothing on disk

        after = enqueue(backend)
        claim = backend.claim(["default"], lease=LEASE, timeout=5)[0]
        assert claim.record.id == after.id
        assert backend.finish(after.id, claim.token, DONE)
        assert backend.get(before.id) is None
    finally:
        backend.close()


def test_a_unique_conflict_names_the_holder(backend: RedisBackend) -> None:
    holder = enqueue(backend, task="tasks.sync", unique_key="tasks.sync")
    with pytest.raises(JobConflict, match=holder.id) as caught:
        backend.enqueue(make_record(task="tasks.sync", unique_key="tasks.sync"))
    assert caught.value.existing == holder
    assert "'tasks.sync'" in caught.value.message


def test_an_enqueue_replayed_after_a_lost_answer_stores_nothing_twice(
    backend: RedisBackend,
) -> None:
    # redis-py retries once on a dropped connection; the script may have run.
    record = make_record(unique_key="tasks.sync", idempotency_key="alice:k")
    first, _ = backend.enqueue(record)

    again, created = backend.enqueue(record)

    assert created is True
    assert again == first
    assert backend.counts()[JobStatus.PENDING] == 1
    assert len(backend.claim(["default"], lease=LEASE, limit=5)) == 1


# -- bulk enqueue, batched finishes, reused subscriptions ----------------------


def test_enqueue_many_is_one_round_trip_and_publishes_each_job(
    private_redis: PrivateRedis,
) -> None:
    backend = load_backend(private_redis.url, redis_prefix="jrtest:bulk")
    server = redis.Redis.from_url(private_redis.url, decode_responses=True)
    records = [make_record() for _ in range(3)]
    channels = [f"jrtest:bulk:events:{record.id}" for record in records]
    try:
        backend.enqueue_many([make_record()])  # loads the script
        with server.pubsub() as pubsub:  # type: ignore[no-untyped-call]
            pubsub.subscribe(*channels)
            wait_until(lambda: server.pubsub_numsub(channels[2]) == [(channels[2], 1)], timeout=5)
            server.config_resetstat()

            backend.enqueue_many(records)

            stats = server.info("commandstats")
            published: list[dict[str, Any]] = []
            deadline = time.monotonic() + 5
            while len(published) < 3 and time.monotonic() < deadline:
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if message is not None:
                    published.append(json.loads(message["data"]))
        # This server is the test's own: every script it ran is the backend's.
        assert stats["cmdstat_evalsha"]["calls"] == 1
        assert stats["cmdstat_hset"]["calls"] == 3
        assert sorted(event["id"] for event in published) == sorted(r.id for r in records)
        assert {event["status"] for event in published} == {"pending"}
    finally:
        backend.close()
        server.close()


def test_sequential_waits_reuse_their_subscriber_connections(
    backend: RedisBackend, server: redis.Redis, prefix: str
) -> None:
    def subscribers() -> int:
        return sum(1 for client in server.client_list() if int(client.get("sub", 0)) > 0)

    before = subscribers()
    for _ in range(20):
        job = enqueue(backend)
        claim = backend.claim(["default"], lease=LEASE)[0]
        finisher = threading.Timer(0.01, backend.finish, (job.id, claim.token, DONE))
        finisher.start()
        record = backend.wait_finished(job.id, timeout=10)
        finisher.join()
        assert record is not None
        assert record.status is JobStatus.COMPLETED
        # The same job again: the subscriber left from the last wait serves it.
        again = backend.wait_finished(job.id, timeout=10)
        assert again is not None
        assert again.status is JobStatus.COMPLETED
    assert subscribers() - before <= 1


def test_a_wait_on_a_reused_subscriber_is_woken_by_the_finish(backend: RedisBackend) -> None:
    first = enqueue(backend)
    claim = backend.claim(["default"], lease=LEASE)[0]
    assert backend.finish(first.id, claim.token, DONE)
    assert backend.wait_finished(first.id, timeout=5) is not None  # leaves a subscriber behind

    job = enqueue(backend)
    claim = backend.claim(["default"], lease=LEASE)[0]
    waiter = InThread(lambda: backend.wait_finished(job.id, timeout=20))
    time.sleep(0.2)
    finished_at = time.monotonic()
    assert backend.finish(job.id, claim.token, DONE)

    record = waiter.join()
    assert record is not None
    assert record.status is JobStatus.COMPLETED
    assert waiter.returned_at - finished_at < 1.5


def test_finish_many_writes_every_final_state_in_one_script_call(backend: RedisBackend) -> None:
    for _ in range(4):
        enqueue(backend)
    claims = backend.claim(["default"], lease=LEASE, limit=4)

    answers = backend.finish_many([(c.record.id, c.token, DONE) for c in claims])

    assert answers == [True] * 4
    assert backend.counts()[JobStatus.COMPLETED] == 4
    with pytest.raises(ValueError, match="needs a final status"):
        backend.finish_many([(claims[0].record.id, claims[0].token, Outcome(JobStatus.PENDING))])


# -- the quick paths: plain enqueue, get without a script, claim behind the wait --


def test_a_plain_enqueue_stores_and_publishes_what_a_checked_one_does(
    backend: RedisBackend, server: redis.Redis, prefix: str
) -> None:
    # No unique or idempotency key takes the short script; a key takes the full one.
    plain = make_record(task="tests.same", created_by="alice", kwargs={"n": [1.5, []]})
    checked = make_record(
        task="tests.same", created_by="alice", kwargs={"n": [1.5, []]}, idempotency_key="a:k"
    )
    pubsub = server.pubsub()
    pubsub.subscribe(*(f"{prefix}:events:{record.id}" for record in (plain, checked)))
    try:
        for _ in range(2):
            wait_for(lambda: pubsub.get_message(timeout=0.5), "the subscription", 10)
        backend.enqueue(plain)
        backend.enqueue(checked)
        published = [wait_for(lambda: pubsub.get_message(timeout=0.5), "an event", 10)]
        published.append(wait_for(lambda: pubsub.get_message(timeout=0.5), "an event", 10))
    finally:
        pubsub.close()

    events = [json.loads(message["data"]) for message in published]
    assert [event["id"] for event in events] == [plain.id, checked.id]
    assert JobRecord.from_dict(events[0]) == backend.get(plain.id) == plain
    plain_hash, checked_hash = (
        server.hgetall(f"{prefix}:job:{record.id}") for record in (plain, checked)
    )
    assert set(checked_hash) - set(plain_hash) == {"ik"}
    for listing in ({"task": "tests.same"}, {"created_by": "alice"}, {"status": JobStatus.PENDING}):
        page, _ = backend.list_jobs(**listing)  # type: ignore[arg-type]
        assert [record.id for record in page] == [checked.id, plain.id]
    assert backend.counts()[JobStatus.PENDING] == 2
    claims = backend.claim(["default"], lease=LEASE, limit=5)
    assert [claim.record.id for claim in claims] == [plain.id, checked.id]


def test_a_plain_enqueue_replayed_after_a_lost_answer_stores_nothing_twice(
    backend: RedisBackend,
) -> None:
    record = make_record()
    backend.enqueue(record)
    claim = backend.claim(["default"], lease=LEASE)[0]

    again, created = backend.enqueue(record)

    assert created is True
    assert again == claim.record  # the stored job, not a second one
    assert backend.counts()[JobStatus.PENDING] == 0
    assert backend.claim(["default"], lease=LEASE) == []


def test_a_plain_enqueue_keys_names_of_any_characters_exactly(
    backend: RedisBackend, server: redis.Redis, prefix: str
) -> None:
    # The short script gets queue, task and creator keys in one argument.
    names = {"queue": "q\x00:1 é", "task": "t\x00\x00", "created_by": "\x00ann ✓"}
    records = [make_record(**names), make_record(**names, id="not-a-uuid")]
    for record in records:
        backend.enqueue(record)

    assert [backend.get(record.id) for record in records] == records
    for listing in ({"task": names["task"]}, {"created_by": names["created_by"]}):
        page, _ = backend.list_jobs(**listing)  # type: ignore[arg-type]
        assert {record.id for record in page} == {record.id for record in records}
    assert server.exists(f"{prefix}:queue:{names['queue']}")
    claims = backend.claim([names["queue"]], lease=LEASE, limit=5)
    assert {claim.record.id for claim in claims} == {record.id for record in records}


def test_get_reads_a_job_as_the_scripts_render_it(backend: RedisBackend) -> None:
    # get() builds the record from the hash in Python; the scripts render it in Lua.
    job = enqueue(backend, run_at=backend.now() - timedelta(seconds=1), created_by="bob")
    claim = backend.claim(["default"], lease=LEASE)[0]
    assert backend.get(job.id) == claim.record
    backend.progress(job.id, claim.token, Progress(100 / 3, "Zoë ✓", 2**53 + 1, 7), lease=LEASE)
    cancelling = backend.request_cancel(job.id)
    assert cancelling is not None
    assert cancelling.cancel_requested
    assert backend.get(job.id) == cancelling
    # A retry of a job asked to stop ends it cancelled, keeping the error.
    assert backend.retry_later(job.id, claim.token, backend.now(), FAILED)
    stored = backend.get(job.id)
    assert stored == backend.request_cancel(job.id)  # rendered by the script, unchanged
    assert stored is not None
    assert stored.status is JobStatus.CANCELLED
    assert (stored.error, stored.error_type, stored.attempts) == (
        "Internal error: boom",
        ErrorType.SYSTEM,
        1,
    )
    assert stored.finished_at is not None
    assert stored.token is None


# -- the submit path: bulk transactions, cached encodings -----------------------


def test_enqueue_many_beyond_one_script_is_one_transaction(
    backend: RedisBackend, server: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("flask_jobrunner.backends.redis._ENQUEUE_CHUNK", 2)
    records = [make_record(created_by="alice") for _ in range(5)]
    records.append(make_record(run_at=backend.now() + timedelta(hours=1)))
    backend.enqueue_many(records[:1])  # loads the script

    server.config_resetstat()
    backend.enqueue_many(records)
    stats = server.info("commandstats")

    # Other tests share this server, so only the calls' presence is certain.
    assert stats["cmdstat_multi"]["calls"] >= 1
    assert stats["cmdstat_exec"]["calls"] >= 1
    assert [backend.get(record.id) for record in records] == records
    page, _ = backend.list_jobs(created_by="alice")
    assert {record.id for record in page} == {record.id for record in records[:5]}
    claimed = backend.claim(["default"], lease=LEASE, limit=10)
    assert [claim.record.id for claim in claimed] == [record.id for record in records[:5]]


def test_jobs_of_one_task_keep_their_own_options_and_submitter(backend: RedisBackend) -> None:
    # The part of a job's JSON shared by a task's jobs is encoded once and reused.
    records = [
        make_record(task="tasks.same", created_by="alice"),
        make_record(task="tasks.same", created_by="bob"),
        make_record(task="tasks.same", created_by=None, timeout=5.0, max_retries=2),
        make_record(task="tasks.same", created_by="alice", args=[1, "\u00e9"], kwargs={"k": []}),
        make_record(task="tasks.same", queue="other"),
    ]
    for record in records:
        backend.enqueue(record)
    backend.enqueue_many([make_record(task="tasks.same", created_by="carol")])

    assert [backend.get(record.id) for record in records] == records
    page, _ = backend.list_jobs(task="tasks.same", created_by="alice")
    assert {record.id for record in page} == {records[0].id, records[3].id}
    page, _ = backend.list_jobs(created_by="carol")
    assert [record.task for record in page] == ["tasks.same"]


# -- a leaner submit: events only where heard, no index of every job ------------


def test_a_submit_nobody_listens_to_publishes_nothing(private_redis: PrivateRedis) -> None:
    backend = load_backend(private_redis.url, redis_prefix="jrtest:quiet")
    server = redis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        backend.enqueue(make_record())  # loads the scripts
        backend.enqueue(make_record(idempotency_key="a:first"))
        backend.enqueue_many([make_record()])
        server.config_resetstat()

        backend.enqueue(make_record())  # the plain script
        backend.enqueue(make_record(idempotency_key="a:k"))  # the checked one
        backend.enqueue_many([make_record(), make_record(run_at=backend.now())])

        stats = server.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 3
        assert "cmdstat_publish" not in stats
        assert backend.counts()[JobStatus.PENDING] == 7
    finally:
        backend.close()
        server.close()


def test_a_claim_that_takes_nothing_asks_nobody_whether_they_listen(
    private_redis: PrivateRedis,
) -> None:
    backend = load_backend(private_redis.url, redis_prefix="jrtest:empty")
    server = redis.Redis.from_url(private_redis.url, decode_responses=True)
    try:
        assert backend.claim(["default"], lease=LEASE) == []  # loads the script
        server.config_resetstat()

        assert backend.claim(["default"], lease=LEASE) == []

        stats = server.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 1
        assert not [name for name in stats if name.startswith("cmdstat_pubsub")], stats
    finally:
        backend.close()
        server.close()


def test_a_pattern_subscriber_hears_every_new_job(
    backend: RedisBackend, server: redis.Redis, prefix: str
) -> None:
    plain, checked = make_record(), make_record(idempotency_key="a:k")
    bulk = [make_record(), make_record(created_by="alice", run_at=backend.now())]
    pubsub = server.pubsub()
    pubsub.psubscribe(f"{prefix}:events:*")
    try:
        wait_for(lambda: pubsub.get_message(timeout=0.5), "the subscription", 10)
        backend.enqueue(plain)
        backend.enqueue(checked)
        backend.enqueue_many(bulk)
        published = next_events(pubsub, 4)
    finally:
        pubsub.close()

    assert [event["id"] for event in published] == [r.id for r in (plain, checked, *bulk)]
    for event in published:
        assert JobRecord.from_dict(event) == backend.get(event["id"])


def test_a_listing_of_every_job_merges_the_statuses_newest_first(
    backend: RedisBackend,
) -> None:
    base = backend.now() - timedelta(seconds=10)
    # Two jobs share each moment, so ties between statuses are ordered by id too.
    jobs = [enqueue(backend, created_at=base + timedelta(milliseconds=i // 2)) for i in range(12)]
    claims = {c.record.id: c for c in backend.claim(["default"], lease=LEASE, limit=12)}
    outcomes = [DONE, FAILED, None, Outcome(JobStatus.CANCELLED)]
    for number, job in enumerate(jobs):
        outcome = outcomes[number % 4]
        if outcome is not None:
            assert backend.finish(job.id, claims[job.id].token, outcome)
    assert backend.release(jobs[2].id, claims[jobs[2].id].token)  # pending again
    newest_first = sorted(jobs, key=lambda job: (job.created_at, job.id), reverse=True)

    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page, cursor = backend.list_jobs(limit=5, cursor=cursor)
        seen += [record.id for record in page]
        if cursor is None:
            break

    assert seen == [job.id for job in newest_first]
    assert {record.status for record in backend.list_jobs(limit=20)[0]} == set(JobStatus)


def test_jobs_an_older_version_indexed_in_the_index_of_every_job_list_once(
    backend: RedisBackend, server: redis.Redis, prefix: str
) -> None:
    older = [enqueue(backend), enqueue(backend)]
    # What an older version wrote at each submit as well: an index of every job.
    for record in older:
        sort_key = codec.sort_key(record.created_at, record.id)
        server.zadd(f"{prefix}:jobs", {sort_key: 0})
    claim = backend.claim(["default"], lease=LEASE)[0]
    assert backend.finish(claim.record.id, claim.token, DONE)

    page, cursor = backend.list_jobs()

    assert ([record.id for record in page], cursor) == ([r.id for r in reversed(older)], None)


def test_a_job_in_two_status_indexes_is_listed_once(
    backend: RedisBackend, server: redis.Redis, prefix: str
) -> None:
    jobs = [enqueue(backend) for _ in range(3)]
    sort_key = codec.sort_key(jobs[1].created_at, jobs[1].id)
    server.zadd(f"{prefix}:status:failed", {sort_key: 0})  # no script leaves this behind

    page, cursor = backend.list_jobs(limit=3)

    assert ([record.id for record in page], cursor) == ([j.id for j in reversed(jobs)], None)
