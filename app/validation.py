"""Input Postgres (or Python) cannot store or compute with, rejected up front as 422, by the
same types on every route: text with NUL characters or lone surrogates (half of a UTF-16
pair, which UTF-8 cannot encode), JSON with non-finite numbers or nested past
``MAX_JSON_DEPTH``, and timestamps that leave years 1 to 9999 once put in UTC (year 9999 at
-14:00 is year 10000 there)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator

from app.limits import MAX_JSON_DEPTH

_SURROGATE = re.compile("[\ud800-\udfff]")


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or None when it can."""
    if "\x00" in value:
        return "must not contain NUL characters"
    if _SURROGATE.search(value):
        return "must not contain lone surrogates (half of a UTF-16 pair)"
    return None


def reject_unstorable(value: str) -> str:
    problem = text_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _optional_storable(value: str | None) -> str | None:
    return None if value is None else reject_unstorable(value)


def json_problem(value: Any, depth: int = 0) -> str | None:
    """Why ``value`` cannot be stored as JSON in Postgres, or None when it can."""
    if depth > MAX_JSON_DEPTH:
        return f"JSON must not nest deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, str):
        problem = text_problem(value)
        return f"strings {problem}" if problem else None
    if isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite (no NaN or Infinity)"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = json_problem(key, depth + 1) or json_problem(item, depth + 1)
            if problem:
                return problem
    if isinstance(value, list):
        for item in value:
            problem = json_problem(item, depth + 1)
            if problem:
                return problem
    return None


def in_range(value: datetime) -> datetime:
    """The moment with a time zone (none: UTC), if it is within years 1 to 9999 in UTC."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        aware.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp out of range: years 1 to 9999 in UTC") from None
    return aware


def _optional_in_range(value: datetime | None) -> datetime | None:
    return None if value is None else in_range(value)


StorableStr = Annotated[str, AfterValidator(reject_unstorable)]
OptionalStorableStr = Annotated[str | None, AfterValidator(_optional_storable)]
Timestamp = Annotated[datetime, AfterValidator(in_range)]
OptionalTimestamp = Annotated[datetime | None, AfterValidator(_optional_in_range)]
