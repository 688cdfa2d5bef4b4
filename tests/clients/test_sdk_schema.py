"""The SDK against the server's OpenAPI schema, so drift fails here: every endpoint of the
native API has a route in the SDK (and so a method, which the live tests call), and every
response model of the SDK reads the fields its schema component has, with types that accept
what the server sends."""

from __future__ import annotations

import datetime
import types
import typing
from typing import Any

import pydantic
import pytest
from anamnesis import _models, _routes
from fastapi import FastAPI

from app.config import Settings
from app.main import create_app

# Each SDK response model and the component of the server's schema it reads.
COMPONENTS: dict[type[pydantic.BaseModel], str] = {
    _models.AddedMemory: "AddedMemory",
    _models.AddResult: "AddResponse",
    _models.JobResult: "JobResult",
    _models.JobError: "JobError",
    _models.JobUsage: "JobUsage",
    _models.Job: "JobRead",
    _models.Memory: "MemoryRead",
    _models.SourceMessage: "SourceMessage",
    _models.MemorySource: "MemorySourceRead",
    _models.MemoryDetail: "MemoryDetail",
    _models.SearchHit: "SearchHit",
    _models.SearchResults: "SearchResponse",
    _models.HistoryEvent: "HistoryEventRead",
    _models.Project: "ProjectRead",
    _models.Deleted: "ScopeDeleted",
    _models.Relation: "RelationRead",
    _models.Entity: "EntityRead",
    _models.EntityAlias: "AliasRead",
    _models.EntityDetail: "EntityDetail",
    _models.Neighbor: "Neighbor",
    _models.Unmerged: "Unmerged",
    _models.Key: "KeyRead",
    _models.KeyCreated: "KeyCreated",
    _models.RecordCounts: "RecordCounts",
    _models.SkippedLine: "SkippedLine",
    _models.ImportReceipt: "ImportReceipt",
    _models.ScopeCount: "ScopeRead",
}
# Models with no component of their own, and why.
UNMIRRORED = {
    _models.Results: "the list envelope: checked against every page component below",
    _models.Health: "the ops probe, outside the API's schema",
}
# Server fields an SDK model leaves out on purpose.
LEFT_OUT = {("ScopeDeleted", "erased"): "delete_all returns the count alone"}
PAGES = ["MemoryPage", "HistoryRead", "EntityPage", "NeighborsRead", "RelationsRead", "KeyPage",
         "JobPage", "ScopePage"]
# Tags of the native API's endpoints. Others are no API call of the SDK's: "ops" (health,
# readiness) and the doorways for other clients' shapes (tags starting "mem0" or "compat").
NATIVE_TAGS = {"memories", "search", "jobs", "project", "graph", "transfer"}
OTHER_TAGS = {"ops"}
OTHER_PREFIXES = ("mem0", "compat")


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    app: FastAPI = create_app(Settings())  # the schema only: no lifespan, nothing opened
    return app.openapi()


def response_models() -> list[type[pydantic.BaseModel]]:
    found = [value for value in vars(_models).values()
             if isinstance(value, type) and issubclass(value, _models._Response)
             and value is not _models._Response]
    assert found
    return found


def test_every_response_model_is_held_against_the_schema() -> None:
    assert [m.__name__ for m in response_models()
            if m not in COMPONENTS and m not in UNMIRRORED] == []


def schema_kinds(schema: dict[str, Any]) -> set[str]:
    """What JSON a schema allows, coarsely: its types, with date-times told apart."""
    if "anyOf" in schema:
        return set().union(*(schema_kinds(option) for option in schema["anyOf"]))
    if "$ref" in schema:
        return {"object"}
    if "const" in schema:
        value = schema["const"]
        return {"boolean" if isinstance(value, bool) else "string"}
    kind = schema.get("type")
    if kind == "string" and schema.get("format") == "date-time":
        return {"date-time"}
    if kind is None:
        return {"string", "integer", "number", "boolean", "array", "object", "null"}
    return {kind}


PYTHON_KINDS: dict[Any, set[str]] = {
    str: {"string"}, int: {"integer"}, float: {"number", "integer"}, bool: {"boolean"},
    datetime.datetime: {"date-time"}, types.NoneType: {"null"}, list: {"array"},
    dict: {"object"},
}


def python_kinds(annotation: Any) -> set[str]:
    """What JSON a model field accepts, in the words of :func:`schema_kinds`."""
    if annotation is Any:
        return {"string", "integer", "number", "boolean", "array", "object", "null"}
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return set().union(*(python_kinds(arg) for arg in typing.get_args(annotation)))
    if origin is typing.Literal:
        return {"boolean" if isinstance(v, bool) else "string" for v in
                typing.get_args(annotation)}
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return {"object"}
    return PYTHON_KINDS[origin or annotation]


@pytest.mark.parametrize("model", list(COMPONENTS), ids=lambda model: model.__name__)
def test_response_model_matches_its_schema_component(model: type[pydantic.BaseModel],
                                                    openapi: dict[str, Any]) -> None:
    name = COMPONENTS[model]
    component = openapi["components"]["schemas"][name]
    properties: dict[str, Any] = component["properties"]
    required = set(component.get("required", []))
    fields = model.model_fields
    assert set(fields) - set(properties) == set(), "fields the server never sends"
    missing = {f for f in required - set(fields) if (name, f) not in LEFT_OUT}
    assert missing == set(), "server fields this model drops"
    assert {f for f, info in fields.items() if info.is_required()} - required == set(), (
        "fields the model requires but the server may leave out")
    for field, info in fields.items():
        sent, accepted = schema_kinds(properties[field]), python_kinds(info.annotation)
        assert sent <= accepted, f"{name}.{field}: the server sends {sent}, SDK reads {accepted}"


@pytest.mark.parametrize("name", PAGES)
def test_list_envelope_reads_every_page(name: str, openapi: dict[str, Any]) -> None:
    component = openapi["components"]["schemas"][name]
    assert component["properties"]["results"]["type"] == "array"
    assert set(component["properties"]) <= set(_models.Results.model_fields)
    assert set(component.get("required", [])) >= {"results"}


def native_routes(openapi: dict[str, Any]) -> set[tuple[str, str]]:
    routes: set[tuple[str, str]] = set()
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            tags = set(operation.get("tags", []))
            unknown = {t for t in tags - NATIVE_TAGS - OTHER_TAGS
                       if not t.startswith(OTHER_PREFIXES)}
            assert tags, f"{method} {path}: no tag (is it native?)"
            assert not unknown, f"{method} {path}: tags {unknown} (native? add to NATIVE_TAGS)"
            if tags & NATIVE_TAGS:
                routes.add((method.upper(), path))
    return routes


def test_every_native_endpoint_has_an_sdk_route(openapi: dict[str, Any]) -> None:
    sdk = {(route.method, route.template) for route in vars(_routes).values()
           if isinstance(route, _routes.Route)}
    native = native_routes(openapi)
    assert len(native) >= 24
    assert native - sdk == set(), "endpoints the SDK has no method for"
    assert sdk - native == {("GET", "/health")}, "SDK routes the server does not have"
