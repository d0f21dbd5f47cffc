"""Tasks: registering, calling inline, validating and storing arguments; the Job handle."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import date, datetime, timezone
from typing import Annotated, Any

import pydantic
import pytest
from flask import Flask

from conftest import settings, wait_until
from flask_jobrunner import (
    ConfigurationError,
    InvalidArguments,
    Job,
    JobConflict,
    JobRunner,
    JobStatus,
    Task,
    TaskNotFound,
)


class Window(pydantic.BaseModel):
    start: datetime
    symbols: list[str]


# -- registering -------------------------------------------------------------


def test_task_decorator_without_parentheses_uses_the_defaults(jobs: JobRunner) -> None:
    @jobs.task
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    assert isinstance(add, Task)
    assert jobs.tasks == {"add": add}
    assert (add.name, add.retries, add.retry_backoff, add.timeout) == ("add", 0, 1.0, None)
    assert (add.unique, add.http, add.queue, add.is_async) == (False, False, "default", False)
    assert add.__name__ == "add"
    assert add.__doc__ == "Add two numbers."


def test_task_decorator_with_empty_parentheses_registers_the_function(jobs: JobRunner) -> None:
    @jobs.task()
    def ping() -> str:
        return "pong"

    assert isinstance(ping, Task)
    assert jobs.get_task("ping") is ping


def test_task_decorator_takes_every_option(jobs: JobRunner) -> None:
    @jobs.task(
        name="nightly_report",
        retries=2,
        retry_backoff=0.5,
        timeout=60,
        unique=True,
        http=True,
        queue="reports",
    )
    def build_report() -> None: ...

    assert jobs.tasks == {"nightly_report": build_report}
    assert build_report.name == "nightly_report"
    assert (build_report.retries, build_report.retry_backoff, build_report.timeout) == (2, 0.5, 60)
    assert (build_report.unique, build_report.http, build_report.queue) == (True, True, "reports")
    assert jobs.queues == ["default", "reports"]


@settings(run_workers=False)
def test_task_options_are_stored_with_its_jobs(app: Flask, jobs: JobRunner) -> None:
    @jobs.task(name="nightly_report", retries=2, timeout=60, unique=True, queue="reports")
    def build_report() -> None: ...

    job = build_report.submit()

    assert (job.task, job.record.queue) == ("nightly_report", "reports")
    assert (job.record.max_retries, job.record.timeout) == (2, 60)
    with pytest.raises(JobConflict, match=job.id):
        build_report.submit()


@settings(run_workers=False)
def test_task_without_timeout_gets_the_apps_timeout(app: Flask, jobs: JobRunner) -> None:
    @jobs.task
    def default_timeout() -> None: ...

    assert default_timeout.submit().record.timeout == 3600


@pytest.mark.parametrize(
    "options", [{"retries": -1}, {"retry_backoff": -0.1}, {"timeout": 0}, {"timeout": -5}]
)
def test_task_option_out_of_range_is_refused(jobs: JobRunner, options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        jobs.task(**options)(print)
    assert jobs.tasks == {}


def test_plain_call_runs_inline_and_returns_the_value(jobs: JobRunner) -> None:
    threads: list[int] = []

    @jobs.task(retries=3)
    def multiply(a: int, b: int = 2) -> int:
        threads.append(threading.get_ident())
        return a * b

    assert multiply(21) == 42
    assert multiply(3, b=3) == 9
    assert threads == [threading.get_ident()] * 2


@settings(run_workers=False)
def test_plain_call_stores_no_job(app: Flask, jobs: JobRunner) -> None:
    @jobs.task
    def double(number: int) -> int:
        return number * 2

    assert double(4) == 8
    assert len(jobs.list()) == 0


def test_duplicate_task_name_raises_and_suggests_name(jobs: JobRunner) -> None:
    @jobs.task
    def refresh() -> None: ...

    def other() -> None: ...

    with pytest.raises(ConfigurationError, match="'refresh' is already registered") as caught:
        jobs.task(name="refresh")(other)
    assert "name=" in str(caught.value)
    assert jobs.tasks["refresh"] is refresh

    renamed = jobs.task(name="refresh_other")(other)
    assert jobs.tasks["refresh_other"] is renamed


def test_parameter_of_a_type_that_cannot_be_json_is_refused_at_registration(
    jobs: JobRunner,
) -> None:
    def takes_a_lock(lock: threading.Lock) -> None: ...

    with pytest.raises(TypeError, match="'takes_a_lock' has a type that cannot be JSON"):
        jobs.task(takes_a_lock)


# -- validating arguments ----------------------------------------------------


@pytest.fixture
def add(jobs: JobRunner) -> Task[[int, int], int]:
    @jobs.task
    def add(a: int, b: int) -> int:
        return a + b

    return add


@pytest.mark.parametrize(
    ("args", "kwargs", "parameter", "text"),
    [
        pytest.param((), {"a": "one", "b": 2}, "a", "valid integer", id="wrong-type"),
        pytest.param((1,), {"b": [2]}, "b", "valid integer", id="wrong-type-keyword"),
        pytest.param((1,), {}, "b", "missing a required argument: 'b'", id="missing"),
        pytest.param((1, 2), {"c": 3}, "c", "unexpected keyword argument 'c'", id="extra"),
        pytest.param((1, 2, 3), {}, None, "too many positional arguments", id="too-many"),
        pytest.param((1,), {"a": 1}, "a", "multiple values for argument 'a'", id="twice"),
    ],
)
@settings(run_workers=False)
def test_invalid_arguments_are_refused_naming_the_parameter(
    app: Flask,
    jobs: JobRunner,
    add: Task[[int, int], int],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    parameter: str | None,
    text: str,
) -> None:
    with pytest.raises(InvalidArguments) as caught:
        add.submit(*args, **kwargs)

    message = str(caught.value)
    assert message.startswith("Invalid arguments for task 'add': ")
    assert text in message
    if parameter is not None:
        assert f"'{parameter}'" in message
    assert [detail["parameter"] for detail in caught.value.details] == [parameter]
    assert len(jobs.list()) == 0  # nothing was stored


@settings(run_workers=False)
def test_every_invalid_parameter_is_named(
    app: Flask, jobs: JobRunner, add: Task[[int, int], int]
) -> None:
    with pytest.raises(InvalidArguments) as caught:
        jobs.submit("add", a="x", b="y")

    assert [detail["parameter"] for detail in caught.value.details] == ["a", "b"]


@settings(run_workers=False)
def test_positional_only_and_keyword_only_parameters_are_checked(
    app: Flask, jobs: JobRunner
) -> None:
    @jobs.task
    def mixed(a: int, /, b: int, *, c: int = 0) -> None: ...

    job = mixed.submit(1, 2, c=3)
    assert (job.record.args, job.record.kwargs) == ([1], {"b": 2, "c": 3})

    with pytest.raises(InvalidArguments, match="'a'"):
        mixed.submit(a=1, b=2)  # type: ignore[call-arg]
    with pytest.raises(InvalidArguments, match="too many positional arguments"):
        mixed.submit(1, 2, 3)  # type: ignore[misc]
    with pytest.raises(InvalidArguments, match="'c'") as caught:
        mixed.submit(1, 2, c="three")  # type: ignore[arg-type]
    assert caught.value.details[0]["parameter"] == "c"


def test_varargs_and_varkwargs_reach_the_task_as_given(jobs: JobRunner) -> None:
    calls: list[tuple[Any, ...]] = []

    @jobs.task
    def gather(first: int, *numbers: int, **labels: str) -> None:
        calls.append((first, numbers, labels))

    args, kwargs = gather.validate((1, 2, "3"), {"x": "y"})
    json.dumps([args, kwargs])
    loaded_args, loaded_kwargs = gather.load_arguments(args, kwargs)
    gather.func(*loaded_args, **loaded_kwargs)

    args, kwargs = gather.validate((), {"first": 5})
    loaded_args, loaded_kwargs = gather.load_arguments(args, kwargs)
    gather.func(*loaded_args, **loaded_kwargs)

    assert calls == [(1, (2, 3), {"x": "y"}), (5, (), {})]


def test_invalid_varargs_point_at_the_wrong_value(jobs: JobRunner) -> None:
    @jobs.task
    def gather(*numbers: int, **labels: str) -> None: ...

    with pytest.raises(InvalidArguments, match=r"'numbers\.1': .*valid integer") as caught:
        gather.validate((1, "two"), {})
    assert caught.value.details[0]["parameter"] == "numbers"
    assert caught.value.details[0]["path"] == ["numbers", "1"]

    with pytest.raises(InvalidArguments, match="'x'") as caught:
        gather.validate((), {"x": 1})
    assert caught.value.details[0]["parameter"] == "x"


def test_parameters_named_like_pydantic_attributes_are_ordinary_arguments(
    jobs: JobRunner,
) -> None:
    @jobs.task
    def export(json: str, schema: int = 1, copy: bool = False, _private: int = 0) -> None: ...

    args, kwargs = export.validate(("data",), {"schema": 2, "copy": True, "_private": 3})
    assert (args, kwargs) == ([], {"json": "data", "schema": 2, "copy": True, "_private": 3})
    with pytest.raises(InvalidArguments, match="'schema'"):
        export.validate(("data",), {"schema": "two"})


def test_arguments_are_stored_as_json_and_loaded_back_as_declared_types(
    app: Flask, jobs: JobRunner
) -> None:
    seen: dict[str, Any] = {}

    @jobs.task
    def schedule(when: datetime, window: Window, day: date, tags: set[str]) -> datetime:
        seen.update(when=when, window=window, day=day, tags=tags)
        return when

    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    window = Window(start=when, symbols=["SPY", "QQQ"])
    job = schedule.submit(when, window=window, day=date(2024, 1, 2), tags={"etf"})

    assert job.record.kwargs == {
        "when": "2024-01-02T03:04:05Z",
        "window": {"start": "2024-01-02T03:04:05Z", "symbols": ["SPY", "QQQ"]},
        "day": "2024-01-02",
        "tags": ["etf"],
    }
    json.dumps(job.record.kwargs)

    assert job.wait(timeout=5).status is JobStatus.COMPLETED
    assert seen == {"when": when, "window": window, "day": date(2024, 1, 2), "tags": {"etf"}}
    assert isinstance(seen["window"], Window)
    assert job.result == "2024-01-02T03:04:05Z"


_UNSET: Any = object()


def test_defaults_of_arguments_left_out_are_neither_stored_nor_serialised(
    app: Flask, jobs: JobRunner
) -> None:
    seen: list[Any] = []

    @jobs.task
    def load(symbols: list[str] = ("SPY", "QQQ"), since: str = _UNSET) -> None:  # type: ignore[assignment]
        seen.append((symbols, since))

    job = load.submit()

    assert (job.record.args, job.record.kwargs) == ([], {})
    assert job.wait(timeout=5).status is JobStatus.COMPLETED
    assert seen == [(("SPY", "QQQ"), _UNSET)]  # the function's own defaults, untouched


@settings(run_workers=False)
def test_json_strings_are_accepted_for_declared_types(app: Flask, jobs: JobRunner) -> None:
    @jobs.task
    def schedule(when: datetime, window: Window) -> None: ...

    job = schedule.submit(
        "2024-01-02T03:04:05+00:00",  # type: ignore[arg-type]
        window={"start": "2024-01-02T03:04:05Z", "symbols": []},  # type: ignore[arg-type]
    )
    assert job.record.kwargs["when"] == "2024-01-02T03:04:05Z"


@pytest.mark.parametrize(
    "value",
    [object(), float("nan"), float("inf"), {"ratio": float("nan")}],
    ids=["object", "nan", "inf", "nested-nan"],
)
@settings(run_workers=False)
def test_argument_that_is_not_json_is_refused(app: Flask, jobs: JobRunner, value: Any) -> None:
    @jobs.task
    def anything(value: Any) -> None: ...

    with pytest.raises(InvalidArguments, match="they are not JSON"):
        anything.submit(value)
    assert len(jobs.list()) == 0


@settings(run_workers=False)
def test_float_argument_that_is_not_finite_is_refused_naming_the_parameter(
    app: Flask, jobs: JobRunner
) -> None:
    @jobs.task
    def scale(ratio: float, ratios: list[float] = []) -> None: ...  # noqa: B006

    with pytest.raises(InvalidArguments, match="'ratio': Input should be a finite number"):
        scale.submit(float("inf"))
    with pytest.raises(InvalidArguments, match=r"'ratios\.1'"):
        scale.submit(1.0, ratios=[1.0, float("nan")])
    assert len(jobs.list()) == 0


# -- submitting by name ------------------------------------------------------


@settings(run_workers=False)
def test_jobs_submit_by_name_validates_and_stores_a_pending_job(
    app: Flask, jobs: JobRunner, add: Task[[int, int], int]
) -> None:
    job = jobs.submit("add", 1, b=2)

    assert isinstance(job, Job)
    assert (job.task, job.status) == ("add", JobStatus.PENDING)
    assert job.record.kwargs == {"a": 1, "b": 2}
    with pytest.raises(InvalidArguments, match="'b'"):
        jobs.submit("add", 1, b="two")


@settings(run_workers=False)
def test_unknown_task_name_raises_task_not_found(app: Flask, jobs: JobRunner) -> None:
    with pytest.raises(TaskNotFound, match="There is no task named 'missing'"):
        jobs.submit("missing")
    with pytest.raises(TaskNotFound):
        jobs.get_task("missing")


# -- the Job handle ----------------------------------------------------------


@settings(run_workers=False)
def test_job_ids_are_random_canonical_uuid4s(
    app: Flask, jobs: JobRunner, add: Task[[int, int], int]
) -> None:
    ids = [job.id for job in jobs.submit_many(add, [[1, 2]] * 300)] + [add.submit(1, 2).id]

    parsed = [uuid.UUID(job_id) for job_id in ids]
    assert [str(value) for value in parsed] == ids  # lowercase, with the dashes
    assert {(value.version, value.variant) for value in parsed} == {(4, uuid.RFC_4122)}
    assert len(set(ids)) == len(ids)
    # Each of the 122 random bits takes both values among 300 ids.
    fixed = (0xF << 76) | (0xC << 60)
    assert all(
        {(value.int >> bit) & 1 for value in parsed} == {0, 1}
        for bit in range(128)
        if not (fixed >> bit) & 1
    )


@settings(run_workers=False)
def test_job_handle_of_a_pending_job(
    app: Flask, jobs: JobRunner, add: Task[[int, int], int]
) -> None:
    job = add.submit(1, 2)

    assert uuid.UUID(job.id).version == 4
    assert (job.status, job.result, job.error, job.is_finished) == (
        JobStatus.PENDING,
        None,
        None,
        False,
    )
    same = jobs.get(job.id)
    assert same is not None
    assert (same.id, same.status) == (job.id, JobStatus.PENDING)


@settings(run_workers=False)
def test_job_refresh_reads_the_stored_state_again(
    app: Flask, jobs: JobRunner, add: Task[[int, int], int]
) -> None:
    job = add.submit(1, 2)
    jobs.cancel(job.id)

    assert job.status is JobStatus.PENDING  # the handle is what was last read
    assert job.refresh() is job
    assert job.status is JobStatus.CANCELLED


@settings(run_workers=False)
def test_job_wait_raises_timeout_error_when_not_finished_in_time(
    app: Flask, jobs: JobRunner, add: Task[[int, int], int]
) -> None:
    job = add.submit(1, 2)

    with pytest.raises(TimeoutError, match=f"Job '{job.id}' is still pending after 0.1 seconds"):
        job.wait(timeout=0.1)


def test_job_wait_returns_the_result(
    app: Flask, jobs: JobRunner, add: Task[[int, int], int]
) -> None:
    job = add.submit(1, 2)

    assert job.wait(timeout=5) is job
    assert (job.status, job.result, job.error, job.is_finished) == (
        JobStatus.COMPLETED,
        3,
        None,
        True,
    )


def test_job_wait_with_no_time_left_still_reads_a_finished_job(
    app: Flask, jobs: JobRunner, add: Task[[int, int], int]
) -> None:
    job = add.submit(1, 2)
    wait_until(lambda: jobs.get(job.id).is_finished)  # type: ignore[union-attr]
    assert job.status is JobStatus.PENDING  # the handle is what was last read

    assert job.wait(timeout=0).status is JobStatus.COMPLETED
    assert job.result == 3


def test_job_error_of_a_failed_job(app: Flask, jobs: JobRunner) -> None:
    @jobs.task
    def broken() -> None:
        raise KeyError("holdings")

    job = broken.submit().wait(timeout=5)

    assert job.status is JobStatus.FAILED
    assert job.error == "Internal error: 'holdings'"
    assert job.result is None


@settings(run_workers=False)
def test_annotated_constraints_in_the_signature_are_checked_on_submit(
    app: Flask, jobs: JobRunner
) -> None:
    @jobs.task
    def backfill(days: Annotated[int, pydantic.Field(ge=1, le=3650)]) -> int:
        return days

    with pytest.raises(InvalidArguments) as caught:
        backfill.submit(days=0)

    assert "days" in str(caught.value)
    assert backfill.submit(days=30).record.kwargs == {"days": 30}
    assert jobs.list().jobs[0].record.kwargs == {"days": 30}


def test_a_call_without_arguments_skips_pydantic_when_no_parameter_is_required(
    jobs: JobRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    @jobs.task
    def defaults(n: int = 1, *rest: int, **options: str) -> None: ...

    @jobs.task
    def needs(n: int) -> None: ...

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("pydantic was asked")

    monkeypatch.setattr(defaults._arguments_model, "model_validate", refuse)
    assert defaults.validate((), {}) == ([], {})
    # Required parameters still get the message that names them.
    with pytest.raises(InvalidArguments, match="missing a required argument: 'n'"):
        needs.validate((), {})
