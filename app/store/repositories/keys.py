"""Projects and API keys (SQL only)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.store.ids import uuid7
from app.store.models import ApiKey, Project


async def get_or_create_project(session: AsyncSession, name: str) -> Project:
    await session.execute(
        insert(Project).values(id=uuid7(), name=name).on_conflict_do_nothing(
            index_elements=[Project.name]
        )
    )
    return (await session.execute(sa.select(Project).where(Project.name == name))).scalar_one()


async def add_key(session: AsyncSession, *, project_id: uuid.UUID, prefix: str,
                  key_hash: bytes, name: str | None,
                  scopes: Sequence[str] = ("read", "write", "admin")) -> ApiKey:
    key = ApiKey(id=uuid7(), project_id=project_id, prefix=prefix, key_hash=key_hash, name=name,
                 scopes=list(scopes))
    session.add(key)
    await session.flush()
    return key


async def find_active_key(session: AsyncSession, key_hash: bytes) -> ApiKey | None:
    return (await session.execute(
        sa.select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
    )).scalar_one_or_none()


async def touch_key(session: AsyncSession, key_id: uuid.UUID) -> None:
    await session.execute(
        sa.update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=sa.func.now())
    )


async def list_keys(session: AsyncSession,
                    project_name: str | None = None) -> Sequence[tuple[ApiKey, str]]:
    query = (sa.select(ApiKey, Project.name).join(Project, Project.id == ApiKey.project_id)
             .order_by(ApiKey.created_at))
    if project_name is not None:
        query = query.where(Project.name == project_name)
    return [(key, name) for key, name in (await session.execute(query)).all()]


async def project_keys(session: AsyncSession, project_id: uuid.UUID) -> Sequence[ApiKey]:
    query = (sa.select(ApiKey).where(ApiKey.project_id == project_id)
             .order_by(ApiKey.created_at, ApiKey.id))
    return (await session.scalars(query)).all()


async def revoke_key(session: AsyncSession, prefix: str, at: datetime | None = None, *,
                     project_id: uuid.UUID | None = None) -> bool:
    """Revokes the active key with this prefix (of ``project_id`` only, when given)."""
    owned = [] if project_id is None else [ApiKey.project_id == project_id]
    result = await session.execute(
        sa.update(ApiKey)
        .where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None), *owned)
        .values(revoked_at=at or sa.func.now())
        .returning(ApiKey.id)
    )
    return result.first() is not None


async def get_project(session: AsyncSession, project_id: uuid.UUID) -> Project | None:
    return await session.get(Project, project_id)


async def set_instructions(session: AsyncSession, project_id: uuid.UUID,
                           instructions: str | None) -> Project | None:
    statement = (sa.update(Project).where(Project.id == project_id)
                 .values(instructions=instructions).returning(Project)
                 .execution_options(synchronize_session=False))
    return (await session.execute(statement)).scalar_one_or_none()


async def project_named(session: AsyncSession, name: str) -> Project | None:
    return (await session.execute(sa.select(Project).where(Project.name == name))
            ).scalar_one_or_none()
