"""Reading the JSON clients send: only values that JSON can carry back out."""

from __future__ import annotations

import json
from typing import Any


def loads(text: str | bytes) -> Any:
    """Parse *text* as JSON, refusing ``NaN``, ``Infinity`` and numbers past a float's range.

    Such values would be stored as ``null``, or not at all, so a client's
    input holding them is refused rather than changed.

    :raises ValueError: saying what is wrong, in words fit for the client.
    """
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:20]} is too large")
    return value
