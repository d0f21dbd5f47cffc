"""How the Redis backend writes a job into its hash and reads it back.

The layout is described in :mod:`flask_jobrunner.backends._redis_scripts`:
``doc`` holds the JSON of the fields that never change, and every other field
has a short hash field of its own (``st``, ``tok``, ``sa``, ``res``, ...).
The encoders here build the script arguments of a submit, a progress report
and a finish; the decoders build a :class:`~flask_jobrunner.record.JobRecord`
from a hash (``HGETALL``, a claim's answer) or from the JSON the scripts render.
Both sides run once per job step, so they avoid the general
:meth:`~flask_jobrunner.record.JobRecord.from_dict` where they can.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from operator import attrgetter
from typing import Any

from ..record import Claim, ErrorType, JobRecord, JobStatus, Outcome, Progress

#: Where the stored times count from, in microseconds.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_YEAR_ONE = datetime(1, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
# ASCII JSON: a lone surrogate in a task's arguments cannot fail the UTF-8 encoding.
_dumps = json.JSONEncoder(separators=(",", ":")).encode
# The index entry is decoded by cjson, which is then spared any escapes.
_dumps_index = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# The same encodings of one string, as JSON text, without building an encoder call.
_quote = json.encoder.encode_basestring_ascii
_quote_index = json.encoder.encode_basestring
#: Microseconds from 0001-01-01 to the epoch: an index entry counts from the former.
_YEAR_ONE_MICROS = (EPOCH - _YEAR_ONE) // _MICROSECOND

#: The record fields kept one per hash field (the rest go, as JSON, in ``doc``).
_CHANGING = frozenset(
    {
        "status",
        "token",
        "attempts",
        "recoveries",
        "cancel_requested",
        "started_at",
        "updated_at",
        "finished_at",
        "run_at",
        "lease_expires_at",
        "percentage",
        "message",
        "items_processed",
        "total_items",
        "result",
        "error",
        "error_type",
        "error_details",
    }
)
#: Times an enqueued record may carry (``run_at`` has an argument of its own).
_TIME_FIELDS = (
    ("sa", "started_at"),
    ("ua", "updated_at"),
    ("fa", "finished_at"),
    ("le", "lease_expires_at"),
)
#: Fields stored as JSON text, which the scripts copy but never parse.
_JSON_FIELDS = (
    ("pct", "percentage"),
    ("msg", "message"),
    ("ip", "items_processed"),
    ("ti", "total_items"),
    ("res", "result"),
    ("err", "error"),
    ("et", "error_type"),
    ("ed", "error_details"),
)
#: The hash fields of times, as microseconds since the epoch.
_STORED_TIMES = (*_TIME_FIELDS, ("ra", "run_at"))
#: The record fields stored, as JSON, in the hash field ``doc``.
_DOC_FIELDS = tuple(
    field.name for field in dataclasses.fields(JobRecord) if field.name not in _CHANGING
)
#: The doc fields each submit sets anew; the rest are alike for the jobs of a task.
_PER_JOB = ("id", "args", "kwargs", "created_at")
_PER_TASK = tuple(name for name in _DOC_FIELDS if name not in _PER_JOB)
_per_task_values = attrgetter(*_PER_TASK)
#: Most entries kept in the cache of :func:`encoded`'s per-task JSON.
ENCODED_CACHE = 512
#: The length of an index entry's sort key: 18 digits, ':' and a UUID.
SORT_KEY_LENGTH = 55


#: The record fields :func:`other_fields` stores, and their values in a new record.
_other_values = attrgetter(
    "attempts",
    "recoveries",
    "token",
    "cancel_requested",
    *(attribute for _, attribute in _TIME_FIELDS),
    *(attribute for _, attribute in _JSON_FIELDS),
)
_NEW_RECORD_VALUES = (0, 0, None, False, *(None for _ in _TIME_FIELDS + _JSON_FIELDS))


def as_stored(record: JobRecord) -> JobRecord:
    """What ``RedisBackend.enqueue`` answers for *record*, just stored: itself if pending.

    Redis holds none of it, so the caller's record can be the answer; a
    copy is made only where the stored status differs.
    """
    if record.status is JobStatus.PENDING:
        return record
    stored = record.copy()
    stored.status = JobStatus.PENDING
    return stored


def other_fields(record: JobRecord) -> list[str]:
    """The hash fields of a new job beyond the ones every job has, as name/value pairs.

    Fields left out read as their defaults (see ``render`` in the scripts).
    """
    if _other_values(record) == _NEW_RECORD_VALUES:  # every submit: one comparison
        return []
    fields: list[str] = []
    if record.attempts:
        fields += ("att", str(record.attempts))
    if record.recoveries:
        fields += ("rec", str(record.recoveries))
    if record.token is not None:
        fields += ("tok", record.token)
    if record.cancel_requested:
        fields += ("cxl", "1")
    for name, attribute in _TIME_FIELDS:
        moment = getattr(record, attribute)
        if moment is not None:
            fields += (name, str(micros(moment)))
    for name, attribute in _JSON_FIELDS:
        value = getattr(record, attribute)
        if value is not None:
            fields += (name, _dumps(value.value if isinstance(value, enum.Enum) else value))
    return fields


def enqueue_many_args(records: Sequence[JobRecord]) -> list[str | int]:
    """The ``ENQUEUE_MANY`` arguments of *records*: one group per job.

    Queue, task and creator go once for a run of jobs that share them, as
    the jobs of one :meth:`~flask_jobrunner.JobRunner.submit_many` all do.
    """
    args: list[str | int] = []
    shared: tuple[str, str, str | None] | None = None
    for record in records:
        doc, index, created, sort_key = encoded(record)
        if (record.queue, record.task, record.created_by) != shared:
            shared = (record.queue, record.task, record.created_by)
            args += ("", record.queue, record.task, record.created_by or "")
        args += (created, sort_key, doc, index)
        fields = other_fields(record)
        if record.run_at is not None:
            fields += ("ra", str(micros(record.run_at)))
        # Most jobs have no field of their own: an empty count spares the script a loop.
        if fields:
            args.append(str(len(fields) // 2))
            args += fields
        else:
            args.append("")
    return args


#: Per-task JSON for :func:`encoded`, by the values of ``_PER_TASK``.
_encoded_cache: dict[Any, tuple[str, str]] = {}


def encoded(record: JobRecord) -> tuple[str, str, int, str]:
    """The stored forms of a new job: its ``doc``, index entry, creation (us) and sort key.

    Most of the doc and of the index entry is the same for every job of a
    task, so that part is encoded once and kept; the rest is spliced in.
    """
    created = micros(record.created_at)
    sort_key = _sort_key_of(created, record.id)
    constant = _per_task_values(record)
    try:
        doc_tail, index_tail = _encoded_cache[constant]
    except KeyError:
        doc_tail, index_tail = _encoded_cache[constant] = _per_task_json(record)
        if len(_encoded_cache) > ENCODED_CACHE:
            _encoded_cache.clear()
    except TypeError:  # a value that cannot be a key: encoded every time
        doc_tail, index_tail = _per_task_json(record)
    args, kwargs = record.args, record.kwargs
    doc = "".join(
        (
            '{"id":',
            _quote(record.id),
            ',"args":',
            _dumps(args) if args else "[]",
            ',"kwargs":',
            _dumps(kwargs) if kwargs else "{}",
            ',"created_at":',
            _quote(record.created_at.isoformat()),
            doc_tail,
        )
    )
    return doc, "[" + _quote_index(sort_key) + index_tail, created, sort_key


def _per_task_json(record: JobRecord) -> tuple[str, str]:
    """The JSON of the doc fields in ``_PER_TASK`` (``,`` first, ``}`` last) and the
    index entry's end."""
    doc = _doc(record)
    tail = _dumps({name: doc[name] for name in _PER_TASK})
    index = "," + _dumps_index(record.task)
    if record.created_by is not None:
        index += "," + _dumps_index(record.created_by)
    return ("," + tail[1:] if _PER_TASK else "}"), index + "]"


def _doc(record: JobRecord) -> dict[str, Any]:
    """The fields of *record* that never change, as JSON-ready data."""
    doc = {name: getattr(record, name) for name in _DOC_FIELDS}
    for name, value in doc.items():
        if isinstance(value, datetime):
            doc[name] = value.isoformat()
    return doc


def micros(moment: datetime) -> int:
    """Microseconds since the epoch, exactly; a naive time is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - EPOCH) // _MICROSECOND


def sort_key(created_at: datetime, job_id: str) -> str:
    """The index member of a job: lexical order is ``(created_at, id)`` order."""
    return _sort_key_of(micros(created_at), job_id)


def _sort_key_of(created: int, job_id: str) -> str:
    # The index member of a job created *created* microseconds after the epoch.
    return f"{created + _YEAR_ONE_MICROS:018d}:{job_id}"


def text(value: str | bytes) -> str:
    """*value* as text, from a client with or without ``decode_responses``."""
    return value.decode() if isinstance(value, bytes) else value


def record_from_json(rendered: str | bytes) -> JobRecord:
    """The record of the JSON the scripts answer with and publish (``render``)."""
    data = json.loads(rendered)
    try:
        return _record_from_data(data)
    except KeyError:  # a doc stored before some field existed: defaults fill it in
        return JobRecord.from_dict(data)


_STATUSES = {status.value: status for status in JobStatus}
_ERROR_TYPES = {kind.value: kind for kind in ErrorType}
_from_iso = datetime.fromisoformat
#: The record fields :func:`_record_from_data` and :func:`record_from_hash` set
#: by name; a test checks they are all of them.
BUILT_FIELDS = frozenset(
    (
        *("id", "task", "queue", "args", "kwargs", "created_at", "max_retries", "timeout"),
        *("created_by", "unique_key", "idempotency_key", "status", "attempts", "recoveries"),
        *("cancel_requested", "token", "error_type"),
        *(attribute for _, attribute in _STORED_TIMES),
        *(attribute for _, attribute in _JSON_FIELDS if attribute != "error_type"),
    )
)


def _record_from_data(data: dict[str, Any]) -> JobRecord:
    """:meth:`JobRecord.from_dict` of data that has every field; raises ``KeyError`` else.

    Several times quicker than the general method, which every claim and
    every read of a job would notice.
    """
    error_type = data["error_type"]
    return JobRecord(
        id=data["id"],
        task=data["task"],
        queue=data["queue"],
        args=data["args"],
        kwargs=data["kwargs"],
        status=_STATUSES[data["status"]],
        created_at=_from_iso(data["created_at"]),
        started_at=_iso_or_none(data["started_at"]),
        updated_at=_iso_or_none(data["updated_at"]),
        finished_at=_iso_or_none(data["finished_at"]),
        run_at=_iso_or_none(data["run_at"]),
        percentage=data["percentage"],
        message=data["message"],
        items_processed=data["items_processed"],
        total_items=data["total_items"],
        result=data["result"],
        error=data["error"],
        error_type=None if error_type is None else _ERROR_TYPES[error_type],
        error_details=data["error_details"],
        attempts=data["attempts"],
        max_retries=data["max_retries"],
        recoveries=data["recoveries"],
        timeout=data["timeout"],
        created_by=data["created_by"],
        unique_key=data["unique_key"],
        idempotency_key=data["idempotency_key"],
        cancel_requested=data["cancel_requested"],
        token=data.get("token"),  # published without it
        lease_expires_at=_iso_or_none(data["lease_expires_at"]),
    )


def _iso_or_none(text: str | None) -> datetime | None:
    return None if text is None else _from_iso(text)


def record_from_hash(stored: dict[Any, Any]) -> JobRecord:
    """The record of a job's hash, as ``render`` and ``tokened`` in the scripts build it."""
    if isinstance(next(iter(stored)), bytes):  # a client without decode_responses
        stored = {text(name): text(value) for name, value in stored.items()}
    doc = json.loads(stored["doc"])
    get = stored.get
    try:
        error_type = get("et")
        return JobRecord(
            id=doc["id"],
            task=doc["task"],
            queue=doc["queue"],
            args=doc["args"],
            kwargs=doc["kwargs"],
            status=_STATUSES[stored["st"]],
            created_at=_from_iso(doc["created_at"]),
            started_at=_time_or_none(get("sa")),
            updated_at=_time_or_none(get("ua")),
            finished_at=_time_or_none(get("fa")),
            run_at=_time_or_none(get("ra")),
            percentage=_json_or_none(get("pct")),
            message=_json_or_none(get("msg")),
            items_processed=_json_or_none(get("ip")),
            total_items=_json_or_none(get("ti")),
            result=_json_or_none(get("res")),
            error=_json_or_none(get("err")),
            error_type=None if error_type is None else _ERROR_TYPES[json.loads(error_type)],
            error_details=_json_or_none(get("ed")),
            attempts=int(get("att", 0)),
            max_retries=doc["max_retries"],
            recoveries=int(get("rec", 0)),
            timeout=doc["timeout"],
            created_by=doc["created_by"],
            unique_key=doc["unique_key"],
            idempotency_key=doc["idempotency_key"],
            cancel_requested="cxl" in stored,
            token=get("tok"),
            lease_expires_at=_time_or_none(get("le")),
        )
    except KeyError:  # a doc stored before some field existed: defaults fill it in
        return _record_from_doc(doc, stored)


def _record_from_doc(data: dict[str, Any], stored: dict[str, str]) -> JobRecord:
    """What :func:`record_from_hash` builds, from any doc, by :meth:`JobRecord.from_dict`."""
    data["status"] = stored["st"]
    for name, attribute in _STORED_TIMES:
        data[attribute] = _time_or_none(stored.get(name))
    for name, attribute in _JSON_FIELDS:
        data[attribute] = _json_or_none(stored.get(name))
    data["attempts"] = int(stored.get("att", 0))
    data["recoveries"] = int(stored.get("rec", 0))
    data["cancel_requested"] = "cxl" in stored
    data["token"] = stored.get("tok")
    return JobRecord.from_dict(data)


def _time_or_none(micros: str | None) -> datetime | None:
    return None if micros is None else EPOCH + int(micros) * _MICROSECOND


def _json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def claim_from_fields(fields: list[Any]) -> Claim:
    """The claim of one job in a ``CLAIM`` answer: its hash fields, as name/value pairs."""
    record = record_from_hash(dict(zip(fields[::2], fields[1::2], strict=True)))
    assert record.token is not None
    return Claim(record, record.token)


def _json_or_empty(value: Any) -> str:
    return "" if value is None else _dumps(value)


#: The hash fields of a progress report, in the order of ``_progress_values``.
_PROGRESS_FIELDS = ("pct", "msg", "ip", "ti")
_progress_values = attrgetter("percentage", "message", "items_processed", "total_items")


def progress_args(progress: Progress | None) -> list[str]:
    """The four progress arguments of ``PROGRESS`` and ``RETRY_LATER``; empty ones store nothing."""
    if progress is None:
        return ["", "", "", ""]
    return [
        _json_or_empty(progress.percentage),
        _json_or_empty(progress.message),
        _json_or_empty(progress.items_processed),
        _json_or_empty(progress.total_items),
    ]


def final_fields(outcome: Outcome) -> list[str]:
    """The hash fields *outcome* sets, as name/value pairs, for ``FINISH_MANY``.

    Only those with a value are sent: most finishes carry a result and no more.
    """
    fields: list[str] = []
    if outcome.result is not None:
        fields += ("res", _dumps(outcome.result))
    if outcome.error is not None:
        fields += ("err", _dumps(outcome.error))
    if outcome.error_type is not None:
        fields += ("et", _quote(outcome.error_type.value))
    if outcome.error_details is not None:
        fields += ("ed", _dumps(outcome.error_details))
    progress = outcome.progress
    if progress is not None:
        for name, value in zip(_PROGRESS_FIELDS, _progress_values(progress), strict=True):
            if value is not None:
                fields += (name, _dumps(value))
    return fields


def outcome_args(outcome: Outcome) -> list[str]:
    """The ``RETRY_LATER`` arguments of *outcome*: result, error, its type and details, progress."""
    return [
        _json_or_empty(outcome.result),
        _json_or_empty(outcome.error),
        "" if outcome.error_type is None else _dumps(outcome.error_type.value),
        _json_or_empty(outcome.error_details),
        *progress_args(outcome.progress),
    ]
