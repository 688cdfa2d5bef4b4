from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.deps import AdminDep, CallerDep, ResourcesDep, SessionDep
from app.projects import service
from app.projects.schemas import (
    KeyCreate,
    KeyCreated,
    KeyPage,
    KeyRead,
    KeyRevoked,
    ProjectRead,
    ProjectUpdate,
)
from app.validation import StorableStr

router = APIRouter(prefix="/v1/project", tags=["project"])
keys = APIRouter(prefix="/v1/keys", tags=["project"])


@router.get("", response_model=ProjectRead)
async def get_project(session: SessionDep, caller: CallerDep) -> ProjectRead:
    """The project the API key belongs to."""
    return ProjectRead.of(await service.get(session, caller))


@router.patch("", response_model=ProjectRead)
async def update_project(body: ProjectUpdate, session: SessionDep,
                         caller: AdminDep) -> ProjectRead:
    """Set (or clear) the extraction instructions used for every episode of the project."""
    return ProjectRead.of(await service.update(session, caller, body))


@keys.post("", response_model=KeyCreated, status_code=201)
async def create_key(body: KeyCreate, session: SessionDep, caller: AdminDep) -> KeyCreated:
    """A new key of this project (an admin key's): the key is in this answer only."""
    return await service.create_key(session, caller, body)


@keys.get("", response_model=KeyPage)
async def list_keys(session: SessionDep, caller: AdminDep) -> KeyPage:
    """The project's keys, revoked ones too, oldest first (prefixes, never the keys)."""
    return KeyPage(results=[KeyRead.of(key) for key in await service.keys(session, caller)])


@keys.delete("/{prefix}", response_model=KeyRevoked)
async def revoke_key(prefix: Annotated[StorableStr, Path(min_length=1, max_length=32)],
                     session: SessionDep, caller: AdminDep,
                     resources: ResourcesDep) -> KeyRevoked:
    """Revokes the project's key with this prefix; it stops working at once here (through
    other API processes within ``api.key_cache_s``)."""
    await service.revoke_key(session, caller, prefix)
    await session.commit()  # then forgotten: no request re-learns it as active meanwhile
    resources.gate.keys.forget(prefix)
    return KeyRevoked(prefix=prefix)
