"""``GraphStore`` on Neo4j 5 (``ANAMNESIS_NEO4J__URL``), over the official async driver.

The shape of the graph:

- ``(:Entity:<Type>)`` per entity, ``<Type>`` its allow-listed type capitalised (``:Person``).
  Properties: ``id``, ``project_id``, ``user_id``/``agent_id``/``run_id`` (absent when unset),
  ``scope_key`` (the three ids as one JSON string, so "exactly this scope" is one equality and
  unset stays distinct from any value), ``name``, ``name_key``, ``type``, ``summary``,
  ``embedding``, ``created_at``, ``updated_at``.
- ``(source)-[:<TYPE>]->(target)`` per relation, ``<TYPE>`` its allow-listed type upper-cased
  (``:LIVES_IN``), with ``id``, ``project_id``, the scope ids, ``type``, the mention names,
  ``valid_at``, ``invalid_at``, ``memory_id``, ``episode_id``, ``created_at`` (absent when None).
- ``(:Memory {id, project_id})-[:MENTIONS {project_id}]->(:Entity)`` per memory link; a Memory
  node lives only while it links something.

Ids are strings, times are Neo4j ``DATETIME`` values, and every statement names the project.
Values always travel as parameters; the only text formatted into Cypher is a label or
relationship type that passed ``entity_type``/``relation_type`` just before.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Self, TypeVar

from neo4j import AsyncGraphDatabase, AsyncManagedTransaction, RoutingControl
from neo4j.exceptions import ClientError, ServiceUnavailable, SessionExpired, TransientError

from app.config import Neo4jSettings
from app.domain import CURRENT, ProjectScope, Timeline
from app.errors import Unavailable
from app.store.graph import neo4j_cypher as cypher
from app.store.graph.base import (
    EntityRecord,
    GraphErasure,
    RelationRecord,
    name_key,
)
from app.store.graph.neo4j_cypher import (
    ALREADY_THERE,
    ENTITIES_TO_EMBED,
    SCHEMA,
    SET_EMBEDDINGS,
    TYPE_LABELS,
    Row,
    cosine,
    entity_record,
    entity_row,
    fetch_rows,
    label_of,
    relation_record,
    relation_row,
    relationship_of,
    scope_clause,
    seen_clause,
)

T = TypeVar("T")


class Neo4jGraphStore:
    def __init__(self, url: str, user: str, password: str | None,
                 database: str | None = None) -> None:
        """Builds the driver; it connects on first use (``setup``)."""
        auth = (user, password) if password is not None else None
        self._driver = AsyncGraphDatabase.driver(url, auth=auth)
        self._database = database

    @classmethod
    def from_settings(cls, settings: Neo4jSettings) -> Self:
        if not settings.url:
            raise ValueError("the Neo4j graph store needs ANAMNESIS_NEO4J__URL")
        password = settings.password.get_secret_value() if settings.password else None
        return cls(settings.url, settings.user, password, settings.database)

    @asynccontextmanager
    async def _reachable(self) -> AsyncIterator[None]:
        """A Neo4j that stays unreachable (after the driver's own retries) is a 503."""
        try:
            yield
        except (ServiceUnavailable, SessionExpired, TransientError) as error:
            raise Unavailable("the graph store (Neo4j) is unavailable") from error

    async def _query(self, query: str, params: Row, *, write: bool = False) -> list[Row]:
        async with self._reachable():
            records, _, _ = await self._driver.execute_query(
                query, params, routing_=RoutingControl.WRITE if write else RoutingControl.READ,
                database_=self._database)
        return [record.data() for record in records]

    async def _transaction(self, work: Callable[[AsyncManagedTransaction], Awaitable[T]], *,
                           write: bool) -> T:
        """Several statements in one transaction (retried whole on transient errors, so
        ``work`` only issues idempotent statements)."""
        async with self._reachable(), self._driver.session(
                database=self._database,
                bookmark_manager=self._driver.execute_query_bookmark_manager) as session:
            if write:
                return await session.execute_write(work)
            return await session.execute_read(work)

    async def setup(self) -> None:
        for statement in SCHEMA:
            try:
                await self._query(statement, {}, write=True)
            except ClientError as error:
                # Two processes starting at once may race on IF NOT EXISTS.
                if error.code != ALREADY_THERE:
                    raise

    async def aclose(self) -> None:
        await self._driver.close()

    async def put_entities(self, entities: Sequence[EntityRecord]) -> None:
        latest = list({e.id: e for e in entities}.values())  # one write per id, the last
        by_type: dict[str, list[Row]] = {}
        for e in latest:
            label_of(e.type)  # every type checked before anything is written
            by_type.setdefault(e.type, []).append(entity_row(e))
        if not by_type:
            return
        # An id owned by another project is left alone, as the Postgres upsert leaves it.
        statements = [(
            "UNWIND $rows AS row "
            "OPTIONAL MATCH (old:Entity {id: row.id}) "
            "WITH row, old WHERE old IS NULL OR old.project_id = row.project_id "
            "MERGE (e:Entity {id: row.id}) "
            "ON CREATE SET e += row.created "
            "SET e += row.updated "
            f"REMOVE e:{TYPE_LABELS} "
            f"SET e:{label_of(kind)}",
            {"rows": rows}) for kind, rows in by_type.items()]

        async def work(tx: AsyncManagedTransaction) -> None:
            for query, params in statements:
                await (await tx.run(query, params)).consume()

        await self._transaction(work, write=True)

    async def put_relations(self, relations: Sequence[RelationRecord]) -> None:
        latest = list({r.id: r for r in relations}.values())
        by_type: dict[str, list[Row]] = {}
        for r in latest:
            relationship_of(r.type)
            by_type.setdefault(r.type, []).append(relation_row(r))
        if not by_type:
            return
        # Both ends must be entities of the relation's project: a relation never crosses
        # tenants, and one whose end is gone has nothing to hang on (Postgres would refuse it).
        # An existing id only takes the new invalid_at; MERGE guards against a concurrent insert.
        statements = [(
            "UNWIND $rows AS row "
            "MATCH (s:Entity {id: row.source_id}) WHERE s.project_id = row.project_id "
            "MATCH (t:Entity {id: row.target_id}) WHERE t.project_id = row.project_id "
            "OPTIONAL MATCH (s)-[old]->(t) "
            "WHERE old.id = row.id AND old.project_id = row.project_id "
            "FOREACH (_ IN CASE WHEN old IS NULL THEN [1] ELSE [] END | "
            f"  MERGE (s)-[r:{relationship_of(kind)} {{id: row.id}}]->(t) "
            "  ON CREATE SET r = row.properties "
            "  ON MATCH SET r.invalid_at = row.invalid_at) "
            "SET old.invalid_at = row.invalid_at",
            {"rows": rows}) for kind, rows in by_type.items()]

        async def work(tx: AsyncManagedTransaction) -> None:
            for query, params in statements:
                await (await tx.run(query, params)).consume()

        await self._transaction(work, write=True)

    async def link_memories(self, project_id: uuid.UUID,
                            links: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None:
        pairs = [{"entity_id": str(e), "memory_id": str(m)} for e, m in dict.fromkeys(links)]
        if not pairs:
            return
        # Only entities of this project: a link never crosses tenants, whatever ids it names.
        await self._query(
            "UNWIND $links AS link "
            "MATCH (e:Entity {id: link.entity_id}) WHERE e.project_id = $project_id "
            "MERGE (m:Memory {project_id: $project_id, id: link.memory_id}) "
            "MERGE (m)-[:MENTIONS {project_id: $project_id}]->(e)",
            {"links": pairs, "project_id": str(project_id)}, write=True)

    async def get_entity(self, project_id: uuid.UUID,
                         entity_id: uuid.UUID) -> EntityRecord | None:
        rows = await self._query(
            "MATCH (e:Entity {id: $id}) WHERE e.project_id = $project_id RETURN e {.*} AS e",
            {"id": str(entity_id), "project_id": str(project_id)})
        return entity_record(rows[0]["e"]) if rows else None

    async def find_entities(self, scope: ProjectScope, *, name: str | None = None,
                            limit: int = 100, after: uuid.UUID | None = None
                            ) -> list[EntityRecord]:
        where, params = scope_clause("e", scope, exact=False)
        if name:
            where += " AND e.name_key CONTAINS $name"
            params["name"] = name_key(name)
        if after is not None:
            where += " AND e.id > $after"
            params["after"] = str(after)
        rows = await self._query(
            f"MATCH (e:Entity) WHERE {where} RETURN e {{.*}} AS e ORDER BY e.id LIMIT $limit",
            {**params, "limit": limit})
        return [entity_record(row["e"]) for row in rows]

    async def entities_named_in(self, scope: ProjectScope, text: str,
                                limit: int) -> list[EntityRecord]:
        where, params = scope_clause("e", scope, exact=False)
        rows = await self._query(
            f"MATCH (e:Entity) WHERE {where} AND e.name_key <> '' "
            "AND $padded CONTAINS (' ' + e.name_key + ' ') "
            "RETURN e {.*} AS e ORDER BY size(e.name_key) DESC, e.id LIMIT $limit",
            {**params, "padded": f" {name_key(text)} ", "limit": limit})
        return [entity_record(row["e"]) for row in rows]

    async def entities_to_embed(self, model: str, limit: int) -> list[tuple[uuid.UUID, str]]:
        rows = await self._query(ENTITIES_TO_EMBED, {"model": model, "limit": limit})
        return [(uuid.UUID(row["id"]), str(row["name"])) for row in rows]

    async def set_entity_embeddings(self, model: str,
                                    vectors: dict[uuid.UUID, list[float]]) -> None:
        if vectors:
            await self._query(SET_EMBEDDINGS, {"model": model, "rows": [
                {"id": str(entity_id), "embedding": [float(x) for x in vector]}
                for entity_id, vector in vectors.items()]}, write=True)

    async def entity_named(self, scope: ProjectScope, key: str) -> EntityRecord | None:
        where, params = scope_clause("e", scope, exact=True)
        rows = await self._query(
            f"MATCH (e:Entity) WHERE {where} AND e.name_key = $key RETURN e {{.*}} AS e",
            {**params, "key": key})
        return entity_record(rows[0]["e"]) if rows else None

    async def similar_entities(self, scope: ProjectScope, embedding: list[float],
                               limit: int, model: str) -> list[tuple[EntityRecord, float]]:
        # Exact search over the scope (scopes are small): Neo4j ranks, in single precision;
        # the scores returned are recomputed here in double, as plain cosine (-1..1).
        # Entities written before models were recorded have none: of the model then in use.
        where, params = scope_clause("e", scope, exact=True)
        rows = await self._query(
            f"MATCH (e:Entity) WHERE {where} "
            "AND coalesce(e.embedding_model, $model) = $model "
            "WITH e, vector.similarity.cosine(e.embedding, $embedding) AS similarity "
            "RETURN e {.*} AS e ORDER BY similarity IS NULL, similarity DESC, e.id "
            "LIMIT $limit",
            {**params, "embedding": [float(x) for x in embedding], "limit": limit,
             "model": model})
        scored = [(record, cosine(record.embedding, embedding))
                  for record in (entity_record(row["e"]) for row in rows)]
        scored.sort(key=lambda pair: (math.isnan(pair[1]),
                                      -pair[1] if not math.isnan(pair[1]) else 0.0,
                                      str(pair[0].id)))
        return scored

    async def find_relations(self, scope: ProjectScope, *, source: uuid.UUID | None = None,
                             target: uuid.UUID | None = None, type: str | None = None,
                             touching: Sequence[uuid.UUID] | None = None,
                             moment: Timeline = CURRENT, limit: int = 1000) -> list[RelationRecord]:
        where, params = scope_clause("r", scope, exact=False)
        seen, seen_params = seen_clause(moment)
        clauses = [where, "s.project_id = $project_id", seen]
        if source is not None:
            clauses.append("s.id = $source")
            params["source"] = str(source)
        if target is not None:
            clauses.append("t.id = $target")
            params["target"] = str(target)
        if type is not None:
            clauses.append("r.type = $type")
            params["type"] = type
        if touching is not None:
            clauses.append("s.id IN $touching AND t.id IN $touching")
            params["touching"] = [str(t) for t in touching]
        rows = await self._query(
            f"MATCH (s:Entity)-[r]->(t:Entity) WHERE {' AND '.join(clauses)} "
            "RETURN r {.*} AS r, s.id AS source_id, t.id AS target_id "
            "ORDER BY r.valid_at, r.id LIMIT $limit",
            {**params, **seen_params, "limit": limit})
        return [relation_record(row["r"], row["source_id"], row["target_id"]) for row in rows]

    async def neighbors(self, project_id: uuid.UUID, entity_id: uuid.UUID, depth: int,
                        moment: Timeline = CURRENT) -> list[tuple[EntityRecord, int]]:
        # Breadth first, one statement per hop in one read transaction: each hop honours the
        # moment, the first hop that reaches an entity is its distance, and any depth works
        # without formatting it into a variable-length pattern.
        seen, seen_params = seen_clause(moment)
        step = ("UNWIND $frontier AS id "
                "MATCH (a:Entity {id: id})-[r]-(b:Entity) "
                "WHERE a.project_id = $project_id AND r.project_id = $project_id "
                f"AND b.project_id = $project_id AND {seen} "
                "RETURN DISTINCT b.id AS id")
        fetch = ("UNWIND $ids AS id MATCH (e:Entity {id: id}) "
                 "WHERE e.project_id = $project_id RETURN e {.*} AS e")
        start = str(entity_id)

        async def work(tx: AsyncManagedTransaction) -> list[Row]:
            hops = {start: 0}
            frontier = [start]
            for hop in range(1, depth + 1):
                if not frontier:
                    break
                found = await fetch_rows(tx, step, {"frontier": frontier,
                                                    "project_id": str(project_id), **seen_params})
                frontier = [row["id"] for row in found if row["id"] not in hops]
                hops.update(dict.fromkeys(frontier, hop))
            del hops[start]
            if not hops:
                return []
            found = await fetch_rows(tx, fetch, {"ids": list(hops), "project_id": str(project_id)})
            return [{"e": row["e"], "hops": hops[row["e"]["id"]]} for row in found]

        rows = await self._transaction(work, write=False)
        found = [(entity_record(row["e"]), int(row["hops"])) for row in rows]
        return sorted(found, key=lambda pair: (pair[1], pair[0].id))

    async def memories_of(self, project_id: uuid.UUID,
                          entity_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
        rows = await self._query(
            "MATCH (m:Memory)-[l:MENTIONS]->(e:Entity) "
            "WHERE e.project_id = $project_id AND l.project_id = $project_id "
            "AND m.project_id = $project_id AND e.id IN $ids "
            "RETURN e.id AS entity_id, m.id AS memory_id ORDER BY entity_id, memory_id",
            {"project_id": str(project_id), "ids": [str(e) for e in entity_ids]})
        found: dict[uuid.UUID, list[uuid.UUID]] = {}
        for row in rows:
            found.setdefault(uuid.UUID(row["entity_id"]), []).append(uuid.UUID(row["memory_id"]))
        return found

    async def entities_of(self, project_id: uuid.UUID,
                          memory_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
        rows = await self._query(
            "MATCH (m:Memory)-[l:MENTIONS]->(e:Entity) "
            "WHERE m.project_id = $project_id AND l.project_id = $project_id "
            "AND e.project_id = $project_id AND m.id IN $ids "
            "RETURN m.id AS memory_id, e.id AS entity_id ORDER BY memory_id, entity_id",
            {"project_id": str(project_id), "ids": [str(m) for m in memory_ids]})
        found: dict[uuid.UUID, list[uuid.UUID]] = {}
        for row in rows:
            found.setdefault(uuid.UUID(row["memory_id"]), []).append(uuid.UUID(row["entity_id"]))
        return found

    async def delete_entity(self, project_id: uuid.UUID, entity_id: uuid.UUID) -> bool:
        params = {"id": str(entity_id), "project_id": str(project_id)}

        async def work(tx: AsyncManagedTransaction) -> bool:
            # Its relations and links go with it (DETACH), then the memories it left unlinked.
            deleted = await fetch_rows(
                tx, "MATCH (e:Entity {id: $id}) WHERE e.project_id = $project_id "
                    "OPTIONAL MATCH (m:Memory)-[:MENTIONS]->(e) WHERE m.project_id = $project_id "
                    "WITH e, collect(m.id) AS memories "
                    "DETACH DELETE e RETURN memories", params)
            if not deleted:
                return False
            await cypher.drop_unlinked(tx, str(project_id), deleted[0]["memories"])
            return True

        return await self._transaction(work, write=True)

    async def detach_memories(self, project_id: uuid.UUID,
                              memory_ids: Sequence[uuid.UUID]) -> GraphErasure:
        params = {"project_id": str(project_id), "ids": [str(m) for m in memory_ids]}
        if not params["ids"]:
            return GraphErasure()

        async def work(tx: AsyncManagedTransaction) -> GraphErasure:
            mentioned = await fetch_rows(tx, cypher.MENTIONED_BY, params)
            await fetch_rows(tx, cypher.DROP_MEMORIES, params)
            ends = await fetch_rows(tx, cypher.DROP_RELATIONS_OF_MEMORIES, params)
            touched = {row["id"] for row in mentioned}
            touched.update(row[end] for row in ends for end in ("source", "target"))
            orphans = await fetch_rows(tx, cypher.DROP_ORPHANS, {"project_id": params["project_id"],
                                                          "touched": sorted(touched)})
            return GraphErasure(entities=orphans[0]["n"], relations=len(ends))

        return await self._transaction(work, write=True)

    async def delete_scope(self, scope: ProjectScope, *, exact: bool = False) -> GraphErasure:
        # Relations carry the scope ids but not the scope key; a scope's relations join two
        # entities of that scope, so "exactly this scope" is read off their source.
        relations, params = scope_clause("s" if exact else "r", scope, exact=exact)
        entities, _ = scope_clause("e", scope, exact=exact)

        async def work(tx: AsyncManagedTransaction) -> GraphErasure:
            gone = await fetch_rows(tx, "MATCH (s:Entity)-[r]->(:Entity) "
                                    f"WHERE s.project_id = $project_id AND {relations} "
                                    "DELETE r RETURN count(*) AS n", params)
            dropped = await fetch_rows(tx, f"MATCH (e:Entity) WHERE {entities} "
                                       "DETACH DELETE e RETURN count(*) AS n", params)
            await cypher.drop_unlinked(tx, params["project_id"], None)
            return GraphErasure(entities=dropped[0]["n"], relations=gone[0]["n"])

        return await self._transaction(work, write=True)

    async def clear_project(self, project_id: uuid.UUID) -> None:
        await self.delete_scope(ProjectScope(project_id))

