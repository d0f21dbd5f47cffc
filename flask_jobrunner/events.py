"""Live changes of one job: the Server-Sent Events stream and the event ids it carries.

Both ``GET <prefix>/<id>/events`` and ``flask jobs watch`` follow a job with
:func:`follow`, which rests on :meth:`Backend.wait_changed
<flask_jobrunner.backends.base.Backend.wait_changed>`. An event id is the
job's revision (its ``updated_at``) in microseconds since the epoch, so a
client that resumes with ``Last-Event-ID`` gets exactly the changes it has
not seen: nothing twice, nothing lost.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

from .backends.base import Backend, is_newer, revision
from .errors import BackendUnavailable, InvalidArguments
from .job import status_document
from .record import JobRecord

logger = logging.getLogger("flask_jobrunner")

#: Milliseconds a browser waits before it reconnects a closed stream (the ``retry:`` field).
RECONNECT_MS = 1000
#: The heartbeat comment, sent when the job has not changed for a while.
KEEP_ALIVE = ": keep-alive\n\n"

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
# Ids are digits only, and few: int() of thousands of digits is slow.
_MAX_ID_DIGITS = 19


def event_id(record: JobRecord) -> str:
    """The event id of the job as *record* has it: its revision, in microseconds since the epoch."""
    return str((revision(record) - _EPOCH) // _MICROSECOND)


def parse_event_id(text: str) -> datetime:
    """The revision an event id from :func:`event_id` stands for.

    :raises InvalidArguments: if *text* is not such an id.
    """
    text = text.strip()
    refused = InvalidArguments(
        f"The event id {text[:40]!r} is not one this stream sent. Send the 'id' of the"
        " last event received as 'Last-Event-ID' (or 'last_event_id'), or none."
    )
    if not (text.isascii() and text.isdigit() and len(text) <= _MAX_ID_DIGITS):
        raise refused
    try:
        return _EPOCH + int(text) * _MICROSECOND
    except OverflowError:  # past the year 9999
        raise refused from None


def has_seen_the_end(record: JobRecord, after: datetime | None) -> bool:
    """Whether a client that saw revision *after* already has the final state of *record*."""
    return record.is_finished and not is_newer(record, after)


def follow(
    backend: Backend,
    record: JobRecord,
    *,
    after: datetime | None = None,
    wait: float = 15.0,
    deadline: float | None = None,
) -> Iterator[JobRecord | None]:
    """Yield the job each time it changes, until it ends; ``None`` after each quiet *wait*.

    The first item is *record* itself unless it is no newer than *after*. It
    ends after yielding a final state, when the job disappears (expired), or
    once the :func:`time.monotonic` *deadline* passes.

    :param backend: Where the job is stored.
    :param record: The job as last read.
    :param after: The revision the caller has already seen, if any.
    :param wait: Seconds without a change after which ``None`` is yielded.
    :param deadline: When to stop following, on the :func:`time.monotonic` clock.
    :raises BackendUnavailable: if the backend cannot be reached.
    """
    seen = after
    current: JobRecord | None = record
    while current is not None:
        if is_newer(current, seen):
            yield current
            seen = revision(current)
        if current.is_finished:
            return
        timeout = wait if deadline is None else min(wait, deadline - time.monotonic())
        if timeout <= 0:
            return
        current = backend.wait_changed(current.id, seen, timeout)
        if current is not None and not is_newer(current, seen):
            yield None


def status_message(record: JobRecord, polling_url: str) -> str:
    """One ``event: status`` message: the event id and the status document as JSON."""
    # Sorted and compact, as Flask's jsonify writes GET's answer; json.dumps
    # escapes every line break, so the document is one data line.
    data = json.dumps(status_document(record, polling_url), separators=(",", ":"), sort_keys=True)
    return f"id: {event_id(record)}\nevent: status\ndata: {data}\n\n"


def status_stream(
    backend: Backend,
    record: JobRecord,
    *,
    polling_url: str,
    after: datetime | None,
    heartbeat: float,
    max_duration: float,
) -> Iterator[str]:
    """The text of an event stream of the job's status, from *record* on.

    It opens with a ``retry:`` field, sends a status message for each change
    newer than *after* and a :data:`KEEP_ALIVE` comment every *heartbeat*
    seconds without one, and ends after the final state, or after
    *max_duration* seconds so that an idle client reconnects (with
    ``Last-Event-ID``) and no server thread is held for long. If the backend
    becomes unreachable the stream ends, and the client reconnects later.
    It needs no app or request context.
    """
    yield f"retry: {RECONNECT_MS}\n\n"
    deadline = time.monotonic() + max_duration
    try:
        for change in follow(backend, record, after=after, wait=heartbeat, deadline=deadline):
            yield KEEP_ALIVE if change is None else status_message(change, polling_url)
    except BackendUnavailable as error:
        logger.warning("The event stream of job '%s' ends: %s", record.id, error.message)
