"""Search and list filters: the JSON a client sends, parsed into a small typed tree.

Grammar (Mem0-compatible)::

    filter    := {field: value | {op: value, ...}, ..., "AND": [filter], "OR": [filter],
                  "NOT": filter}
    field     := user_id | agent_id | run_id | kind | created_at | updated_at
                 | metadata.<key>[.<key>]
    op        := eq | ne | gt | gte | lt | lte | in | nin | contains | icontains

Several keys in one object are ANDed. ``{"metadata": {"k": v}}`` is shorthand for
``{"metadata.k": v}``. Anything else — an unknown field or operator, or a value of the wrong
type — raises :class:`InvalidFilter` naming it. The tree is compiled to SQL by the store and
evaluated exactly there: a filter never drops hits after ranking.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from app.domain import KINDS, OPERATORS, All, Any_, Condition, Filter, Not
from app.errors import InvalidFilter
from app.limits import MAX_FILTER_CONDITIONS, MAX_FILTER_DEPTH
from app.validation import in_range, json_problem, text_problem

ID_FIELDS = frozenset({"user_id", "agent_id", "run_id"})
KIND_OPERATORS = frozenset({"eq", "ne", "in", "nin"})
TIME_FIELDS = frozenset({"created_at", "updated_at"})
ID_OPERATORS = frozenset({"eq", "ne", "in", "nin", "contains", "icontains"})
TIME_OPERATORS = frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"})
MAX_KEY_CHARS = 128


def parse_filters(raw: Mapping[str, Any] | None) -> Filter | None:
    """The tree for ``raw``, or ``None`` when there is nothing to filter on."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise InvalidFilter("filters must be a JSON object")
    counter = [0]
    tree = _parse_object(raw, "filters", 0, counter)
    return tree


def _parse_object(raw: Mapping[str, Any], where: str, depth: int, counter: list[int]) -> Filter:
    if depth > MAX_FILTER_DEPTH:
        raise InvalidFilter(f"{where}: nested deeper than {MAX_FILTER_DEPTH} levels")
    if not raw:
        raise InvalidFilter(f"{where}: empty filter object")
    parts: list[Filter] = []
    for key, value in raw.items():
        here = f"{where}.{key}"
        if key in ("AND", "OR"):
            if not isinstance(value, list) or not value:
                raise InvalidFilter(f"{here}: must be a non-empty list of filter objects")
            children = []
            for index, item in enumerate(value):
                if not isinstance(item, Mapping):
                    raise InvalidFilter(f"{here}[{index}]: must be a filter object")
                children.append(_parse_object(item, f"{here}[{index}]", depth + 1, counter))
            parts.append(All(tuple(children)) if key == "AND" else Any_(tuple(children)))
        elif key == "NOT":
            if not isinstance(value, Mapping):
                raise InvalidFilter(f"{here}: must be a filter object")
            parts.append(Not(_parse_object(value, here, depth + 1, counter)))
        elif key == "metadata":
            if not isinstance(value, Mapping) or not value:
                raise InvalidFilter(f"{here}: must be an object of metadata keys")
            for sub_key, sub_value in value.items():
                parts.extend(_parse_field(f"metadata.{sub_key}", sub_value, where, counter))
        else:
            parts.extend(_parse_field(key, value, where, counter))
    return parts[0] if len(parts) == 1 else All(tuple(parts))


def _parse_field(key: str, value: Any, where: str, counter: list[int]) -> list[Condition]:
    field, path = _field(key, where)
    if isinstance(value, Mapping) and not (field == "metadata" and not _is_operator_object(value)):
        if not value:
            raise InvalidFilter(f"{where}.{key}: empty operator object")
        operations = list(value.items())
    else:
        operations = [("eq", value)]
    conditions = []
    for op, operand in operations:
        if op not in OPERATORS:
            allowed = ", ".join(sorted(OPERATORS))
            raise InvalidFilter(f"{where}.{key}: unknown operator {op!r} (use one of {allowed})")
        counter[0] += 1
        if counter[0] > MAX_FILTER_CONDITIONS:
            raise InvalidFilter(f"filters: more than {MAX_FILTER_CONDITIONS} conditions")
        conditions.append(Condition(field, op, _check_value(field, op, operand, f"{where}.{key}"),
                                    path))
    return conditions


def _is_operator_object(value: Mapping[str, Any]) -> bool:
    # A metadata value that is an object is an operator object as soon as one key is an
    # operator (so a misspelt second operator is an error, not a silent literal); with no
    # operator key it is a literal JSON object compared for equality.
    return not value or any(key in OPERATORS for key in value)


def _field(key: str, where: str) -> tuple[str, tuple[str, ...]]:
    problem = text_problem(key)
    if problem:
        raise InvalidFilter(f"{where}: filter keys {problem}")
    if key in ID_FIELDS or key in TIME_FIELDS or key == "kind":
        return key, ()
    if key.startswith("metadata."):
        path = tuple(key.split(".")[1:])
        if not path or any(not part or len(part) > MAX_KEY_CHARS for part in path):
            raise InvalidFilter(f"{where}: invalid metadata key {key!r}")
        if len(path) > MAX_FILTER_DEPTH:
            raise InvalidFilter(f"{where}: metadata key {key!r} is nested too deeply")
        return "metadata", path
    raise InvalidFilter(
        f"{where}: unknown filter field {key!r} (use user_id, agent_id, run_id, kind, "
        "created_at, updated_at, or metadata.<key>)"
    )


def _check_value(field: str, op: str, value: Any, where: str) -> Any:
    problem = json_problem(value)
    if problem:
        raise InvalidFilter(f"{where}: {problem}")
    if field in ID_FIELDS:
        if op not in ID_OPERATORS:
            raise InvalidFilter(f"{where}: operator {op!r} does not apply to {field}")
        return _strings(value, op, where)
    if field == "kind":
        if op not in KIND_OPERATORS:
            raise InvalidFilter(f"{where}: operator {op!r} does not apply to kind")
        kinds = _strings(value, op, where)
        for kind in [kinds] if isinstance(kinds, str) else kinds:
            if kind not in KINDS:
                raise InvalidFilter(f"{where}: kind is one of {', '.join(KINDS)}, "
                                    f"not {kind!r}")
        return kinds
    if field in TIME_FIELDS:
        if op not in TIME_OPERATORS:
            raise InvalidFilter(f"{where}: operator {op!r} does not apply to {field}")
        if op in ("in", "nin"):
            return [_timestamp(item, where) for item in _list(value, where)]
        return _timestamp(value, where)
    # metadata
    if op in ("in", "nin"):
        items = _list(value, where)
        for item in items:
            if isinstance(item, (list, dict)):
                raise InvalidFilter(f"{where}: {op} takes a list of scalar values")
        return items
    if op in ("contains", "icontains"):
        if not isinstance(value, str):
            raise InvalidFilter(f"{where}: {op} takes a string, got {_type_name(value)}")
        return value
    if op in ("gt", "gte", "lt", "lte"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise InvalidFilter(f"{where}: {op} takes a number or a string, "
                                f"got {_type_name(value)}")
        return value
    return value


def _strings(value: Any, op: str, where: str) -> str | list[str]:
    if op in ("in", "nin"):
        items = _list(value, where)
        if not all(isinstance(item, str) for item in items):
            raise InvalidFilter(f"{where}: {op} takes a list of strings")
        return items
    if not isinstance(value, str):
        raise InvalidFilter(f"{where}: expected a string, got {_type_name(value)}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidFilter(f"{where}: expected a list, got {_type_name(value)}")
    if len(value) > 1000:
        raise InvalidFilter(f"{where}: list longer than 1000 values")
    return value


def _timestamp(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidFilter(f"{where}: expected an ISO 8601 timestamp, got {_type_name(value)}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidFilter(f"{where}: {value!r} is not an ISO 8601 timestamp") from None
    try:
        # The range every timestamp the API takes keeps to (``app.validation``).
        return in_range(parsed).astimezone(UTC)
    except ValueError as exc:
        raise InvalidFilter(f"{where}: {value!r}: {exc}") from None


def _type_name(value: Any) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "list",
             dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)
