"""Adding memories: ``infer=false`` stores each message verbatim (``Stored``); ``infer=true``
stores the conversation as an episode with a consolidation job (``Accepted``); a retried
idempotent request gets the first answer (``Replayed``). The router maps each to its status."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Caller
from app.domain import Scope, content_hash, embedding_text, lexical_context, normalise
from app.embeddings import Embedder
from app.errors import Conflict, IdempotencyKeyReused, ValidationFailed
from app.ingest.schemas import AddedMemory, AddResponse, MemoryCreate
from app.jobs.queue import JobQueue
from app.jobs.schemas import JobAccepted
from app.jobs.service import enqueue_after_commit
from app.store.repositories import episodes, idempotency, jobs
from app.store.repositories import memories as repository
from app.store.repositories.memories import EventRecord, NewMemory


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


async def add(session: AsyncSession, embedder: Embedder, queue: JobQueue, caller: Caller,
              body: MemoryCreate, header_key: str | None) -> AddOutcome:
    """Stores what ``body`` asks for in the caller's transaction; a retried idempotent
    request changes nothing and gets the first answer back."""
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
        outcome = Accepted(await _add_episode(session, queue, caller, body, key))
        status, answer = 202, outcome.job.model_dump(mode="json")
    else:
        outcome = Stored(await _add_verbatim(session, embedder, caller, body))
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


async def _add_episode(session: AsyncSession, queue: JobQueue, caller: Caller,
                       body: MemoryCreate, key: str | None) -> JobAccepted:
    """The messages exactly as sent, and a job to consolidate them, in the request's
    transaction; the job is enqueued only once that commits."""
    if not any(normalise(message.content) for message in body.messages):
        raise ValidationFailed("messages: every message is empty")
    episode = await episodes.add(
        session, caller.project_id, Scope(body.user_id, body.agent_id, body.run_id),
        messages=[message.model_dump(exclude_none=True) for message in body.messages],
        metadata=body.metadata or {}, instructions=body.instructions, idempotency_key=key,
        observed_at=body.observed_at or datetime.now(UTC), expires_at=body.expires_at)
    job = await jobs.add(session, caller.project_id, episode.id)
    enqueue_after_commit(session, queue, job.id)
    return JobAccepted(job_id=job.id)


async def _add_verbatim(session: AsyncSession, embedder: Embedder, caller: Caller,
                        body: MemoryCreate) -> AddResponse:
    scope = Scope(body.user_id, body.agent_id, body.run_id)
    # One memory per non-empty message; repeats inside the request collapse onto the first.
    order: list[tuple[str, str]] = []
    first: dict[str, NewMemory] = {}
    for index, message in enumerate(body.messages):
        text = normalise(message.content)
        if not text:
            continue
        digest = content_hash(text)
        order.append((digest, text))
        if digest not in first:
            metadata = {**(body.metadata or {}), **(message.metadata or {}),
                        "role": message.role, "message_index": index}
            if message.name is not None:
                metadata["name"] = message.name
            around = [message.name or ""]
            if index > 0:
                before = body.messages[index - 1]
                around.append(f"{before.name}: {before.content}" if before.name
                              else before.content)
            first[digest] = NewMemory(text, digest, metadata, [], body.expires_at,
                                      body.observed_at, lexical_context(around,
                                                                        body.observed_at))
    if not first:
        raise ValidationFailed("messages: every message is empty")

    # Texts the scope already holds are not embedded again.
    existing = await repository.retire_expired_and_find(session, caller.project_id, scope,
                                                        list(first))
    pending = [item for digest, item in first.items() if digest not in existing]
    vectors = await embedder.embed([embedding_text(item.text, item.metadata)
                                    for item in pending])
    stored = await repository.insert_or_find(
        session, caller.project_id, scope,
        [dataclasses.replace(item, embedding=vector)
         for item, vector in zip(pending, vectors, strict=True)],
    )
    inserted = {digest: memory_id for digest, (memory_id, holder) in stored.items()
                if holder is None}
    ids = {digest: memory.id for digest, memory in existing.items()} | {
        digest: memory_id for digest, (memory_id, _) in stored.items()}
    await repository.add_events(session, caller.project_id, [
        EventRecord(memory_id, "ADD", None, first[digest].text, None, first[digest].metadata)
        for digest, memory_id in inserted.items()
    ], actor_key_id=caller.key_id, request_id=caller.request_id)

    results = []
    reported: set[str] = set()
    for digest, text in order:
        event: Literal["ADD", "NOOP"] = "ADD" if digest in inserted and \
            digest not in reported else "NOOP"
        results.append(AddedMemory(id=ids[digest], memory=text, event=event))
        reported.add(digest)
    return AddResponse(results=results)
