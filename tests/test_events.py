"""``GET /api/jobs/<id>/events``: Server-Sent Events of a job's status, on every backend."""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient
from werkzeug.serving import make_server
from werkzeug.test import TestResponse

from conftest import PrivateRedis, assert_error, free_port, settings, wait_until
from flask_jobrunner import JobRunner, Task, current_job

PREFIX = "/api/jobs"
STEPS = 4


@dataclass
class Event:
    """One message of an event stream: a status message or a comment."""

    id: str | None = None
    event: str | None = None
    data: str | None = None
    retry: str | None = None
    comments: list[str] = field(default_factory=list)

    @property
    def document(self) -> dict[str, Any]:
        assert self.event == "status", self
        assert self.data is not None, self
        document: dict[str, Any] = json.loads(self.data)
        return document


def parse_events(text: str) -> list[Event]:
    """The messages of a text/event-stream body, as the SSE specification reads them."""
    events = []
    for block in text.split("\n\n"):
        if not block:
            continue
        event = Event()
        for line in block.split("\n"):
            if line.startswith(":"):
                event.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            setattr(event, name, value.removeprefix(" "))
        events.append(event)
    return events


class Stream:
    """An open event stream read message by message, through the Flask test client."""

    def __init__(self, response: TestResponse) -> None:
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.mimetype == "text/event-stream"
        self.response = response
        self._chunks = iter(response.response)
        self._buffer = ""
        self.ended = False

    def next(self) -> Event | None:
        """The next message, or ``None`` once the server ended the stream."""
        while "\n\n" not in self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.ended = True
                assert not self._buffer.strip(), self._buffer
                return None
            self._buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        block, self._buffer = self._buffer.split("\n\n", 1)
        [event] = parse_events(block + "\n\n")
        return event

    def statuses(self) -> Iterator[Event]:
        """The status messages until the stream ends, skipping the rest."""
        while (event := self.next()) is not None:
            if event.event == "status":
                yield event

    def close(self) -> None:
        self.response.close()


def open_stream(client: FlaskClient, job_id: str, **headers: str) -> Stream:
    return Stream(client.get(f"{PREFIX}/{job_id}/events", headers=headers, buffered=False))


@pytest.fixture
def gates(app: Flask) -> Iterator[list[threading.Event]]:
    """A gate per step of the ``stepped`` task and one before it returns; all open at teardown."""
    events = [threading.Event() for _ in range(STEPS + 1)]
    yield events
    for event in events:
        event.set()


@pytest.fixture
def stepped(jobs: JobRunner, gates: list[threading.Event]) -> Task[[], str]:
    """A task that reports STEPS progress steps, each only once its gate is open."""

    @jobs.task(http=True)
    def stepped() -> str:
        for step in range(STEPS):
            assert gates[step].wait(20), f"gate {step} was never opened"
            current_job.progress(done=step + 1, total=STEPS, message=f"step {step + 1}")
        assert gates[STEPS].wait(20), "the last gate was never opened"
        return "done"

    return stepped


def submit(client: FlaskClient, task: str, **headers: str) -> str:
    response = client.post(f"{PREFIX}/{task}", json={}, headers=headers)
    assert response.status_code == 202, response.get_json()
    job_id: str = response.get_json()["job_id"]
    return job_id


def open_next_gate(event: Event, gates: list[threading.Event]) -> None:
    """Let the task take its next step once the stream showed the current one."""
    document = event.document
    if document["status"] == "in_progress":
        gates[document.get("items_processed", 0)].set()


def steps_of(events: list[Event]) -> list[tuple[str, Any]]:
    return [(e.document["status"], e.document.get("items_processed")) for e in events]


def every_step() -> list[tuple[str, Any]]:
    return (
        [("in_progress", None)]
        + [("in_progress", n) for n in range(1, STEPS + 1)]
        + [("completed", STEPS)]
    )


def without_pending(events: list[Event]) -> list[Event]:
    # The stream may open before or after a worker claims the job.
    if events and events[0].document["status"] == "pending":
        return events[1:]
    return events


# -- the stream ----------------------------------------------------------------------------


@settings(events_heartbeat=0.2, events_max_duration=60)
def test_stream_delivers_each_progress_step_in_order_and_closes_after_the_final_state(
    app: Flask, client: FlaskClient, stepped: Task[[], str], gates: list[threading.Event]
) -> None:
    job_id = submit(client, "stepped")
    stream = open_stream(client, job_id)

    first = stream.next()
    assert first is not None
    assert first.retry is not None
    assert int(first.retry) > 0
    events: list[Event] = []
    while (event := stream.next()) is not None:
        finished = bool(events) and events[-1].document["status"] == "completed"
        if event.comments == ["keep-alive"] and event.event is None and not finished:
            continue  # a step slower than the heartbeat on a loaded machine
        assert event.event == "status", f"nothing may follow the final state: {event}"
        events.append(event)
        open_next_gate(event, gates)

    assert steps_of(without_pending(events)) == every_step()
    final = events[-1].document
    assert final == client.get(f"{PREFIX}/{job_id}").get_json()
    assert [e.document["percentage"] for e in without_pending(events)[1:]] == [
        25.0, 50.0, 75.0, 100.0, 100.0
    ]  # fmt: skip
    ids = [int(e.id or "") for e in events]
    assert ids == sorted(set(ids)), "event ids increase strictly"
    stream.close()


@pytest.mark.parametrize("via", ["header", "query"])
def test_reconnect_with_last_event_id_gets_no_duplicate_and_misses_nothing(
    app: Flask,
    client: FlaskClient,
    jobs: JobRunner,
    stepped: Task[[], str],
    gates: list[threading.Event],
    via: str,
) -> None:
    job_id = submit(client, "stepped")
    stream = open_stream(client, job_id)
    seen: list[Event] = []
    for event in stream.statuses():
        seen.append(event)
        if event.document.get("items_processed") == 1:
            break
        open_next_gate(event, gates)
    stream.close()

    # Step 2 happens while no client listens.
    gates[1].set()
    wait_until(lambda: (job := jobs.get(job_id)) and job.record.items_processed == 2)
    last_id = seen[-1].id or ""
    if via == "header":
        resumed = open_stream(client, job_id, **{"Last-Event-ID": last_id})
    else:
        resumed = Stream(
            client.get(f"{PREFIX}/{job_id}/events?last_event_id={last_id}", buffered=False)
        )
    for event in resumed.statuses():
        seen.append(event)
        open_next_gate(event, gates)
    resumed.close()

    assert steps_of(without_pending(seen)) == every_step()
    ids = [e.id for e in seen]
    assert len(ids) == len(set(ids)), f"a message came twice: {ids}"


def test_resuming_after_the_final_state_answers_204_so_browsers_stop(
    app: Flask, client: FlaskClient, jobs: JobRunner
) -> None:
    @jobs.task(http=True)
    def quick() -> int:
        return 1

    job_id = submit(client, "quick")
    [job] = jobs.list()
    job.wait(timeout=10)
    [event] = list(open_stream(client, job_id).statuses())

    response = client.get(
        f"{PREFIX}/{job_id}/events", headers={"Last-Event-ID": event.id or ""}, buffered=False
    )

    assert response.status_code == 204
    assert response.get_data() == b""


def test_stream_of_a_finished_job_sends_one_message_and_ends(
    app: Flask, client: FlaskClient, jobs: JobRunner
) -> None:
    @jobs.task(http=True)
    def quick() -> int:
        return 7

    job_id = submit(client, "quick")
    [job] = jobs.list()
    job.wait(timeout=10)

    response = client.get(f"{PREFIX}/{job_id}/events")

    events = parse_events(response.get_data(as_text=True))
    assert [event.event for event in events] == [None, "status"]
    assert events[1].document == client.get(f"{PREFIX}/{job_id}").get_json()
    assert events[1].document["result"] == 7
    assert response.headers["Cache-Control"] == "no-cache"


@settings(run_workers=False, events_heartbeat=0.1, events_max_duration=1)
def test_an_idle_stream_sends_heartbeats_and_ends_after_the_max_duration(
    app: Flask, client: FlaskClient, jobs: JobRunner
) -> None:
    @jobs.task(http=True)
    def idle() -> None:
        pass

    job_id = submit(client, "idle")

    events = parse_events(client.get(f"{PREFIX}/{job_id}/events").get_data(as_text=True))

    assert events[0].retry is not None
    assert events[1].document["status"] == "pending"
    heartbeats = events[2:]
    assert heartbeats, "no heartbeat within the max duration"
    assert all(event.comments == ["keep-alive"] and event.event is None for event in heartbeats)


@settings(run_workers=False)
def test_a_resumed_stream_of_an_unchanged_job_sends_no_message(
    app: Flask, client: FlaskClient, jobs: JobRunner
) -> None:
    @jobs.task(http=True)
    def idle() -> None:
        pass

    job_id = submit(client, "idle")
    stream = open_stream(client, job_id)
    assert stream.next() is not None  # retry
    event = stream.next()
    assert event is not None
    assert event.document["status"] == "pending"
    stream.close()

    resumed = open_stream(client, job_id, **{"Last-Event-ID": event.id or ""})
    assert resumed.next() is not None  # retry
    jobs.cancel(job_id)
    [cancelled] = list(resumed.statuses())

    assert cancelled.document["status"] == "cancelled"
    assert int(cancelled.id or "") > int(event.id or "")


# -- who may watch ------------------------------------------------------------------------


@settings(run_workers=False)
def test_unknown_and_malformed_ids_answer_404(app: Flask, client: FlaskClient) -> None:
    for job_id in (str(uuid.uuid4()), "not-a-job", str(uuid.uuid1())):
        assert_error(client.get(f"{PREFIX}/{job_id}/events"), 404)


@settings(run_workers=False)
def test_a_last_event_id_this_stream_never_sent_answers_400(
    app: Flask, client: FlaskClient, jobs: JobRunner
) -> None:
    @jobs.task(http=True)
    def idle() -> None:
        pass

    job_id = submit(client, "idle")
    for bad in ("yesterday", "-5", "1" * 40, "9" * 19, "12.5", "\u0663"):
        response = client.get(f"{PREFIX}/{job_id}/events", headers={"Last-Event-ID": bad})
        body = assert_error(response, 400)
        assert "Last-Event-ID" in body["error"]


@settings(run_workers=False)
def test_authorize_refusing_read_answers_403(
    app: Flask, client: FlaskClient, jobs: JobRunner
) -> None:
    @jobs.task(http=True)
    def idle() -> None:
        pass

    job_id = submit(client, "idle")
    actions: list[str] = []

    @jobs.authorize
    def only_submit(action: str, task: str | None, job: object) -> bool:
        actions.append(action)
        return action == "submit"

    assert_error(client.get(f"{PREFIX}/{job_id}/events"), 403)
    assert actions == ["read"]


@settings(run_workers=False)
def test_another_clients_job_answers_404(app: Flask, client: FlaskClient, jobs: JobRunner) -> None:
    @jobs.task(http=True)
    def idle() -> None:
        pass

    @jobs.identity
    def user_header() -> str | None:
        return request.headers.get("X-User")

    job_id = submit(client, "idle", **{"X-User": "alice"})

    assert_error(client.get(f"{PREFIX}/{job_id}/events", headers={"X-User": "bob"}), 404)
    assert_error(client.get(f"{PREFIX}/{job_id}/events"), 404)
    own = client.get(f"{PREFIX}/{job_id}/events", headers={"X-User": "alice"}, buffered=False)
    assert own.status_code == 200
    own.close()


def test_the_api_closed_by_default_answers_403(jobs: JobRunner) -> None:
    app = Flask("jobrunner_events_closed")
    app.config["JOBRUNNER_RUN_WORKERS"] = False
    jobs.init_app(app)

    response = app.test_client().get(f"{PREFIX}/{uuid.uuid4()}/events")

    body = assert_error(response, 403)
    assert "jobs.authorize" in body["error"]


def test_an_unreachable_backend_answers_503_before_the_stream(jobs: JobRunner) -> None:
    app = Flask("jobrunner_events_down")
    app.testing = True
    app.config.update(
        JOBRUNNER_BACKEND=f"redis://127.0.0.1:{free_port()}/0", JOBRUNNER_RUN_WORKERS=False
    )
    jobs.init_app(app)
    try:
        response = app.test_client().get(f"{PREFIX}/{uuid.uuid4()}/events")
    finally:
        jobs.shutdown(app, timeout=5)

    assert_error(response, 503)
    assert int(response.headers["Retry-After"]) >= 1


# -- a real server ------------------------------------------------------------------------


@settings(events_heartbeat=5)
def test_a_threaded_server_streams_each_change_as_it_happens(
    app: Flask, stepped: Task[[], str], gates: list[threading.Event]
) -> None:
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    serving = threading.Thread(target=server.serve_forever, name="test-server", daemon=True)
    serving.start()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        with app.app_context():
            job_id = stepped.submit().id
        connection.request("GET", f"{PREFIX}/{job_id}/events")
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        events: list[Event] = []
        buffer = ""
        while not (events and events[-1].document["status"] == "completed"):
            line = response.readline().decode()
            assert line, "the stream ended before the final state"
            buffer += line
            if buffer.endswith("\n\n"):
                [event] = parse_events(buffer)
                buffer = ""
                if event.event == "status":
                    # The task waits for this very message before its next step:
                    # a server that buffered the stream would never get here.
                    events.append(event)
                    open_next_gate(event, gates)
        assert steps_of(without_pending(events)) == every_step()
        assert response.read() == b"", "the stream ends after the final state"
    finally:
        connection.close()
        server.shutdown()
        serving.join(10)
        server.server_close()


@settings(run_workers=False)
def test_the_openapi_document_lists_the_events_route(app: Flask, client: FlaskClient) -> None:
    paths = client.get(f"{PREFIX}/openapi.json").get_json()["paths"]

    operation = paths[f"{PREFIX}/{{job_id}}/events"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {"job_id", "Last-Event-ID", "last_event_id"} == {
        parameter["name"] for parameter in operation["parameters"]
    }
    assert {"204", "400", "403", "404", "503"} <= set(operation["responses"])


def test_a_stream_ends_cleanly_when_the_backend_goes_away(
    jobs: JobRunner, private_redis: PrivateRedis
) -> None:
    @jobs.task(http=True)
    def idle() -> None:
        pass

    app = Flask("jobrunner_events_outage")
    app.testing = True
    app.config.update(
        JOBRUNNER_BACKEND=private_redis.url,
        JOBRUNNER_RUN_WORKERS=False,
        JOBRUNNER_EVENTS_HEARTBEAT=0.2,
    )
    jobs.init_app(app)
    client = app.test_client()
    try:
        job_id = submit(client, "idle")
        stream = open_stream(client, job_id)
        assert stream.next() is not None  # retry
        first = stream.next()
        assert first is not None
        assert first.document["status"] == "pending"

        private_redis.stop()
        rest = []
        while (event := stream.next()) is not None:
            rest.append(event)
        stream.close()

        assert all(event.event is None for event in rest), "only heartbeats, then the end"
        assert_error(client.get(f"{PREFIX}/{job_id}/events"), 503)
    finally:
        jobs.shutdown(app, timeout=5)
