"""API shapes of the caller's project."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.limits import MAX_INSTRUCTIONS_CHARS
from app.store.models import ApiKey, Project
from app.validation import OptionalStorableStr


class ProjectRead(BaseModel):
    id: uuid.UUID
    name: str
    instructions: str | None = Field(
        description="Extra extraction instructions applied to every episode of the project.")
    created_at: datetime

    @classmethod
    def of(cls, project: Project) -> ProjectRead:
        return cls(id=project.id, name=project.name, instructions=project.instructions,
                   created_at=project.created_at)


class ProjectUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instructions: OptionalStorableStr = Field(
        max_length=MAX_INSTRUCTIONS_CHARS,
        description='e.g. "Only keep food preferences." null or "" clears them.')


Scope = Literal["read", "write", "admin"]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: OptionalStorableStr = Field(default=None, max_length=255,
                                      description="A label for the key.")
    scopes: list[Scope] = Field(
        default=["read", "write"], min_length=1, max_length=3,
        description="read: list, get, search; write: add, change, erase; admin: project "
        "instructions and keys.")


class KeyRead(BaseModel):
    id: uuid.UUID
    prefix: str = Field(description="Shown in listings; revoke the key by it.")
    name: str | None
    scopes: list[Scope]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyRead:
        return cls(id=key.id, prefix=key.prefix, name=key.name,
                   scopes=[s for s in ("read", "write", "admin") if s in key.scopes],
                   created_at=key.created_at, last_used_at=key.last_used_at,
                   revoked_at=key.revoked_at)


class KeyCreated(KeyRead):
    key: str = Field(description="The key itself: shown this once, only its hash is stored.")


class KeyPage(BaseModel):
    results: list[KeyRead]


class KeyRevoked(BaseModel):
    prefix: str
    revoked: Literal[True] = True
