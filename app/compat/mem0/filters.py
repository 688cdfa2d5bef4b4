"""Mem0's ``filters`` onto the native filter grammar (``app.retrieve.filters``).

Both grammars share their shape (``AND``/``OR``/``NOT``, the operators ``eq ne gt gte lt lte
in nin contains icontains``), so translation only renames what Mem0 means differently:

- ``app_id`` has no native scope: it is kept as the metadata key ``app_id``
  (``APP_ID_KEY``), so ``{"app_id": "x"}`` reads ``{"metadata.app_id": "x"}``;
- ``"*"`` (any non-null value) on a user, agent or run id reads ``{"contains": ""}``, which
  every set id matches and an unset one does not; on ``created_at``/``updated_at``, always
  set, it reads "on or after year 1000";
- ``NOT`` may hold a list (Mem0's form): the list is ANDed;
- in the OSS server's grammar (``loose``) any other key is a metadata key, as Mem0 OSS reads
  it; the Platform's grammar names its fields, and an unknown one stays unknown.

Everything else passes through untouched, so the native parser is the one judge of what is
valid: a bad operator or value is refused there, by name. What Mem0 filters on and
Anamnesis does not keep (``categories``, ``keywords``) and a ``"*"`` it cannot express
(a metadata key's) are refused here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.errors import InvalidFilter

APP_ID_KEY = "app_id"
SCOPE_KEYS = ("user_id", "agent_id", "run_id")
TIME_KEYS = ("created_at", "updated_at")
# Native fields and the native metadata forms, passed through as they are.
NATIVE_KEYS = frozenset({*SCOPE_KEYS, *TIME_KEYS, "kind", "metadata"})
NOT_KEPT = {"categories": "Anamnesis does not categorise memories",
            "keywords": "use search, which matches words and meaning together"}
WILDCARD = "*"
EVER = "1000-01-01T00:00:00+00:00"


def translate(filters: Mapping[str, Any] | None, *, loose: bool = False) -> Any:
    """The native filter object for Mem0's ``filters`` (None stays None)."""
    if filters is None:
        return None
    return _object(filters, "filters", loose)


def _object(raw: Any, where: str, loose: bool) -> Any:
    if not isinstance(raw, Mapping):
        return raw  # the native parser names what is wrong with it
    native: dict[str, Any] = {}
    for key, value in raw.items():
        here = f"{where}.{key}"
        if key in ("AND", "OR"):
            native[key] = ([_object(item, f"{here}[{i}]", loose) for i, item in enumerate(value)]
                           if isinstance(value, list) else value)
        elif key == "NOT":
            parts = value if isinstance(value, list) else [value]
            children = [_object(item, f"{here}[{i}]", loose) for i, item in enumerate(parts)]
            native[key] = children[0] if len(children) == 1 else {"AND": children}
        elif key in NOT_KEPT:
            raise InvalidFilter(f"{here}: not supported: {NOT_KEPT[key]}")
        elif key == APP_ID_KEY:
            native[f"metadata.{APP_ID_KEY}"] = _wildcard(value, here, None)
        elif key == "metadata" and isinstance(value, Mapping):
            native[key] = {sub: _wildcard(item, f"{here}.{sub}", None)
                           for sub, item in value.items()}
        elif key in NATIVE_KEYS or key.startswith("metadata."):
            native[key] = _wildcard(value, here, key)
        elif loose:
            native[f"metadata.{key}"] = _wildcard(value, here, None)
        else:
            native[key] = value  # unknown: the native parser names it
    return native


def _wildcard(value: Any, where: str, field: str | None) -> Any:
    """``"*"`` as the native grammar says "any non-null value" of ``field`` (None: a
    metadata key, where it cannot be said)."""
    if value != WILDCARD:
        return value
    if field in SCOPE_KEYS:
        return {"contains": ""}
    if field in TIME_KEYS:
        return {"gte": EVER}
    raise InvalidFilter(f"{where}: the wildcard '*' applies to user_id, agent_id, run_id, "
                        "created_at and updated_at only")


def entity_filters(ids: Mapping[str, str | None]) -> dict[str, Any] | None:
    """Top-level entity ids (``user_id=…`` beside ``filters``) as one Mem0 filter object."""
    given = {key: value for key, value in ids.items() if value is not None}
    return given or None


def conjoin(*parts: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Several Mem0 filter objects that must all hold, as one."""
    present = [dict(part) for part in parts if part]
    if not present:
        return None
    return present[0] if len(present) == 1 else {"AND": present}
