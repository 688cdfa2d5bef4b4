"""The ``GraphStore`` seam: entities and relations of a project's conversations.

Two implementations keep one contract (``tests/graph/test_contract.py``): Postgres tables
(the embedded default) and Neo4j (``ANAMNESIS_NEO4J__URL``). Both are written by id, so a
replay writes the same rows again instead of new ones, and every read and write names the
project. Decisions (which mention is which entity, which relation a new one retires) are
made above the store, from what these reads return; the store only keeps and finds.

EntityRecord types become Neo4j labels and relation types become relationship types, so both pass
an allow-list (``entity_type``, ``relation_type``) before they reach a store.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from app.domain import CURRENT, ProjectScope, Timeline

ENTITY_TYPES = ("person", "place", "organization", "object", "event", "concept", "animal",
                "food", "activity", "other")
_RELATION_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def entity_type(value: str) -> str:
    """One of ``ENTITY_TYPES``; anything else is ``other``."""
    normal = value.strip().lower()
    return normal if normal in ENTITY_TYPES else "other"


def relation_type(value: str) -> str | None:
    """``value`` as snake_case (``Lives In`` → ``lives_in``), or None when nothing usable
    remains."""
    normal = re.sub(r"[^a-z0-9]+", "_", value.strip().lower()).strip("_")
    if normal and normal[0].isdigit():
        normal = f"r_{normal}"
    return normal if _RELATION_TYPE.match(normal) else None


def name_key(name: str) -> str:
    """What makes two entity names the same name: case, spacing and punctuation aside."""
    return " ".join(re.sub(r"[^\w]+", " ", name.casefold()).split())


@dataclass(frozen=True)
class EntityRecord:
    id: uuid.UUID
    project_id: uuid.UUID
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    name: str
    type: str
    summary: str
    embedding: list[float] = field(repr=False)
    created_at: datetime
    updated_at: datetime
    embedding_model: str  # the model of ``embedding`` ("" where a graph never recorded one)

    @property
    def key(self) -> str:
        return name_key(self.name)


@dataclass(frozen=True)
class RelationRecord:
    """``source`` —``type``→ ``target``, true from ``valid_at`` until ``invalid_at``.
    ``source_name``/``target_name`` are the names as mentioned, so a merged mention can be
    split off again with its relations."""

    id: uuid.UUID
    project_id: uuid.UUID
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    source_id: uuid.UUID
    target_id: uuid.UUID
    type: str
    source_name: str
    target_name: str
    valid_at: datetime
    invalid_at: datetime | None
    memory_id: uuid.UUID | None
    episode_id: uuid.UUID | None
    created_at: datetime


@dataclass(frozen=True)
class GraphErasure:
    """What a deletion removed from the graph."""

    entities: int = 0
    relations: int = 0


class GraphStore(Protocol):
    async def setup(self) -> None:
        """Constraints and indexes, created idempotently."""
        ...

    async def aclose(self) -> None: ...

    async def put_entities(self, entities: Sequence[EntityRecord]) -> None:
        """Insert, or update name/type/summary/embedding of, each entity by id."""
        ...

    async def put_relations(self, relations: Sequence[RelationRecord]) -> None:
        """Insert each relation by id, or update its ``invalid_at``."""
        ...

    async def link_memories(self, project_id: uuid.UUID,
                            links: Sequence[tuple[uuid.UUID, uuid.UUID]]) -> None:
        """(entity id, memory id) pairs: the memory mentions the entity."""
        ...

    async def get_entity(self, project_id: uuid.UUID,
                         entity_id: uuid.UUID) -> EntityRecord | None: ...

    async def find_entities(self, scope: ProjectScope, *, name: str | None = None,
                            limit: int = 100, after: uuid.UUID | None = None) -> list[EntityRecord]:
        """Entities of the scope (None ids match any), by id; ``name`` matches a part of the
        name, case aside; ``after`` is the last id of the previous page."""
        ...

    async def entity_named(self, scope: ProjectScope, key: str) -> EntityRecord | None:
        """The entity of exactly this scope whose ``name_key`` is ``key``."""
        ...

    async def entities_named_in(self, scope: ProjectScope, text: str,
                                limit: int) -> list[EntityRecord]:
        """Up to ``limit`` entities of the scope (sub-scopes included) whose whole name
        appears in ``text`` (as ``name_key`` words), longest names first: one lookup
        however long the text."""
        ...

    async def similar_entities(self, scope: ProjectScope, embedding: list[float],
                               limit: int, model: str) -> list[tuple[EntityRecord, float]]:
        """Entities of exactly this scope whose vector is of ``model`` (or of no recorded
        model), by cosine similarity to ``embedding``, highest first."""
        ...

    async def entities_to_embed(self, model: str, limit: int) -> list[tuple[uuid.UUID, str]]:
        """(id, name) of entities, any project's, whose vector is not of ``model``."""
        ...

    async def set_entity_embeddings(self, model: str,
                                    vectors: dict[uuid.UUID, list[float]]) -> None:
        """Each entity's vector, now of ``model`` (re-embedding after a model switch)."""
        ...

    async def find_relations(self, scope: ProjectScope, *, source: uuid.UUID | None = None,
                             target: uuid.UUID | None = None, type: str | None = None,
                             touching: Sequence[uuid.UUID] | None = None,
                             moment: Timeline = CURRENT, limit: int = 1000) -> list[RelationRecord]:
        """Relations of the scope matching every given filter; ``touching`` keeps those with
        both ends among these entities. Oldest first."""
        ...

    async def neighbors(self, project_id: uuid.UUID, entity_id: uuid.UUID, depth: int,
                        moment: Timeline = CURRENT) -> list[tuple[EntityRecord, int]]:
        """Entities reachable in at most ``depth`` hops over relations (either direction) seen
        at ``moment``, with their distance; the entity itself excluded."""
        ...

    async def memories_of(self, project_id: uuid.UUID,
                          entity_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
        """EntityRecord id → ids of the memories linked to it."""
        ...

    async def entities_of(self, project_id: uuid.UUID,
                          memory_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[uuid.UUID]]:
        """Memory id → ids of the entities it mentions."""
        ...

    async def delete_entity(self, project_id: uuid.UUID, entity_id: uuid.UUID) -> bool:
        """The entity, its relations and its memory links; False when it did not exist."""
        ...

    async def detach_memories(self, project_id: uuid.UUID,
                              memory_ids: Sequence[uuid.UUID]) -> GraphErasure:
        """Forget the memories' links and the relations they carried, then the entities they
        mentioned (or that ended those relations) left with no link and no relation: the
        graph keeps nothing read only from them."""
        ...

    async def delete_scope(self, scope: ProjectScope, *, exact: bool = False) -> GraphErasure:
        """Every entity and relation of the scope: None ids match any, or with ``exact``
        only None."""
        ...

    async def clear_project(self, project_id: uuid.UUID) -> None: ...
