"""Input Postgres (or Python) cannot store or compute with, rejected up front as 422, by the
same types on every route: text with NUL characters or lone surrogates (half of a UTF-16
pair, which UTF-8 cannot encode), JSON with non-finite numbers or nested past
``MAX_JSON_DEPTH``, and timestamps outside years 1000 to 9998 in UTC: Python's datetime
ends at years 1 and 9999, and the service computes with the times it is given (the turn said
up to six hours before, a date said "last year"), so a margin keeps every sum in range."""

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


EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
RANGE_PROBLEM = "timestamp out of range: years 1000 to 9998 in UTC"


def in_range(value: datetime) -> datetime:
    """The moment with a time zone (none: UTC), if it is within years 1000 to 9998 in UTC."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    try:
        instant = aware.astimezone(UTC)
    except OverflowError:
        raise ValueError(RANGE_PROBLEM) from None
    if not EARLIEST <= instant <= LATEST:
        raise ValueError(RANGE_PROBLEM)
    return aware


def _optional_in_range(value: datetime | None) -> datetime | None:
    return None if value is None else in_range(value)


StorableStr = Annotated[str, AfterValidator(reject_unstorable)]
OptionalStorableStr = Annotated[str | None, AfterValidator(_optional_storable)]
Timestamp = Annotated[datetime, AfterValidator(in_range)]
OptionalTimestamp = Annotated[datetime | None, AfterValidator(_optional_in_range)]
