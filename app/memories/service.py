"""Reading, changing and deleting memories; every change writes a history event."""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Caller
from app.domain import (
    CURRENT,
    EVERY,
    Filter,
    Scope,
    Timeline,
    content_hash,
    embedding_text,
    normalise,
)
from app.embeddings import Embedder
from app.errors import Conflict, NotFound, ValidationFailed
from app.memories.schemas import MemoryDetail, MemorySourceRead, MemoryUpdate
from app.store.models import Memory, MemoryEvent
from app.store.repositories import episodes, scopes
from app.store.repositories import history as events
from app.store.repositories import memories as repository
from app.store.repositories.history import EventRecord
from app.store.repositories.scopes import ScopeKind


def _not_found(memory_id: uuid.UUID) -> NotFound:
    return NotFound(f"memory {memory_id} not found")


async def get(session: AsyncSession, caller: Caller, memory_id: uuid.UUID) -> MemoryDetail:
    """Any memory not deleted or expired, superseded ones included, with its lineage and
    sources."""
    memory = await repository.get(session, caller.project_id, memory_id, timeline=EVERY)
    if memory is None:
        raise _not_found(memory_id)
    supersedes = await repository.superseded_ids(session, caller.project_id, memory.id)
    found = await episodes.sources(session, caller.project_id, [memory.id])
    return MemoryDetail.of(memory, supersedes=supersedes, sources=[
        MemorySourceRead.of(episode, indices) for episode, indices in found.get(memory.id, [])
    ])


def encode_cursor(memory_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(memory_id.bytes).decode().rstrip("=")


def decode_cursor(cursor: str) -> uuid.UUID:
    try:
        return uuid.UUID(bytes=base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise ValidationFailed("cursor: not a cursor this API returned") from None


async def list_page(session: AsyncSession, caller: Caller, scope: Scope,
                    filter_tree: Filter | None, limit: int, cursor: str | None,
                    seen: Timeline = CURRENT) -> tuple[Sequence[Memory], str | None]:
    before = decode_cursor(cursor) if cursor else None
    rows = await repository.page(session, caller.project_id, scope, filter_tree, limit + 1,
                                 before, seen)
    if len(rows) > limit:
        return rows[:limit], encode_cursor(rows[limit - 1].id)
    return rows, None


async def list_numbered(session: AsyncSession, caller: Caller, scope: Scope,
                        filter_tree: Filter | None, page: int, size: int,
                        seen: Timeline = CURRENT) -> tuple[Sequence[Memory], int]:
    """Page ``page`` (from 1) of ``size`` memories, newest first, and how many there are in
    all: the listing of ``list_page`` numbered instead of cursored."""
    rows = await repository.page(session, caller.project_id, scope, filter_tree, size, None,
                                 seen, offset=(page - 1) * size)
    total = await repository.count(session, caller.project_id, scope, filter_tree, seen)
    return rows, total


async def scope_ids(session: AsyncSession, caller: Caller) -> list[scopes.ScopeId]:
    """The user, agent and run ids the caller's project holds memories of."""
    return await scopes.scope_ids(session, caller.project_id)


async def scope_page(session: AsyncSession, caller: Caller, kind: ScopeKind,
                     prefix: str | None, limit: int,
                     cursor: str | None) -> tuple[list[tuple[str, int]], str | None]:
    """A page of the project's user, agent or run ids (with their memory counts) and the
    cursor of the next (None at the end)."""
    rows = await scopes.page(session, caller.project_id, kind, prefix, limit + 1, cursor)
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1][0]
    return rows, None


async def update(session: AsyncSession, embedder: Embedder, caller: Caller,
                 memory_id: uuid.UUID, change: MemoryUpdate) -> Memory:
    if change.text is None and change.metadata is None:
        raise ValidationFailed("body: give text and/or metadata to change")
    memory = await repository.get(session, caller.project_id, memory_id, for_update=True)
    if memory is None:
        raise _not_found(memory_id)
    old_text, old_metadata = memory.text, dict(memory.metadata_)
    text = digest = vector = None
    if change.text is not None:
        text = normalise(change.text)
        if not text:
            raise ValidationFailed("text: must not be blank")
        if text != memory.text:
            digest = content_hash(text)
            # An expired memory holding this text gives up its place, as on add.
            await repository.retire_expired_and_find(
                session, caller.project_id,
                Scope(memory.user_id, memory.agent_id, memory.run_id), [digest])
            (vector,) = await embedder.embed([embedding_text(
                text, change.metadata if change.metadata is not None else old_metadata)])
        else:
            text = None
    if text is None and (change.metadata is None or change.metadata == old_metadata):
        return memory  # nothing changes, nothing to record
    try:
        async with session.begin_nested():
            await repository.update_content(session, memory, text=text, content_hash=digest,
                                            embedding=vector, metadata=change.metadata)
    except IntegrityError:
        raise Conflict("an identical memory already exists in this scope") from None
    await events.add_events(session, caller.project_id, [EventRecord(
        memory.id, "UPDATE", old_text, memory.text, old_metadata, memory.metadata_,
    )], actor_key_id=caller.key_id, request_id=caller.request_id)
    return memory


async def history(session: AsyncSession, caller: Caller,
                  memory_id: uuid.UUID) -> Sequence[MemoryEvent]:
    """Oldest first; an erased memory has none (it is not found)."""
    if not await repository.exists_any(session, caller.project_id, memory_id):
        raise _not_found(memory_id)
    return await events.history(session, caller.project_id, memory_id)
