"""The OpenAPI 3.1 document of the HTTP API, with each task's parameters as JSON Schema."""

from __future__ import annotations

import inspect
import re
from typing import Any

from .record import ErrorType, JobStatus
from .task import Task

_REF = "#/components/schemas/{model}"
#: Where a task's schema points to its nested models before they get their names here.
_LOCAL_REF = "#/$defs/"
#: What an OpenAPI component name may not hold.
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9._-]")

_ERROR_CODES = {
    "400": "Malformed JSON, or arguments that do not fit the task (named in the message).",
    "403": "Not authorized.",
    "404": "Unknown task or job.",
    "405": "Wrong method.",
    "409": "A unique task already has a pending or running job; Location points to it.",
    "413": "The body is larger than JOBRUNNER_MAX_PAYLOAD.",
    "415": "The body is not JSON.",
    "503": "The job backend is unreachable; try again after Retry-After.",
}

_TIME = {"type": "string", "format": "date-time"}
_DELAY = {"type": "number", "minimum": 0, "description": "Seconds before the job may start."}
_RUN_AT = {
    "type": "string",
    "format": "date-time",
    "description": "When the job may start: ISO-8601 with a UTC offset. Not with delay.",
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "details": {}},
    },
    "Accepted": {
        "type": "object",
        "required": ["job_id", "status", "message", "polling_url"],
        "properties": {
            "job_id": {"type": "string", "format": "uuid"},
            "status": {"type": "string", "enum": [status.value for status in JobStatus]},
            "message": {"type": "string"},
            "polling_url": {"type": "string"},
        },
    },
    "Job": {
        "type": "object",
        "required": ["job_id", "task", "status", "created_at", "updated_at", "attempts"],
        "properties": {
            "job_id": {"type": "string", "format": "uuid"},
            "task": {"type": "string"},
            "status": {"type": "string", "enum": [status.value for status in JobStatus]},
            "percentage": {"type": "number", "minimum": 0, "maximum": 100},
            "message": {"type": "string"},
            "items_processed": {"type": "integer"},
            "total_items": {"type": "integer"},
            "created_at": _TIME,
            "started_at": _TIME,
            "updated_at": _TIME,
            "completed_at": _TIME,
            "failed_at": _TIME,
            "cancelled_at": _TIME,
            # A delayed job that has not started yet: when it may start.
            "scheduled_for": _TIME,
            "result": {},
            "error": {"type": "string"},
            "error_type": {"type": "string", "enum": [kind.value for kind in ErrorType]},
            "error_details": {"type": "string"},
            "attempts": {"type": "integer"},
            "cancel_requested": {"type": "boolean"},
            "polling_url": {"type": "string"},
        },
    },
    "JobPage": {
        "type": "object",
        "required": ["jobs", "next_cursor"],
        "properties": {
            "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
            "next_cursor": {"type": ["string", "null"]},
        },
    },
}


def openapi_document(prefix: str, tasks: list[Task[Any, Any]]) -> dict[str, Any]:
    """The OpenAPI 3.1 document for an API at *prefix* that exposes *tasks*."""
    schemas = dict(_SCHEMAS)
    paths: dict[str, Any] = {
        prefix: {
            "post": _operation(
                "Submit a job of any HTTP task.",
                {
                    "type": "object",
                    "required": ["task"],
                    "additionalProperties": False,
                    "properties": {
                        "task": {"type": "string", "enum": [task.name for task in tasks]},
                        "args": {"type": "array"},
                        "kwargs": {"type": "object"},
                        "delay": _DELAY,
                        "run_at": _RUN_AT,
                    },
                },
                "202",
                "Accepted",
                required=True,
            ),
            "get": {
                "summary": "List jobs, newest first.",
                "parameters": [
                    _query("status", {"type": "string", "enum": [s.value for s in JobStatus]}),
                    _query("task", {"type": "string"}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}),
                    _query("cursor", {"type": "string"}),
                ],
                "responses": {"200": _json("A page of jobs.", "JobPage"), **_errors()},
            },
        },
        f"{prefix}/{{job_id}}": {
            "get": {
                "summary": "Read a job's status document.",
                "parameters": [_job_id()],
                "responses": {"200": _json("The job.", "Job"), **_errors()},
            },
        },
        f"{prefix}/{{job_id}}/cancel": {
            "post": {
                "summary": "Cancel a job.",
                "parameters": [_job_id()],
                "responses": {"202": _json("Cancel requested.", "Job"), **_errors()},
            },
        },
        f"{prefix}/{{job_id}}/events": {
            "get": {
                "summary": "Follow a job: Server-Sent Events of its status until it ends.",
                "description": (
                    "Each change is an 'event: status' message whose data is the Job document"
                    " and whose id is the job's revision; send it back as Last-Event-ID (or the"
                    " last_event_id query parameter) to resume. A ': keep-alive' comment comes"
                    " every JOBRUNNER_EVENTS_HEARTBEAT seconds without a change."
                ),
                "parameters": [
                    _job_id(),
                    {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
                    _query("last_event_id", {"type": "string", "pattern": "^[0-9]+$"}),
                ],
                "responses": {
                    "200": {
                        "description": "The event stream; it ends after the final state.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "204": {"description": "The client already had the final state."},
                    **_errors(),
                },
            },
        },
    }
    for task in tasks:
        body = _keyword_body(task)
        if body is None:  # only 'POST {prefix}' with "args" can submit it
            continue
        name = _add_schemas(schemas, f"{task.name.title().replace('_', '')}Arguments", body)
        summary = (task.func.__doc__ or f"Submit a job of {task.name}.").strip().splitlines()[0]
        operation = _operation(
            summary,
            {"$ref": _REF.format(model=name)},
            "202",
            "Accepted",
            # No body is no arguments: that fits only a task that requires none.
            required=bool(body.get("required")),
        )
        # The body is the task's own arguments: when the job starts goes in the query.
        operation["parameters"] += [_query("delay", _DELAY), _query("run_at", _RUN_AT)]
        paths[f"{prefix}/{task.name.replace('_', '-')}"] = {"post": operation}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Jobs API", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _keyword_body(task: Task[Any, Any]) -> dict[str, Any] | None:
    """The schema of the body ``POST {prefix}/<task-name>`` takes: the keyword arguments.

    Positional-only parameters and ``*args`` cannot be passed by keyword, and
    the keys of ``**kwargs`` are any others. ``None`` if a positional-only
    parameter is required, so that no body fits.
    """
    schema = task.parameters_schema(ref_template=_LOCAL_REF + "{model}")
    properties = schema.get("properties", {})
    for name, parameter in inspect.signature(task.func).parameters.items():
        if parameter.kind is parameter.POSITIONAL_ONLY and name in schema.get("required", []):
            return None
        if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.VAR_POSITIONAL):
            del properties[name]
        elif parameter.kind is parameter.VAR_KEYWORD:
            schema["additionalProperties"] = properties.pop(name).get("additionalProperties", True)
    return schema


def _add_schemas(schemas: dict[str, Any], name: str, body: dict[str, Any]) -> str:
    """Add a task's *body* schema and its nested models to *schemas*; returns the body's name.

    Each keeps its own name unless a different schema has it already (the
    API's own ``Job`` or ``Error``, or another task's model of the same name):
    then it is numbered.
    """
    definitions: dict[str, Any] = body.pop("$defs", {})
    body_key = "\0"  # never the name of a nested model
    definitions[body_key] = body
    wanted = {key: _NOT_IN_NAME.sub("", key) or "Model" for key in definitions}
    wanted[body_key] = _NOT_IN_NAME.sub("", name) or "Arguments"
    renamed: set[str] = set()
    while True:
        names: dict[str, str] = {}
        for key in definitions:
            candidate, number = wanted[key], 2
            while (key in renamed and candidate in schemas) or candidate in names.values():
                candidate = f"{wanted[key]}{number}"
                number += 1
            names[key] = candidate
        resolved = {key: _resolve_refs(value, names) for key, value in definitions.items()}
        clashes = {
            key for key, value in resolved.items() if schemas.get(names[key], value) != value
        }
        if not clashes:
            break
        renamed |= clashes
    for key, value in resolved.items():
        schemas[names[key]] = value
    return names[body_key]


def _resolve_refs(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {
            key: _REF.format(model=names[value[len(_LOCAL_REF) :]])
            if key == "$ref" and isinstance(value, str) and value.startswith(_LOCAL_REF)
            else _resolve_refs(value, names)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_resolve_refs(item, names) for item in node]
    return node


def _operation(
    summary: str, body: dict[str, Any], code: str, answer: str, *, required: bool
) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            },
        ],
        "requestBody": {"required": required, "content": {"application/json": {"schema": body}}},
        "responses": {code: _json("Job accepted for processing.", answer), **_errors()},
    }


def _json(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model=schema)}}},
    }


def _errors() -> dict[str, Any]:
    return {code: _json(text, "Error") for code, text in _ERROR_CODES.items()}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


def _job_id() -> dict[str, Any]:
    return {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
