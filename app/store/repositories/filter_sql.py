"""Compiles a parsed filter tree into a SQL boolean over ``memories``.

Under ``NOT`` every leaf is made two-valued (``COALESCE(…, false)``), so negation is exact: a
memory without the key satisfies ``NOT {eq}``, never silently neither. Elsewhere a NULL leaf
already acts as false, and leaves stay bare so Postgres can use the scope and metadata
indexes for them — unless ``two_valued`` asks for COALESCE everywhere, which also hides those
indexes from the planner (the vector search uses that to stay on its HNSW index).
``ne``/``nin`` match a missing key by construction. Values are always bound parameters, and
a list is one array parameter, not one per value: Postgres takes at most 32,767 parameters a
statement, which 100 conditions of 1,000 values each would pass.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.sql.elements import ColumnElement

from app.domain import All, Any_, Condition, Filter, Not
from app.store.models import Memory

_COLUMNS: dict[str, Any] = {
    "user_id": Memory.user_id,
    "agent_id": Memory.agent_id,
    "run_id": Memory.run_id,
    "kind": Memory.kind,
    "created_at": Memory.created_at,
    "updated_at": Memory.updated_at,
}


def compile_filter(tree: Filter, *, two_valued: bool = False) -> ColumnElement[bool]:
    if isinstance(tree, All):
        return sa.and_(*(compile_filter(part, two_valued=two_valued) for part in tree.parts))
    if isinstance(tree, Any_):
        return sa.or_(*(compile_filter(part, two_valued=two_valued) for part in tree.parts))
    if isinstance(tree, Not):
        return sa.not_(compile_filter(tree.part, two_valued=True))
    expression = _metadata(tree) if tree.field == "metadata" else _column(tree)
    return sa.func.coalesce(expression, sa.false()) if two_valued else expression


def any_of(column: Any, values: Sequence[Any], item: Any) -> ColumnElement[bool]:
    """``column = ANY(:values)``: one array parameter of ``item``-typed values, however
    many."""
    array = sa.cast(sa.literal(list(values), ARRAY(item)), ARRAY(item))
    matches: ColumnElement[bool] = column == sa.any_(array)
    return matches


def _like_pattern(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _column(condition: Condition) -> ColumnElement[bool]:
    column = _COLUMNS[condition.field]
    value = condition.value
    match condition.op:
        case "eq":
            return column == value  # type: ignore[no-any-return]
        case "ne":
            return column.is_distinct_from(value)  # type: ignore[no-any-return]
        case "gt":
            return column > value  # type: ignore[no-any-return]
        case "gte":
            return column >= value  # type: ignore[no-any-return]
        case "lt":
            return column < value  # type: ignore[no-any-return]
        case "lte":
            return column <= value  # type: ignore[no-any-return]
        case "in":
            return any_of(column, value, column.type)
        case "nin":
            return sa.or_(column.is_(None), sa.not_(sa.func.coalesce(
                any_of(column, value, column.type), sa.false())))
        case "contains":
            return column.like(_like_pattern(value), escape="\\")  # type: ignore[no-any-return]
        case "icontains":
            return column.ilike(_like_pattern(value), escape="\\")  # type: ignore[no-any-return]
    raise AssertionError(condition.op)


def _json(value: Any) -> ColumnElement[Any]:
    return sa.cast(sa.literal(json.dumps(value), sa.Text), JSONB)


def _metadata(condition: Condition) -> ColumnElement[bool]:
    path = list(condition.path)
    node = Memory.metadata_.op("#>")(sa.cast(sa.literal(path, sa.ARRAY(sa.Text)),
                                             sa.ARRAY(sa.Text)))
    text = Memory.metadata_.op("#>>", return_type=sa.Text)(
        sa.cast(sa.literal(path, sa.ARRAY(sa.Text)), sa.ARRAY(sa.Text)))
    kind = sa.func.jsonb_typeof(node)
    value = condition.value

    def equal(item: Any) -> ColumnElement[bool]:
        exact = node == _json(item)
        if isinstance(item, (dict, list)):
            return exact
        # The containment test lets the GIN index narrow rows before the exact comparison.
        nested: Any = item
        for key in reversed(path):
            nested = {key: nested}
        return sa.and_(Memory.metadata_.bool_op("@>")(_json(nested)), exact)

    def one_of(items: list[Any]) -> ColumnElement[bool]:
        # Each value as JSON text, the lot one text[] parameter compared as jsonb.
        texts = sa.cast(sa.literal([json.dumps(i) for i in items], ARRAY(sa.Text)),
                        ARRAY(sa.Text))
        return node == sa.any_(sa.cast(texts, ARRAY(JSONB)))

    match condition.op:
        case "eq":
            return equal(value)
        case "ne":
            return sa.not_(sa.func.coalesce(equal(value), sa.false()))
        case "in":
            return one_of(value) if value else sa.false()
        case "nin":
            if not value:
                return sa.true()
            return sa.not_(sa.func.coalesce(one_of(value), sa.false()))
        case "gt" | "gte" | "lt" | "lte":
            expected = "string" if isinstance(value, str) else "number"
            operator = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}[condition.op]
            return sa.and_(kind == expected, node.bool_op(operator)(_json(value)))
        case "contains":
            return sa.or_(
                sa.and_(kind == "string", text.like(_like_pattern(value), escape="\\")),
                sa.and_(kind == "array", node.bool_op("@>")(_json([value]))),
            )
        case "icontains":
            return sa.and_(kind == "string", text.ilike(_like_pattern(value), escape="\\"))
    raise AssertionError(condition.op)
