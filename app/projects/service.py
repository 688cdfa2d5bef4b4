"""The caller's own project: read it, set its extraction instructions."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Caller
from app.errors import NotFound
from app.projects.schemas import ProjectUpdate
from app.store.models import Project
from app.store.repositories import keys as repository


async def get(session: AsyncSession, caller: Caller) -> Project:
    project = await repository.get_project(session, caller.project_id)
    if project is None:  # the key authenticated a moment ago; only a concurrent drop does this
        raise NotFound("project not found")
    return project


async def update(session: AsyncSession, caller: Caller, change: ProjectUpdate) -> Project:
    instructions = (change.instructions or "").strip() or None
    project = await repository.set_instructions(session, caller.project_id, instructions)
    if project is None:
        raise NotFound("project not found")
    return project
