"""Adding memories. Either way the conversation is stored as an episode and each message as a
``message`` memory, searchable at once; ``infer=true`` adds a consolidation job that distils
``fact`` memories from it (``Accepted``), ``infer=false`` stops there (``Stored``); a retried
idempotent request gets the first answer (``Replayed``). The router maps each to a status."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Caller
from app.domain import (
    CONVERSATION_GAP,
    Scope,
    content_hash,
    embedding_text,
    lexical_context,
    normalise,
)
from app.embeddings import Embedder
from app.errors import Conflict, IdempotencyKeyReused, ValidationFailed
from app.ingest.schemas import AddedMemory, AddResponse, MemoryCreate
from app.jobs.queue import JobQueue
from app.jobs.schemas import JobAccepted
from app.jobs.service import enqueue_after_commit
from app.store.models import Episode
from app.store.repositories import episodes, history, idempotency, jobs
from app.store.repositories import memories as repository
from app.store.repositories.episodes import SourceLink
from app.store.repositories.history import EventRecord
from app.store.repositories.memories import NewMemory
from app.throttle import Throttle


@dataclass(frozen=True)
class Stored:
    """``infer=false``: the messages are memories now (201)."""

    response: AddResponse


@dataclass(frozen=True)
class Accepted:
    """``infer=true``: the episode and its job are stored; the job runs after commit (202)."""

    job: JobAccepted


@dataclass(frozen=True)
class Replayed:
    """A retried idempotent request: the first request's answer, as it was."""

    status_code: int
    body: dict[str, Any]

    @property
    def job_id(self) -> uuid.UUID | None:
        """The job the first request started, if it started one."""
        job_id = self.body.get("job_id") if self.status_code == 202 else None
        return uuid.UUID(job_id) if isinstance(job_id, str) else None


AddOutcome = Stored | Accepted | Replayed



async def add(session: AsyncSession, embedder: Embedder, queue: JobQueue, throttle: Throttle,
              caller: Caller, body: MemoryCreate, header_key: str | None) -> AddOutcome:
    """Stores what ``body`` asks for in the caller's transaction; a retried idempotent
    request changes nothing and gets the first answer back. A new ``infer=true`` episode
    waits while the project's daily LLM tokens are spent (429)."""
    key = _idempotency_key(body, header_key)
    if key is not None:
        previous = await idempotency.claim(session, caller.project_id, key, _request_hash(body))
        if previous is not None:
            if previous.request_hash != _request_hash(body):
                raise IdempotencyKeyReused(
                    f"idempotency key {key!r} was already used with a different request body"
                )
            if previous.response is None:  # claimed and committed without an answer: a bug
                raise Conflict(f"the request with idempotency key {key!r} has no stored answer")
            return Replayed(previous.status_code or 200, previous.response)
    outcome: Stored | Accepted
    if body.infer:
        await throttle.spend_tokens(session, caller.project_id)
        outcome = Accepted(await _add_episode(session, embedder, queue, caller, body, key))
        status, answer = 202, outcome.job.model_dump(mode="json")
    else:
        outcome = Stored(await _add_verbatim(session, embedder, caller, body, key))
        status, answer = 201, outcome.response.model_dump(mode="json")
    if key is not None:
        await idempotency.complete(session, caller.project_id, key, status, answer)
    return outcome


def _idempotency_key(body: MemoryCreate, header_key: str | None) -> str | None:
    if header_key is not None and body.idempotency_key is not None \
            and header_key != body.idempotency_key:
        raise ValidationFailed("Idempotency-Key header and body.idempotency_key differ")
    return body.idempotency_key or header_key


def _request_hash(body: MemoryCreate) -> str:
    # ``wait`` changes how long the answer takes, not what is stored.
    canonical = body.model_dump(mode="json", exclude={"idempotency_key", "wait"})
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


async def _add_episode(session: AsyncSession, embedder: Embedder, queue: JobQueue,
                       caller: Caller, body: MemoryCreate, key: str | None) -> JobAccepted:
    """The conversation stored (``_store_conversation``) with a job to consolidate it, in the
    request's transaction; the job is enqueued only once that commits."""
    episode, _ = await _store_conversation(session, embedder, caller, body, key)
    job = await jobs.add(session, caller.project_id, episode.id)
    enqueue_after_commit(session, queue, job.id)
    return JobAccepted(job_id=job.id)


async def _add_verbatim(session: AsyncSession, embedder: Embedder, caller: Caller,
                        body: MemoryCreate, key: str | None) -> AddResponse:
    _, stored = await _store_conversation(session, embedder, caller, body, key)
    return AddResponse(results=[AddedMemory(id=memory_id, memory=text, event="ADD")
                                for memory_id, text in stored])


async def _store_conversation(session: AsyncSession, embedder: Embedder, caller: Caller,
                              body: MemoryCreate, key: str | None
                              ) -> tuple[Episode, list[tuple[uuid.UUID, str]]]:
    """The messages exactly as sent (the episode), and one ``message`` memory per non-empty
    message, linked to its place in the episode: searchable as soon as the request commits,
    whatever consolidation later makes of them. Returns the episode and (id, text) of each
    message memory, in order."""
    said = [(index, text) for index, message in enumerate(body.messages)
            if (text := normalise(message.content))]
    if not said:
        raise ValidationFailed("messages: every message is empty")
    scope = Scope(body.user_id, body.agent_id, body.run_id)
    observed_at = body.observed_at or datetime.now(UTC)
    # The turn before the first message, when this add continues a conversation of the scope
    # (one message per add, as most agents post): its context is then what it would be had
    # the whole conversation come in one add.
    earlier = await repository.last_message(session, caller.project_id, scope, observed_at,
                                            CONVERSATION_GAP)
    episode = await episodes.add(
        session, caller.project_id, scope,
        messages=[message.model_dump(exclude_none=True) for message in body.messages],
        metadata=body.metadata or {}, instructions=body.instructions, idempotency_key=key,
        observed_at=observed_at, expires_at=body.expires_at)
    # The conversation goes on when this add follows the scope's last message closely enough:
    # its turns are then numbered on from there, as if they had come in one add.
    conversation, first_turn = episode.id, 0
    if earlier is not None and earlier.conversation_id is not None and earlier.turn is not None:
        conversation, first_turn = earlier.conversation_id, earlier.turn + 1
    items = []
    for turn, (index, text) in enumerate(said, first_turn):
        message = body.messages[index]
        metadata = {**(body.metadata or {}), **(message.metadata or {}),
                    "role": message.role, "message_index": index}
        if message.name is not None:
            metadata["name"] = message.name
        around = [message.name or ""]
        if index > 0:
            before = body.messages[index - 1]
            around.append(_said(before.name, before.content))
        elif earlier is not None:
            name = earlier.metadata_.get("name")
            around.append(_said(name if isinstance(name, str) else None, earlier.text))
        items.append(NewMemory(text, content_hash(text), metadata, [], body.expires_at,
                               body.observed_at, lexical_context(around, body.observed_at),
                               conversation, turn))
    vectors = await embedder.embed([embedding_text(item.text, item.metadata) for item in items])
    ids = await repository.insert_messages(
        session, caller.project_id, scope,
        [dataclasses.replace(item, embedding=vector)
         for item, vector in zip(items, vectors, strict=True)])
    await episodes.link_sources(session, caller.project_id, episode.id, [
        SourceLink(memory_id, [index]) for memory_id, (index, _) in zip(ids, said, strict=True)])
    await history.add_events(session, caller.project_id, [
        EventRecord(memory_id, "ADD", None, item.text, None, item.metadata)
        for memory_id, item in zip(ids, items, strict=True)
    ], actor_key_id=caller.key_id, request_id=caller.request_id)
    return episode, [(memory_id, text) for memory_id, (_, text) in zip(ids, said, strict=True)]


def _said(name: str | None, text: str) -> str:
    return f"{name}: {text}" if name else text
