"""API shapes of the caller's project."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from app.limits import MAX_INSTRUCTIONS_CHARS
from app.store.models import Project
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
