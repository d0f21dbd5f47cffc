"""Tasks: functions registered with :meth:`JobRunner.task <flask_jobrunner.JobRunner.task>`.

A task checks its arguments against the function's signature and type hints
(with pydantic) before a job is stored, and stores them as JSON. The worker
loads them back through the same model, so a task receives the types it
declared.
"""

from __future__ import annotations

import inspect
import json
import re
import typing as t
from collections.abc import Callable
from functools import update_wrapper

import pydantic

from .errors import InvalidArguments

if t.TYPE_CHECKING:
    from .extension import JobRunner
    from .job import Job

P = t.ParamSpec("P")
R = t.TypeVar("R")

# Model attributes are named apart from the parameters, which are aliases, so a
# parameter may be called 'json', 'copy' or '_private' without clashing with pydantic.
_ATTRIBUTE = "p_{key}"
#: Keyword arguments of :meth:`Task.submit` that set when the job starts.
_START_OPTIONS = ("delay", "run_at")


class Task(t.Generic[P, R]):
    """A function that can run inline or be submitted as a background job.

    Calling the task runs the function as a plain call. :meth:`submit`
    stores a job and returns its :class:`~flask_jobrunner.Job` handle at once.
    Create tasks with :meth:`JobRunner.task <flask_jobrunner.JobRunner.task>`.

    :param runner: The extension the task belongs to.
    :param func: The function; ``async def`` functions run too.
    :param name: The name clients submit it by; defaults to the function's name.
    :param retries: How many times a failed job is tried again.
    :param retry_backoff: Seconds before the first retry; doubles for each next one.
    :param timeout: Seconds a job may run; defaults to ``JOBRUNNER_TIMEOUT``.
    :param unique: Allow at most one pending or running job of this task.
    :param http: Let clients submit it over the HTTP API.
    :param queue: The queue its jobs go to.
    """

    def __init__(
        self,
        runner: JobRunner,
        func: Callable[P, R],
        *,
        name: str | None = None,
        retries: int = 0,
        retry_backoff: float = 1.0,
        timeout: float | None = None,
        unique: bool = False,
        http: bool = False,
        queue: str = "default",
    ) -> None:
        if retries < 0 or retry_backoff < 0 or (timeout is not None and timeout <= 0):
            raise ValueError("'retries' and 'retry_backoff' must be >= 0 and 'timeout' > 0.")
        self.runner = runner
        self.func = func
        self.name = name or func.__name__
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.timeout = timeout
        self.unique = unique
        self.http = http
        self.queue = queue
        self.is_async = inspect.iscoroutinefunction(func)
        self._signature = inspect.signature(func)
        # Keys inside **kwargs are reported as parameters of their own.
        self._var_keyword = {
            name
            for name, parameter in self._signature.parameters.items()
            if parameter.kind is parameter.VAR_KEYWORD
        }
        self._arguments_model = _arguments_model(self.name, func, self._signature)
        # A call without arguments fits when no parameter is required; its JSON
        # form is then always empty (only what was passed is stored), so
        # :meth:`validate` answers it without a round trip through pydantic.
        self._fits_empty_call = all(
            parameter.default is not parameter.empty
            or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
            for parameter in self._signature.parameters.values()
        )
        returns = _type_hints(func.__name__, func).get("return", t.Any)
        self._result_adapter = _result_adapter(returns)
        self._plain_results = _plain_results(returns)
        update_wrapper(self, func)

    def __repr__(self) -> str:
        return f"<Task {self.name!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function now, in this thread, as a plain call."""
        return self.func(*args, **kwargs)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Validate the arguments, store a pending job and return its handle.

        Two keyword arguments are options of the job, not arguments of the
        function: ``delay`` (seconds before the job may start) and ``run_at``
        (a timezone-aware datetime); see :meth:`JobRunner.enqueue
        <flask_jobrunner.JobRunner.enqueue>`. For a function with a parameter
        of one of these names, passing it by keyword here is refused as
        ambiguous: use ``jobs.enqueue(task, args, kwargs, delay=...)``.
        Type checkers see only the function's parameters; ``enqueue`` is the
        typed form.

        :raises InvalidArguments: if the arguments do not fit the function, or
            ``delay`` or ``run_at`` is not usable.
        :raises JobConflict: if the task is ``unique`` and already has a job.
        """
        if not kwargs:  # no keywords, so no option to sort out
            return self.runner.enqueue(self, args)
        options: dict[str, t.Any] = {
            name: kwargs.pop(name) for name in _START_OPTIONS if name in kwargs
        }
        clashes = sorted(name for name in options if name in self._signature.parameters)
        if clashes:
            message = (
                f"Task '{self.name}' has a parameter '{clashes[0]}', so"
                f" 'submit({clashes[0]}=...)' is ambiguous. Pass the task's arguments and"
                " the job's options apart: jobs.enqueue(task, args, kwargs, delay=..., run_at=...)."
            )
            raise InvalidArguments(message, [{"parameter": clashes[0], "message": message}])
        return self.runner.enqueue(self, args, kwargs, **options)

    def submit_many(
        self, calls: t.Iterable[t.Mapping[str, t.Any] | t.Sequence[t.Any]]
    ) -> list[Job]:
        """Submit one job per item of *calls* at once; see :meth:`JobRunner.submit_many`.

        :param calls: The arguments of each job: a mapping of keyword
            arguments, or a list or tuple of positional ones.
        :raises InvalidArguments: if the task is ``unique`` or a call does not fit.
        """
        return self.runner.submit_many(self, calls)

    def parameters_schema(self, ref_template: str = "#/$defs/{model}") -> dict[str, t.Any]:
        """The JSON Schema of the task's keyword arguments, from its type hints.

        :param ref_template: Where references to nested models point.
        """
        schema = self._arguments_model.model_json_schema(ref_template=ref_template)
        schema["title"] = f"Arguments of {self.name}"
        return schema

    def validate(
        self, args: t.Sequence[t.Any], kwargs: t.Mapping[str, t.Any]
    ) -> tuple[list[t.Any], dict[str, t.Any]]:
        """Check *args* and *kwargs* against the function; return them as JSON data.

        :raises InvalidArguments: naming each parameter that does not fit.
        """
        if not args and not kwargs and self._fits_empty_call:
            return [], {}
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as error:
            named = re.search(r"'([^']+)'", str(error))
            raise InvalidArguments(
                f"Invalid arguments for task '{self.name}': {error}.",
                [{"parameter": named and named.group(1), "message": str(error)}],
            ) from None
        fields = dict(bound.arguments)
        try:
            model = self._arguments_model.model_validate(fields)
            # Only what was passed: a left-out parameter keeps the function's own default.
            given = {_ATTRIBUTE.format(key=name) for name in fields}
            data = model.model_dump(mode="json", by_alias=True, include=given)
            json.dumps(data, allow_nan=False)
        except pydantic.ValidationError as error:
            raise _invalid_arguments(self.name, error, self._var_keyword) from None
        except (ValueError, TypeError) as error:
            raise InvalidArguments(
                f"Invalid arguments for task '{self.name}': they are not JSON ({error}).",
                [{"parameter": None, "message": str(error)}],
            ) from None
        return self._split(data, set(fields))

    def load_arguments(
        self, args: list[t.Any], kwargs: dict[str, t.Any]
    ) -> tuple[list[t.Any], dict[str, t.Any]]:
        """Turn stored JSON arguments back into the types the function declares."""
        fields = dict(self._signature.bind(*args, **kwargs).arguments)
        model = self._arguments_model.model_validate(fields)
        values = {name: getattr(model, _ATTRIBUTE.format(key=name)) for name in fields}
        return self._split(values, set(fields))

    def dump_result(self, result: t.Any) -> t.Any:
        """The task's return value as JSON data.

        :raises TypeError: if the value cannot be represented as JSON.
        """
        if type(result) in self._plain_results:  # JSON as it is: pydantic would return it
            return result
        try:
            data = self._result_adapter.dump_python(result, mode="json", warnings=False)
            json.dumps(data, allow_nan=False)
        except (ValueError, TypeError) as error:  # pydantic's serialisation error is a ValueError
            raise TypeError(
                f"The result of task '{self.name}' is not JSON ({type(result).__name__}): {error}"
            ) from None
        return data

    def _split(
        self, values: dict[str, t.Any], present: set[str]
    ) -> tuple[list[t.Any], dict[str, t.Any]]:
        args: list[t.Any] = []
        kwargs: dict[str, t.Any] = {}
        # With values for *args, the parameters before it can only be passed by position.
        by_position = any(
            values.get(name)
            for name, parameter in self._signature.parameters.items()
            if parameter.kind is parameter.VAR_POSITIONAL
        )
        for name, parameter in self._signature.parameters.items():
            if name not in present:
                continue
            if parameter.kind is parameter.POSITIONAL_ONLY or (
                by_position and parameter.kind is parameter.POSITIONAL_OR_KEYWORD
            ):
                args.append(values[name])
            elif parameter.kind is parameter.VAR_POSITIONAL:
                args.extend(values[name])
            elif parameter.kind is parameter.VAR_KEYWORD:
                kwargs.update(values[name])
            else:
                kwargs[name] = values[name]
        return args, kwargs


def _arguments_model(
    task_name: str, func: Callable[..., t.Any], signature: inspect.Signature
) -> type[pydantic.BaseModel]:
    hints = _type_hints(task_name, func)
    fields: dict[str, t.Any] = {}
    for name, parameter in signature.parameters.items():
        annotation = hints.get(name, t.Any)
        field: t.Any
        if parameter.kind is parameter.VAR_POSITIONAL:
            field = pydantic.Field(default_factory=list, alias=name)
            annotation = list[annotation]  # type: ignore[valid-type]
        elif parameter.kind is parameter.VAR_KEYWORD:
            field = pydantic.Field(default_factory=dict, alias=name)
            annotation = dict[str, annotation]  # type: ignore[valid-type]
        elif parameter.default is parameter.empty:
            field = pydantic.Field(alias=name)
        else:
            field = pydantic.Field(default=parameter.default, alias=name)
        fields[_ATTRIBUTE.format(key=name)] = (annotation, field)
    # NaN and infinity are not JSON: refused, never stored as null (pydantic's default).
    config = pydantic.ConfigDict(
        extra="forbid", protected_namespaces=(), allow_inf_nan=False, ser_json_inf_nan="constants"
    )
    title = "".join(part.title() for part in task_name.split("_")) + "Arguments"
    try:
        return pydantic.create_model(title, __config__=config, **fields)
    except pydantic.PydanticSchemaGenerationError as error:
        raise TypeError(
            f"A parameter of task '{task_name}' has a type that cannot be JSON: {error}"
            " Use JSON types (str, int, float, bool, list, dict), dataclasses or pydantic models."
        ) from None


def _result_adapter(annotation: t.Any) -> pydantic.TypeAdapter[t.Any]:
    # NaN and infinity stay floats, so the JSON check refuses them instead of storing null.
    config = pydantic.ConfigDict(ser_json_inf_nan="constants")
    try:
        return pydantic.TypeAdapter(annotation, config=config)
    except pydantic.PydanticUserError:  # models carry their own config
        return pydantic.TypeAdapter(annotation)
    except pydantic.PydanticSchemaGenerationError:
        # The result is checked when the job ends; an odd annotation must not stop the task.
        return pydantic.TypeAdapter(t.Any, config=config)


def _plain_results(annotation: t.Any) -> frozenset[type]:
    # The result types dump_result may pass through unchanged: str, int and
    # bool when the return annotation is that very type or says nothing.
    if annotation is t.Any:
        return frozenset({str, int, bool})
    return frozenset({annotation}) & {str, int, bool}


def _type_hints(task_name: str, func: Callable[..., t.Any]) -> dict[str, t.Any]:
    try:
        return t.get_type_hints(func, include_extras=True)
    except NameError as error:
        raise TypeError(
            f"The type hints of task '{task_name}' cannot be resolved: {error}."
            " Import every type its signature names at module level."
        ) from None


def _invalid_arguments(
    task_name: str, error: pydantic.ValidationError, var_keyword: set[str]
) -> InvalidArguments:
    details: list[dict[str, t.Any]] = []
    for problem in error.errors(include_url=False, include_input=False):
        location = [str(part) for part in problem["loc"]]
        if len(location) > 1 and location[0] in var_keyword:
            location = location[1:]
        parameter = location[0] if location else None
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "Unexpected argument"
        details.append({"parameter": parameter, "path": location, "message": message})
    summary = "; ".join(f"'{'.'.join(item['path'])}': {item['message']}" for item in details)
    return InvalidArguments(f"Invalid arguments for task '{task_name}': {summary}.", details)
