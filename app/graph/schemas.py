"""API shapes of the graph: entities, relations, neighbourhoods."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.memories.schemas import MemoryRead
from app.store.graph.base import EntityRecord, RelationRecord
from app.validation import StorableStr


class EntityRead(BaseModel):
    id: uuid.UUID
    name: str
    type: str
    summary: str
    user_id: str | None
    agent_id: str | None
    run_id: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, entity: EntityRecord) -> EntityRead:
        return cls(id=entity.id, name=entity.name, type=entity.type, summary=entity.summary,
                   user_id=entity.user_id, agent_id=entity.agent_id, run_id=entity.run_id,
                   created_at=entity.created_at, updated_at=entity.updated_at)


class RelationRead(BaseModel):
    id: uuid.UUID
    source_id: uuid.UUID
    source_name: str = Field(description="The source as the conversation named it.")
    type: str
    target_id: uuid.UUID
    target_name: str
    valid_at: datetime
    invalid_at: datetime | None
    memory_id: uuid.UUID | None = Field(description="The memory that states it.")
    episode_id: uuid.UUID | None

    @classmethod
    def of(cls, relation: RelationRecord) -> RelationRead:
        return cls(id=relation.id, source_id=relation.source_id,
                   source_name=relation.source_name, type=relation.type,
                   target_id=relation.target_id, target_name=relation.target_name,
                   valid_at=relation.valid_at, invalid_at=relation.invalid_at,
                   memory_id=relation.memory_id, episode_id=relation.episode_id)


class AliasRead(BaseModel):
    alias: str
    reason: str
    score: float
    created_at: datetime


class EntityDetail(EntityRead):
    relations: list[RelationRead] = Field(description="Its current relations, both ways.")
    memories: list[MemoryRead] = Field(description="Current memories that mention it.")
    aliases: list[AliasRead] = Field(description="Other names merged into it.")


class UnmergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: StorableStr = Field(min_length=1, max_length=255,
                       description="The merged name to take apart, as listed in `aliases`.")


class Unmerged(BaseModel):
    entity: EntityRead | None = Field(description="The entity, without the alias; null when "
                                      "only the alias's mentions ever made it.")
    split: EntityRead | None = Field(description="The alias as an entity of its own, with the "
                                     "relations and memories that named it.")
    undone: int = Field(description="Merge records undone.")


class EntityPage(BaseModel):
    results: list[EntityRead]
    next_cursor: uuid.UUID | None


class Neighbor(BaseModel):
    entity: EntityRead
    distance: int


class NeighborsRead(BaseModel):
    results: list[Neighbor]


class RelationsRead(BaseModel):
    results: list[RelationRead]


class EntityDeleted(BaseModel):
    id: uuid.UUID
    deleted: Literal[True] = True
