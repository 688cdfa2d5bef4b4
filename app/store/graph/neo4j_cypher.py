"""The Neo4j store's Cypher fragments and record conversions (see ``neo4j``): labels and
relationship types from allow-listed names, scope and time clauses, rows to records."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import neo4j
from neo4j import AsyncManagedTransaction

from app.domain import ProjectScope, Timeline
from app.store.graph.base import (
    ENTITY_TYPES,
    EntityRecord,
    RelationRecord,
    entity_type,
    name_key,
    relation_type,
)

Row = dict[str, Any]

SCHEMA = (
    "CREATE CONSTRAINT anamnesis_entity_id IF NOT EXISTS "
    "FOR (e:Entity) REQUIRE e.id IS UNIQUE",
    # One entity per name in a scope, as the Postgres unique index (NULLS NOT DISTINCT) keeps it;
    # its index also serves ``entity_named``.
    "CREATE CONSTRAINT anamnesis_entity_scope_name IF NOT EXISTS "
    "FOR (e:Entity) REQUIRE (e.project_id, e.scope_key, e.name_key) IS UNIQUE",
    "CREATE INDEX anamnesis_entity_project IF NOT EXISTS FOR (e:Entity) ON (e.project_id)",
    "CREATE INDEX anamnesis_entity_scope IF NOT EXISTS "
    "FOR (e:Entity) ON (e.project_id, e.scope_key)",
    # ``find_entities(name=…)`` is a CONTAINS on the name key.
    "CREATE TEXT INDEX anamnesis_entity_name_key IF NOT EXISTS FOR (e:Entity) ON (e.name_key)",
    "CREATE CONSTRAINT anamnesis_memory_id IF NOT EXISTS "
    "FOR (m:Memory) REQUIRE (m.project_id, m.id) IS UNIQUE",
    "CREATE INDEX anamnesis_memory_project IF NOT EXISTS FOR (m:Memory) ON (m.project_id)",
)
ALREADY_THERE = "Neo.ClientError.Schema.EquivalentSchemaRuleAlreadyExists"


def label_of(kind: str) -> str:
    """The node label of an entity type; the allow-list is checked here, next to the
    formatting, whatever the caller did before."""
    if entity_type(kind) != kind:
        raise ValueError(f"entity type {kind!r} is not in the allow-list")
    return kind.capitalize()


def relationship_of(kind: str) -> str:
    """The relationship type of a relation type, checked against the allow-list."""
    if relation_type(kind) != kind:
        raise ValueError(f"relation type {kind!r} is not in the allow-list")
    return kind.upper()


TYPE_LABELS = ":".join(label_of(kind) for kind in ENTITY_TYPES)


def scope_key(user_id: str | None, agent_id: str | None, run_id: str | None) -> str:
    return json.dumps([user_id, agent_id, run_id])


def to_utc(value: datetime) -> datetime:
    """Naive times are taken as UTC, as Postgres ``timestamptz`` takes them."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def native_time(value: Any) -> datetime:
    native = value.to_native() if isinstance(value, neo4j.time.DateTime) else value
    if not isinstance(native, datetime):
        raise TypeError(f"expected a DATETIME from Neo4j, got {type(value).__name__}")
    return to_utc(native).astimezone(UTC)


def maybe_uuid(value: Any) -> uuid.UUID | None:
    return uuid.UUID(value) if value is not None else None


def entity_record(props: Mapping[str, Any]) -> EntityRecord:
    return EntityRecord(id=uuid.UUID(props["id"]), project_id=uuid.UUID(props["project_id"]),
                        user_id=props.get("user_id"), agent_id=props.get("agent_id"),
                        run_id=props.get("run_id"), name=props["name"], type=props["type"],
                        summary=props["summary"],
                        embedding=[float(x) for x in props["embedding"]],
                        created_at=native_time(props["created_at"]),
                        updated_at=native_time(props["updated_at"]),
                        embedding_model=props.get("embedding_model") or "")


def relation_record(props: Mapping[str, Any], source_id: str, target_id: str) -> RelationRecord:
    invalid_at = props.get("invalid_at")
    return RelationRecord(id=uuid.UUID(props["id"]), project_id=uuid.UUID(props["project_id"]),
                          user_id=props.get("user_id"), agent_id=props.get("agent_id"),
                          run_id=props.get("run_id"), source_id=uuid.UUID(source_id),
                          target_id=uuid.UUID(target_id), type=props["type"],
                          source_name=props["source_name"], target_name=props["target_name"],
                          valid_at=native_time(props["valid_at"]),
                          invalid_at=native_time(invalid_at) if invalid_at is not None else None,
                          memory_id=maybe_uuid(props.get("memory_id")),
                          episode_id=maybe_uuid(props.get("episode_id")),
                          created_at=native_time(props["created_at"]))


def scope_clause(var: str, scope: ProjectScope, *, exact: bool) -> tuple[str, Row]:
    """A WHERE clause on ``var``'s project and scope ids, and its parameters. ``var`` is one of
    this module's own variable names, never input."""
    params: Row = {"project_id": str(scope.project_id)}
    clauses = [f"{var}.project_id = $project_id"]
    if exact:
        clauses.append(f"{var}.scope_key = $scope_key")
        params["scope_key"] = scope_key(scope.user_id, scope.agent_id, scope.run_id)
        return " AND ".join(clauses), params
    for field, value in (("user_id", scope.user_id), ("agent_id", scope.agent_id),
                         ("run_id", scope.run_id)):
        if value is not None:
            clauses.append(f"{var}.{field} = ${field}")
            params[field] = value
    return " AND ".join(clauses), params


def seen_clause(moment: Timeline) -> tuple[str, Row]:
    """Which relations ``r`` a read sees: the clause (``true`` for all) and its parameters.
    "Current" is the server's clock, as ``now()`` is for the Postgres store."""
    if moment.include_superseded:
        return "true", {}
    if moment.as_of is None:
        return "(r.invalid_at IS NULL OR r.invalid_at > datetime())", {}
    return ("r.valid_at <= $as_of AND (r.invalid_at IS NULL OR r.invalid_at > $as_of)",
            {"as_of": to_utc(moment.as_of)})


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    norms = math.sqrt(math.fsum(x * x for x in a) * math.fsum(y * y for y in b))
    if norms == 0.0:
        return math.nan
    return math.fsum(x * y for x, y in zip(a, b, strict=True)) / norms


def entity_row(e: EntityRecord) -> Row:
    return {"id": str(e.id), "project_id": str(e.project_id),
            "created": {"id": str(e.id), "project_id": str(e.project_id), "user_id": e.user_id,
                        "agent_id": e.agent_id, "run_id": e.run_id,
                        "scope_key": scope_key(e.user_id, e.agent_id, e.run_id),
                        "created_at": to_utc(e.created_at)},
            "updated": {"name": e.name, "name_key": name_key(e.name), "type": e.type,
                        "summary": e.summary, "embedding": [float(x) for x in e.embedding],
                        "embedding_model": e.embedding_model,
                        "updated_at": to_utc(e.updated_at)}}


def relation_row(r: RelationRecord) -> Row:
    invalid_at = to_utc(r.invalid_at) if r.invalid_at is not None else None
    properties = {"id": str(r.id), "project_id": str(r.project_id), "user_id": r.user_id,
                  "agent_id": r.agent_id, "run_id": r.run_id, "type": r.type,
                  "source_name": r.source_name, "target_name": r.target_name,
                  "valid_at": to_utc(r.valid_at), "invalid_at": invalid_at,
                  "memory_id": str(r.memory_id) if r.memory_id is not None else None,
                  "episode_id": str(r.episode_id) if r.episode_id is not None else None,
                  "created_at": to_utc(r.created_at)}
    return {"id": str(r.id), "project_id": str(r.project_id), "source_id": str(r.source_id),
            "target_id": str(r.target_id), "invalid_at": invalid_at,
            "properties": {k: v for k, v in properties.items() if v is not None}}


async def fetch_rows(tx: AsyncManagedTransaction, query: str, params: Row) -> list[Row]:
    result = await tx.run(query, params)
    return [record.data() async for record in result]

# Re-embedding entities after a switch of embedding model (``app.index.reembed``).
ENTITIES_TO_EMBED = ("MATCH (e:Entity) WHERE coalesce(e.embedding_model, '') <> $model "
                     "RETURN e.id AS id, e.name AS name ORDER BY e.id LIMIT $limit")
SET_EMBEDDINGS = ("UNWIND $rows AS row MATCH (e:Entity {id: row.id}) "
                  "SET e.embedding = row.embedding, e.embedding_model = $model")

# Erasing memories (``detach_memories``): the entities they mention, their nodes, the relations
# they carried (with both ends), then those entities left with no relationship at all.
MENTIONED_BY = ("MATCH (m:Memory)-[:MENTIONS]->(e:Entity) "
                "WHERE m.project_id = $project_id AND m.id IN $ids RETURN DISTINCT e.id AS id")
DROP_MEMORIES = ("MATCH (m:Memory) WHERE m.project_id = $project_id AND m.id IN $ids "
                 "DETACH DELETE m")
DROP_RELATIONS_OF_MEMORIES = (
    "MATCH (s:Entity)-[r]->(t:Entity) "
    "WHERE s.project_id = $project_id AND r.project_id = $project_id AND r.memory_id IN $ids "
    "WITH r, s.id AS source, t.id AS target DELETE r RETURN source, target")
DROP_ORPHANS = ("MATCH (e:Entity) WHERE e.project_id = $project_id AND e.id IN $touched "
                "AND NOT EXISTS { (e)--() } DELETE e RETURN count(*) AS n")


async def drop_unlinked(tx: AsyncManagedTransaction, project_id: str,
                        memory_ids: list[str] | None) -> None:
    """Memory nodes of the project (of these ids, or all) that no longer link anything."""
    where = "" if memory_ids is None else "AND m.id IN $ids "
    await fetch_rows(tx, "MATCH (m:Memory) WHERE m.project_id = $project_id "
                     f"{where}AND NOT EXISTS {{ (m)--() }} DELETE m",
                     {"project_id": project_id, "ids": memory_ids or []})
