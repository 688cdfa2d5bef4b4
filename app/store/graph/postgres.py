"""``GraphStore`` on Postgres tables (``entities``, ``relations``, ``entity_memories``): the
embedded default. Neighbourhoods are one recursive CTE; similarity is pgvector's cosine."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from app.domain import CURRENT, ProjectScope, Timeline
from app.store.db import Database
from app.store.graph.base import EntityRecord, GraphErasure, RelationRecord, name_key
from app.store.models import Entity, EntityMemory, Relation
from app.store.repositories.filter_sql import any_of

_UUIDS = PgUUID(as_uuid=True)


def _count(result: sa.Result[Any]) -> int:
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _entity(row: Entity) -> EntityRecord:
    return EntityRecord(id=row.id, project_id=row.project_id, user_id=row.user_id,
                        agent_id=row.agent_id, run_id=row.run_id, name=row.name, type=row.type,
                        summary=row.summary, embedding=[float(x) for x in row.embedding],
                        created_at=row.created_at, updated_at=row.updated_at,
                        embedding_model=row.embedding_model)


def _relation(row: Relation) -> RelationRecord:
    return RelationRecord(id=row.id, project_id=row.project_id, user_id=row.user_id,
                          agent_id=row.agent_id, run_id=row.run_id, source_id=row.source_id,
                          target_id=row.target_id, type=row.type, source_name=row.source_name,
                          target_name=row.target_name, valid_at=row.valid_at,
                          invalid_at=row.invalid_at, memory_id=row.memory_id,
                          episode_id=row.episode_id, created_at=row.created_at)


def _scope(model: type[Entity] | type[Relation], scope: ProjectScope, *,
           exact: bool) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = [model.project_id == scope.project_id]
    for column, value in ((model.user_id, scope.user_id), (model.agent_id, scope.agent_id),
                          (model.run_id, scope.run_id)):
        if exact:
            clauses.append(column.is_not_distinct_from(value))
        elif value is not None:
            clauses.append(column == value)
    return clauses


def _seen(moment: Timeline) -> list[ColumnElement[bool]]:
    if moment.include_superseded:
        return []
    if moment.as_of is None:
        return [sa.or_(Relation.invalid_at.is_(None), Relation.invalid_at > sa.func.now())]
    at = sa.literal(moment.as_of, sa.DateTime(timezone=True))
    return [Relation.valid_at <= at,
            sa.or_(Relation.invalid_at.is_(None), Relation.invalid_at > at)]


class PostgresGraphStore:
    def __init__(self, database: Database) -> None:
        self.database = database

    async def setup(self) -> None:
        """The tables come with the migrations."""

    async def aclose(self) -> None:
        """Closes its pool (``Database.companion``); the database server is not its own."""
        await self.database.engine.dispose()

    async def put_entities(self, entities: Sequence[EntityRecord]) -> None:
        entities = list({e.id: e for e in entities}.values())  # one row per id, the last
        if not entities:
            return
        statement = insert(Entity).values([
            {"id": e.id, "project_id": e.project_id, "user_id": e.user_id,
             "agent_id": e.agent_id, "run_id": e.run_id, "name": e.name,
             "name_key": name_key(e.name), "type": e.type, "summary": e.summary,
             "embedding": e.embedding, "embedding_model": e.embedding_model,
             "created_at": e.created_at, "updated_at": e.updated_at}
            for e in entities
        ])
        excluded = statement.excluded
        statement = statement.on_conflict_do_update(index_elements=[Entity.id], set_={
            "name": excluded.name, "name_key": excluded.name_key, "type": excluded.type,
            "summary": excluded.summary, "embedding": excluded.embedding,
            "embedding_model": excluded.embedding_model, "updated_at": excluded.updated_at,
        }, where=Entity.project_id == excluded.project_id)
        async with self.database.session_scope() as session:
            await session.execute(statement)

    async def put_relations(self, relations: Sequence[RelationRecord]) -> None:
        relations = list({r.id: r for r in relations}.values())
        if not relations:
            return
        statement = insert(Relation).values([
            {"id": r.id, "project_id": r.project_id, "user_id": r.user_id,
             "agent_id": r.agent_id, "run_id": r.run_id, "source_id": r.source_id,
             "target_id": r.target_id, "type": r.type, "source_name": r.source_name,
             "target_name": r.target_name, "valid_at": r.valid_at, "invalid_at": r.invalid_at,
             "memory_id": r.memory_id, "episode_id": r.episode_id, "created_at": r.created_at}
            for r in relations
        ])
        statement = statement.on_conflict_do_update(
            index_elements=[Relation.id], set_={"invalid_at": statement.excluded.invalid_at},
            where=Relation.project_id == statement.excluded.project_id)
        async with self.database.session_scope() as session:
            await session.execute(statement)

    async def link_memories(self, project_id: uuid.UUID,
                            links: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None:
        if not links:
            return
        # Only entities of this project: a link never crosses tenants, whatever ids it names.
        owned = sa.select(Entity.id).where(Entity.project_id == project_id,
                                           Entity.id.in_({e for e, _ in links}))
        async with self.database.session_scope() as session:
            mine = set((await session.scalars(owned)).all())
            rows = [{"entity_id": e, "memory_id": m, "project_id": project_id}
                    for e, m in dict.fromkeys(links) if e in mine]
            if rows:
                await session.execute(insert(EntityMemory).values(rows).on_conflict_do_nothing())

    async def get_entity(self, project_id: uuid.UUID,
                         entity_id: uuid.UUID) -> EntityRecord | None:
        query = sa.select(Entity).where(Entity.project_id == project_id, Entity.id == entity_id)
        async with self.database.session_scope() as session:
            row = (await session.execute(query)).scalar_one_or_none()
        return _entity(row) if row is not None else None

    async def find_entities(self, scope: ProjectScope, *, name: str | None = None,
                            limit: int = 100, after: uuid.UUID | None = None
                            ) -> list[EntityRecord]:
        query = sa.select(Entity).where(*_scope(Entity, scope, exact=False))
        if name:
            query = query.where(Entity.name_key.contains(name_key(name), autoescape=True))
        if after is not None:
            query = query.where(Entity.id > after)
        async with self.database.session_scope() as session:
            rows = (await session.scalars(query.order_by(Entity.id).limit(limit))).all()
        return [_entity(row) for row in rows]

    async def entities_named_in(self, scope: ProjectScope, text: str,
                                limit: int) -> list[EntityRecord]:
        padded = f" {name_key(text)} "
        query = (sa.select(Entity)
                 .where(*_scope(Entity, scope, exact=False), Entity.name_key != "",
                        sa.func.strpos(padded, " " + Entity.name_key + " ") > 0)
                 .order_by(sa.func.length(Entity.name_key).desc(), Entity.id).limit(limit))
        async with self.database.session_scope() as session:
            rows = (await session.scalars(query)).all()
        return [_entity(row) for row in rows]

    async def entity_named(self, scope: ProjectScope, key: str) -> EntityRecord | None:
        query = sa.select(Entity).where(*_scope(Entity, scope, exact=True),
                                        Entity.name_key == key)
        async with self.database.session_scope() as session:
            row = (await session.execute(query)).scalar_one_or_none()
        return _entity(row) if row is not None else None

    async def similar_entities(self, scope: ProjectScope, embedding: list[float],
                               limit: int, model: str) -> list[tuple[EntityRecord, float]]:
        distance = Entity.embedding.cosine_distance(embedding)
        query = (sa.select(Entity, distance)
                 .where(*_scope(Entity, scope, exact=True), Entity.embedding_model == model)
                 .order_by(distance, Entity.id).limit(limit))
        async with self.database.session_scope() as session:
            rows = (await session.execute(query)).all()
        return [(_entity(row), 1.0 - float(dist)) for row, dist in rows]

    async def entities_to_embed(self, model: str, limit: int) -> list[tuple[uuid.UUID, str]]:
        query = (sa.select(Entity.id, Entity.name).where(Entity.embedding_model != model)
                 .order_by(Entity.id).limit(limit))
        async with self.database.session_scope() as session:
            return [(entity_id, name) for entity_id, name in await session.execute(query)]

    async def set_entity_embeddings(self, model: str,
                                    vectors: dict[uuid.UUID, list[float]]) -> None:
        if not vectors:
            return
        async with self.database.session_scope() as session:
            await session.execute(sa.update(Entity), [
                {"id": entity_id, "embedding": vector, "embedding_model": model}
                for entity_id, vector in vectors.items()])

    async def find_relations(self, scope: ProjectScope, *, source: uuid.UUID | None = None,
                             target: uuid.UUID | None = None, type: str | None = None,
                             touching: Sequence[uuid.UUID] | None = None,
                             moment: Timeline = CURRENT, limit: int = 1000) -> list[RelationRecord]:
        query = sa.select(Relation).where(*_scope(Relation, scope, exact=False), *_seen(moment))
        if source is not None:
            query = query.where(Relation.source_id == source)
        if target is not None:
            query = query.where(Relation.target_id == target)
        if type is not None:
            query = query.where(Relation.type == type)
        if touching is not None:
            query = query.where(Relation.source_id.in_(touching),
                                Relation.target_id.in_(touching))
        query = query.order_by(Relation.valid_at, Relation.id).limit(limit)
        async with self.database.session_scope() as session:
            rows = (await session.scalars(query)).all()
        return [_relation(row) for row in rows]

    async def neighbors(self, project_id: uuid.UUID, entity_id: uuid.UUID, depth: int,
                        moment: Timeline = CURRENT) -> list[tuple[EntityRecord, int]]:
        edges = (sa.select(Relation.source_id.label("a"), Relation.target_id.label("b"))
                 .where(Relation.project_id == project_id, *_seen(moment))
                 .union_all(sa.select(Relation.target_id, Relation.source_id)
                            .where(Relation.project_id == project_id, *_seen(moment)))
                 .cte("edges"))
        walk = sa.select(sa.literal(entity_id, sa.Uuid).label("node"),
                         sa.literal(0).label("hops")).cte("walk", recursive=True)
        step = walk.alias()
        # UNION, not UNION ALL: a (node, hops) row reached twice is walked once, so a dense
        # graph costs nodes x depth rows, not paths (which grow as degree ** depth).
        walk = walk.union(
            sa.select(edges.c.b, step.c.hops + 1)
            .join(edges, edges.c.a == step.c.node)
            .where(step.c.hops < depth)
        )
        nearest = (sa.select(walk.c.node, sa.func.min(walk.c.hops).label("hops"))
                   .group_by(walk.c.node).subquery())
        query = (sa.select(Entity, nearest.c.hops)
                 .join(nearest, nearest.c.node == Entity.id)
                 .where(Entity.project_id == project_id, Entity.id != entity_id)
                 .order_by(nearest.c.hops, Entity.id))
        async with self.database.session_scope() as session:
            rows = (await session.execute(query)).all()
        return [(_entity(row), int(hops)) for row, hops in rows]

    async def memories_of(self, project_id: uuid.UUID,
                          entity_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
        return await self._links(project_id, EntityMemory.entity_id, EntityMemory.memory_id,
                                 entity_ids)

    async def entities_of(self, project_id: uuid.UUID,
                          memory_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
        return await self._links(project_id, EntityMemory.memory_id, EntityMemory.entity_id,
                                 memory_ids)

    async def _links(self, project_id: uuid.UUID, by: InstrumentedAttribute[uuid.UUID],
                     other: InstrumentedAttribute[uuid.UUID],
                     keys: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
        """Memory links grouped by one end: ``by`` value → the ``other`` ends, in id order."""
        query = (sa.select(by, other)
                 .where(EntityMemory.project_id == project_id, by.in_(keys))
                 .order_by(by, other))
        found: dict[uuid.UUID, list[uuid.UUID]] = {}
        async with self.database.session_scope() as session:
            for key, value in await session.execute(query):
                found.setdefault(key, []).append(value)
        return found

    async def delete_entity(self, project_id: uuid.UUID, entity_id: uuid.UUID) -> bool:
        # Relations and links go with it (ON DELETE CASCADE).
        statement = (sa.delete(Entity).where(Entity.project_id == project_id,
                                             Entity.id == entity_id).returning(Entity.id))
        async with self.database.session_scope() as session:
            return (await session.execute(statement)).first() is not None

    async def detach_memories(self, project_id: uuid.UUID,
                              memory_ids: Sequence[uuid.UUID]) -> GraphErasure:
        if not memory_ids:
            return GraphErasure()
        async with self.database.session_scope() as session:
            touched = set((await session.scalars(sa.delete(EntityMemory).where(
                EntityMemory.project_id == project_id,
                any_of(EntityMemory.memory_id, memory_ids, _UUIDS)
            ).returning(EntityMemory.entity_id))).all())
            ends = (await session.execute(sa.delete(Relation).where(
                Relation.project_id == project_id, any_of(Relation.memory_id, memory_ids, _UUIDS)
            ).returning(Relation.source_id, Relation.target_id))).all()
            touched.update(entity for pair in ends for entity in pair)
            linked = sa.select(EntityMemory.entity_id).where(EntityMemory.entity_id == Entity.id)
            related = sa.select(Relation.id).where(
                sa.or_(Relation.source_id == Entity.id, Relation.target_id == Entity.id))
            orphans = (await session.scalars(sa.delete(Entity).where(
                Entity.project_id == project_id, any_of(Entity.id, list(touched), _UUIDS),
                ~linked.exists(), ~related.exists()).returning(Entity.id))).all()
        return GraphErasure(entities=len(orphans), relations=len(ends))

    async def delete_scope(self, scope: ProjectScope, *, exact: bool = False) -> GraphErasure:
        async with self.database.session_scope() as session:
            relations = await session.execute(
                sa.delete(Relation).where(*_scope(Relation, scope, exact=exact)))
            entities = await session.execute(
                sa.delete(Entity).where(*_scope(Entity, scope, exact=exact)))
        return GraphErasure(entities=_count(entities), relations=_count(relations))

    async def clear_project(self, project_id: uuid.UUID) -> None:
        await self.delete_scope(ProjectScope(project_id))
