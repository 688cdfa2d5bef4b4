"""``parse_filters``: the JSON filter grammar parsed into a typed tree, and every way it refuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.domain import OPERATORS, All, Any_, Condition, Not, conjoin
from app.errors import InvalidFilter
from app.limits import MAX_FILTER_CONDITIONS, MAX_FILTER_DEPTH
from app.retrieve.filters import parse_filters

ID_FIELDS = ("user_id", "agent_id", "run_id")
TIME_FIELDS = ("created_at", "updated_at")
STAMP = "2024-05-01T12:30:00+00:00"
STAMP_DT = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)


def invalid(raw: Any) -> InvalidFilter:
    with pytest.raises(InvalidFilter) as caught:
        parse_filters(raw)
    assert caught.value.code == "invalid_filter"
    assert caught.value.status_code == 422
    return caught.value


# --- accepted -------------------------------------------------------------------------------

def test_none_is_no_filter() -> None:
    assert parse_filters(None) is None


def test_operator_set_is_the_documented_one() -> None:
    assert {"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains",
            "icontains"} == OPERATORS


@pytest.mark.parametrize("field", ID_FIELDS)
def test_bare_value_on_id_field_is_eq(field: str) -> None:
    assert parse_filters({field: "x"}) == Condition(field, "eq", "x")


@pytest.mark.parametrize("field", ID_FIELDS)
@pytest.mark.parametrize(("op", "value"), [
    ("eq", "alice"), ("ne", "alice"), ("in", ["alice", "bob"]), ("nin", ["alice"]),
    ("in", []), ("contains", "lic"), ("icontains", "LIC"),
])
def test_id_field_operators(field: str, op: str, value: Any) -> None:
    assert parse_filters({field: {op: value}}) == Condition(field, op, value)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", TIME_FIELDS)
@pytest.mark.parametrize("op", ["eq", "ne", "gt", "gte", "lt", "lte"])
def test_time_field_scalar_operators(field: str, op: str) -> None:
    assert parse_filters({field: {op: STAMP}}) == Condition(field, op, STAMP_DT)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", TIME_FIELDS)
@pytest.mark.parametrize("op", ["in", "nin"])
def test_time_field_list_operators(field: str, op: str) -> None:
    later = "2024-05-02T00:00:00Z"
    tree = parse_filters({field: {op: [STAMP, later]}})
    assert tree == Condition(field, op, [STAMP_DT, datetime(2024, 5, 2, tzinfo=UTC)])  # type: ignore[arg-type]


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-05-01T12:30:00Z", STAMP_DT),
    ("2024-05-01T12:30:00+00:00", STAMP_DT),
    ("2024-05-01T14:30:00+02:00", STAMP_DT),
    ("2024-05-01T12:30:00", STAMP_DT),  # naive means UTC
    ("2024-05-01T12:30:00.250000Z", STAMP_DT + timedelta(milliseconds=250)),
    ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
])
def test_timestamp_forms(text: str, expected: datetime) -> None:
    condition = parse_filters({"created_at": {"gte": text}})
    assert isinstance(condition, Condition)
    assert condition.value == expected
    assert condition.value.tzinfo is not None


def test_timestamps_are_held_in_utc() -> None:
    condition = parse_filters({"updated_at": "2024-05-01T14:30:00+02:00"})
    assert isinstance(condition, Condition)
    assert condition.op == "eq"
    assert condition.value == STAMP_DT
    assert condition.value.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["1000-01-01T00:00:00Z", "9998-12-31T23:59:59.999999Z",
                                  "0999-12-31T23:00:00-01:00", "9999-01-01T01:00:00+02:00"])
def test_extreme_timestamps_that_fit(text: str) -> None:
    """Years 1000 to 9998 in UTC (what the time says once put in UTC)."""
    assert parse_filters({"created_at": {"lt": text}}) is not None


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00",
                                  "0999-12-31T23:59:59Z", "9999-01-01T00:00:00Z",
                                  "1000-01-01T00:30:00+01:00"])
def test_timestamp_out_of_range_in_utc(text: str) -> None:
    detail = invalid({"created_at": {"gt": text}}).detail
    assert "filters.created_at" in detail
    assert "out of range" in detail


@pytest.mark.parametrize(("op", "value"), [
    ("eq", "red"), ("eq", 3), ("eq", 2.5), ("eq", True), ("eq", None), ("eq", ["a", "b"]),
    ("eq", {"nested": 1}), ("ne", "red"), ("ne", 0), ("ne", False),
    ("gt", 1), ("gte", 1.5), ("lt", "m"), ("lte", -3),
    ("in", ["red", 1, 2.5, True, None]), ("nin", ["red"]), ("in", []),
    ("contains", "x"), ("icontains", "X"),
])
def test_metadata_operators(op: str, value: Any) -> None:
    tree = parse_filters({"metadata.k": {op: value}})
    assert tree == Condition("metadata", op, value, ("k",))  # type: ignore[arg-type]
    assert isinstance(tree, Condition)
    assert tree.name == "metadata.k"


@pytest.mark.parametrize("value", ["red", 3, 2.5, True, False, None, ["a"], []])
def test_metadata_bare_value_is_eq(value: Any) -> None:
    assert parse_filters({"metadata.k": value}) == Condition("metadata", "eq", value, ("k",))


def test_nested_metadata_key() -> None:
    tree = parse_filters({"metadata.a.b.c": {"gt": 2}})
    assert tree == Condition("metadata", "gt", 2, ("a", "b", "c"))
    assert isinstance(tree, Condition)
    assert tree.name == "metadata.a.b.c"


def test_metadata_object_that_is_not_operators_is_a_literal() -> None:
    assert parse_filters({"metadata.k": {"a": 1}}) == Condition("metadata", "eq", {"a": 1}, ("k",))


def test_metadata_shorthand() -> None:
    assert parse_filters({"metadata": {"k": "v"}}) == Condition("metadata", "eq", "v", ("k",))
    assert parse_filters({"metadata": {"k": {"gte": 3}}}) == Condition("metadata", "gte", 3,
                                                                        ("k",))
    assert parse_filters({"metadata": {"a.b": 1}}) == Condition("metadata", "eq", 1, ("a", "b"))
    assert parse_filters({"metadata": {"a": {"b": 1}}}) == Condition("metadata", "eq",
                                                                     {"b": 1}, ("a",))


def test_metadata_shorthand_with_several_keys_is_and() -> None:
    assert parse_filters({"metadata": {"k": 1, "j": {"ne": 2}}}) == All((
        Condition("metadata", "eq", 1, ("k",)), Condition("metadata", "ne", 2, ("j",))))


def test_multi_operator_object_is_and() -> None:
    assert parse_filters({"metadata.n": {"gte": 1, "lt": 5}}) == All((
        Condition("metadata", "gte", 1, ("n",)), Condition("metadata", "lt", 5, ("n",))))
    assert parse_filters({"created_at": {"gt": STAMP, "ne": STAMP}}) == All((
        Condition("created_at", "gt", STAMP_DT), Condition("created_at", "ne", STAMP_DT)))


def test_several_keys_are_and() -> None:
    assert parse_filters({"user_id": "u", "metadata.k": 1, "created_at": {"lt": STAMP}}) == All((
        Condition("user_id", "eq", "u"), Condition("metadata", "eq", 1, ("k",)),
        Condition("created_at", "lt", STAMP_DT)))


def test_and_or_not() -> None:
    assert parse_filters({"AND": [{"user_id": "u"}, {"agent_id": "a"}]}) == All((
        Condition("user_id", "eq", "u"), Condition("agent_id", "eq", "a")))
    assert parse_filters({"OR": [{"user_id": "u"}, {"agent_id": "a"}]}) == Any_((
        Condition("user_id", "eq", "u"), Condition("agent_id", "eq", "a")))
    assert parse_filters({"NOT": {"user_id": "u"}}) == Not(Condition("user_id", "eq", "u"))
    assert parse_filters({"OR": [{"user_id": "u"}]}) == Any_((Condition("user_id", "eq", "u"),))


def test_deep_nesting() -> None:
    raw = {
        "OR": [
            {"AND": [{"metadata.a": 1}, {"NOT": {"metadata.b": {"in": [1, 2]}}}]},
            {"NOT": {"OR": [{"run_id": "r"}, {"AND": [{"agent_id": {"ne": "x"}}]}]}},
        ],
        "user_id": "u",
    }
    assert parse_filters(raw) == All((
        Any_((
            All((Condition("metadata", "eq", 1, ("a",)),
                 Not(Condition("metadata", "in", [1, 2], ("b",))))),
            Not(Any_((Condition("run_id", "eq", "r"),
                      All((Condition("agent_id", "ne", "x"),))))),
        )),
        Condition("user_id", "eq", "u"),
    ))


def test_logical_keys_mix_with_fields() -> None:
    tree = parse_filters({"NOT": {"metadata.k": 1}, "user_id": "u", "AND": [{"run_id": "r"}]})
    assert tree == All((Not(Condition("metadata", "eq", 1, ("k",))),
                        Condition("user_id", "eq", "u"), All((Condition("run_id", "eq", "r"),))))


def nest_not(levels: int) -> dict[str, Any]:
    raw: dict[str, Any] = {"user_id": "u"}
    for _ in range(levels):
        raw = {"NOT": raw}
    return raw


def test_nesting_up_to_the_limit_is_accepted() -> None:
    tree = parse_filters(nest_not(MAX_FILTER_DEPTH))
    for _ in range(MAX_FILTER_DEPTH):
        assert isinstance(tree, Not)
        tree = tree.part
    assert tree == Condition("user_id", "eq", "u")


def test_conditions_up_to_the_limit_are_accepted() -> None:
    tree = parse_filters({"metadata": {f"k{i}": i for i in range(MAX_FILTER_CONDITIONS)}})
    assert isinstance(tree, All)
    assert len(tree.parts) == MAX_FILTER_CONDITIONS


def test_conjoin() -> None:
    a, b = Condition("user_id", "eq", "u"), Condition("run_id", "eq", "r")
    assert conjoin() is None
    assert conjoin(None, None) is None
    assert conjoin(a, None) == a
    assert conjoin(None, a, b) == All((a, b))


# --- refused --------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [[], "user_id", 3])
def test_not_an_object(raw: Any) -> None:
    assert "JSON object" in invalid(raw).detail


@pytest.mark.parametrize("field", ["bogus", "userid", "metadata_x", "id", "text", "score"])
def test_unknown_field(field: str) -> None:
    detail = invalid({field: "x"}).detail
    assert repr(field) in detail
    assert "unknown filter field" in detail


def test_unknown_field_inside_logic_names_its_path() -> None:
    detail = invalid({"OR": [{"user_id": "u"}, {"NOT": {"colour": "red"}}]}).detail
    assert "'colour'" in detail
    assert "filters.OR[1].NOT" in detail


@pytest.mark.parametrize("field", [*ID_FIELDS, *TIME_FIELDS])
@pytest.mark.parametrize("op", ["equals", "$eq", "EQ", "like", "between"])
def test_unknown_operator(field: str, op: str) -> None:
    detail = invalid({field: {op: "x"}}).detail
    assert repr(op) in detail
    assert "unknown operator" in detail
    assert field in detail


def test_misspelt_operator_beside_a_known_one_is_an_error_not_a_literal() -> None:
    # One operator key makes it an operator object, so a typo cannot silently match nothing.
    detail = invalid({"metadata.k": {"gte": 1, "lesser": 3}}).detail
    assert "unknown operator 'lesser'" in detail


@pytest.mark.parametrize("field", ID_FIELDS)
@pytest.mark.parametrize("op", ["gt", "gte", "lt", "lte"])
def test_order_operators_do_not_apply_to_ids(field: str, op: str) -> None:
    detail = invalid({field: {op: "m"}}).detail
    assert f"operator {op!r} does not apply to {field}" in detail


@pytest.mark.parametrize("field", TIME_FIELDS)
@pytest.mark.parametrize("op", ["contains", "icontains"])
def test_text_operators_do_not_apply_to_times(field: str, op: str) -> None:
    detail = invalid({field: {op: "2024"}}).detail
    assert f"operator {op!r} does not apply to {field}" in detail


@pytest.mark.parametrize("op", ["eq", "ne", "contains", "icontains"])
@pytest.mark.parametrize("value", [3, None, True, ["a"], {"a": 1}])
def test_id_value_must_be_a_string(op: str, value: Any) -> None:
    detail = invalid({"run_id": {op: value}}).detail
    assert "filters.run_id: expected a string" in detail
    if not isinstance(value, dict):
        assert "expected a string" in invalid({"run_id": value}).detail


@pytest.mark.parametrize("field", ["user_id", "created_at", "metadata.k"])
@pytest.mark.parametrize("op", ["in", "nin"])
@pytest.mark.parametrize("value", ["a", 3, None, {"a": 1}])
def test_in_and_nin_need_a_list(field: str, op: str, value: Any) -> None:
    detail = invalid({field: {op: value}}).detail
    assert "expected a list" in detail
    assert field in detail


def test_in_list_items_must_fit_the_field() -> None:
    assert "list of strings" in invalid({"agent_id": {"in": ["a", 1]}}).detail
    assert "list of scalar values" in invalid({"metadata.k": {"nin": [1, [2]]}}).detail
    assert "list of scalar values" in invalid({"metadata.k": {"in": [{"a": 1}]}}).detail
    assert "ISO 8601" in invalid({"created_at": {"in": [STAMP, "yesterday"]}}).detail


def test_in_list_is_bounded() -> None:
    assert "longer than 1000" in invalid({"metadata.k": {"in": list(range(1001))}}).detail
    assert parse_filters({"metadata.k": {"in": list(range(1000))}}) is not None


@pytest.mark.parametrize("field", ["user_id", "metadata.k"])
@pytest.mark.parametrize("op", ["contains", "icontains"])
@pytest.mark.parametrize("value", [3, 1.5, True, None, ["a"], {"a": "b"}])
def test_contains_needs_a_string(field: str, op: str, value: Any) -> None:
    detail = invalid({field: {op: value}}).detail
    assert field in detail
    assert "string" in detail


@pytest.mark.parametrize("op", ["gt", "gte", "lt", "lte"])
@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}])
def test_metadata_order_needs_number_or_string(op: str, value: Any) -> None:
    raw = {"metadata.k": {op: value}}
    detail = invalid(raw).detail
    assert "metadata.k" in detail
    assert f"{op} takes a number or a string" in detail


@pytest.mark.parametrize("field", TIME_FIELDS)
@pytest.mark.parametrize("value", ["yesterday", "2024-13-01", "2024-05-01T25:00:00", "", 1714566600,
                                   None, True, ["2024-05-01"]])
def test_bad_timestamp(field: str, value: Any) -> None:
    detail = invalid({field: {"gt": value}}).detail
    assert field in detail
    assert "ISO 8601" in detail


@pytest.mark.parametrize("raw", [
    {}, {"AND": [{}]}, {"NOT": {}}, {"OR": [{"user_id": "u"}, {}]},
])
def test_empty_filter_object(raw: dict[str, Any]) -> None:
    assert "empty filter object" in invalid(raw).detail


@pytest.mark.parametrize("raw", [{"user_id": {}}, {"created_at": {}}, {"metadata.k": {}},
                                 {"metadata": {"k": {}}}])
def test_empty_operator_object(raw: dict[str, Any]) -> None:
    assert "empty operator object" in invalid(raw).detail


@pytest.mark.parametrize("value", [{}, "x", 1, None, ["k"]])
def test_metadata_shorthand_needs_an_object(value: Any) -> None:
    assert "filters.metadata: must be an object of metadata keys" in invalid(
        {"metadata": value}).detail


@pytest.mark.parametrize("key", ["AND", "OR"])
@pytest.mark.parametrize("value", [[], {}, {"user_id": "u"}, "x", None])
def test_and_or_need_a_non_empty_list(key: str, value: Any) -> None:
    assert f"filters.{key}: must be a non-empty list" in invalid({key: value}).detail


@pytest.mark.parametrize("key", ["AND", "OR"])
def test_and_or_items_must_be_objects(key: str) -> None:
    assert f"filters.{key}[1]: must be a filter object" in invalid(
        {key: [{"user_id": "u"}, "run_id"]}).detail


@pytest.mark.parametrize("value", [[{"user_id": "u"}], "x", None, 1])
def test_not_needs_an_object(value: Any) -> None:
    assert "filters.NOT: must be a filter object" in invalid({"NOT": value}).detail


@pytest.mark.parametrize("key", ["metadata.", "metadata..k", "metadata.k.", "metadata.k..j",
                                 "metadata." + "k" * 129])
def test_invalid_metadata_key(key: str) -> None:
    assert "invalid metadata key" in invalid({key: 1}).detail


def test_metadata_key_too_deep() -> None:
    ok = "metadata." + ".".join(f"k{i}" for i in range(MAX_FILTER_DEPTH))
    assert parse_filters({ok: 1}) is not None
    too_deep = "metadata." + ".".join(f"k{i}" for i in range(MAX_FILTER_DEPTH + 1))
    assert "nested too deeply" in invalid({too_deep: 1}).detail


@pytest.mark.parametrize("raw", [
    {"metadata.k": float("nan")}, {"metadata.k": {"gt": float("inf")}},
    {"metadata.k": {"in": [1, float("-inf")]}}, {"metadata.k": {"a": float("nan")}},
])
def test_non_finite_numbers(raw: dict[str, Any]) -> None:
    assert "finite" in invalid(raw).detail


@pytest.mark.parametrize("raw", [
    {"user_id": "a\x00b"}, {"metadata.k": {"contains": "\x00"}}, {"metadata.k\x00": 1},
    {"metadata": {"k\x00": 1}}, {"metadata.k": {"in": ["ok", "n\x00"]}},
])
def test_nul_characters(raw: dict[str, Any]) -> None:
    assert "NUL" in invalid(raw).detail


def test_too_deep() -> None:
    detail = invalid(nest_not(MAX_FILTER_DEPTH + 1)).detail
    assert f"nested deeper than {MAX_FILTER_DEPTH} levels" in detail
    raw: dict[str, Any] = {"user_id": "u"}
    for _ in range(50):
        raw = {"AND": [raw]}
    assert "nested deeper" in invalid(raw).detail


def test_too_many_conditions() -> None:
    too_many = {"metadata": {f"k{i}": i for i in range(MAX_FILTER_CONDITIONS + 1)}}
    assert f"more than {MAX_FILTER_CONDITIONS} conditions" in invalid(too_many).detail
    # Counted across the whole tree, operators of one field included.
    spread = {"OR": [{"metadata.n": {"gt": i, "lt": i + 10}} for i in range(51)]}
    assert f"more than {MAX_FILTER_CONDITIONS} conditions" in invalid(spread).detail
