"""Input Postgres cannot store, rejected up front as 422: NUL characters in text, and
non-finite numbers in JSON."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator


def reject_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _optional_no_nul(value: str | None) -> str | None:
    return None if value is None else reject_nul(value)


def json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be stored as JSON in Postgres, or None when it can."""
    if isinstance(value, str):
        return "strings must not contain NUL characters" if "\x00" in value else None
    if isinstance(value, float) and not math.isfinite(value):
        return "numbers must be finite (no NaN or Infinity)"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = json_problem(key) or json_problem(item)
            if problem:
                return problem
    if isinstance(value, list):
        for item in value:
            problem = json_problem(item)
            if problem:
                return problem
    return None


StorableStr = Annotated[str, AfterValidator(reject_nul)]
OptionalStorableStr = Annotated[str | None, AfterValidator(_optional_no_nul)]
