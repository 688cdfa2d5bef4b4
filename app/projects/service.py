"""The caller's own project: read it, set its extraction instructions, manage its keys."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Caller, generate_key
from app.errors import NotFound
from app.projects.schemas import KeyCreate, KeyCreated, KeyRead, ProjectUpdate
from app.store.models import ApiKey, Project
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


async def create_key(session: AsyncSession, caller: Caller, body: KeyCreate) -> KeyCreated:
    """A new key of the caller's project; its plaintext is in this answer only."""
    new = generate_key()
    key = await repository.add_key(session, project_id=caller.project_id, prefix=new.prefix,
                                   key_hash=new.key_hash, name=body.name,
                                   scopes=sorted(set(body.scopes)))
    await session.refresh(key)
    return KeyCreated(**KeyRead.of(key).model_dump(), key=new.plaintext)


async def keys(session: AsyncSession, caller: Caller) -> Sequence[ApiKey]:
    return await repository.project_keys(session, caller.project_id)


async def revoke_key(session: AsyncSession, caller: Caller, prefix: str) -> None:
    if not await repository.revoke_key(session, prefix, project_id=caller.project_id):
        raise NotFound(f"no active key {prefix!r} in this project")
