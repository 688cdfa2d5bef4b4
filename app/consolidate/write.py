"""Step 4, *write*: the plans applied in the caller's transaction, with history events and
sources, re-checked against what changed since they were made.

The scope lock keeps other consolidations out, but a client may have edited or deleted a
memory while the LLM was thinking: a plan whose memory is gone becomes an ADD. Identical
live text already stored (the unique index's word) turns an ADD into a NOOP.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.consolidate.context import EpisodeContext
from app.consolidate.resolve import Plan
from app.domain import lexical_context
from app.store.models import Memory
from app.store.repositories import episodes, history, memories
from app.store.repositories.episodes import SourceLink
from app.store.repositories.history import Cause, EventRecord
from app.store.repositories.memories import NewMemory


@dataclass
class _Writer:
    session: AsyncSession
    context: EpisodeContext
    cause: Cause
    events: list[EventRecord]
    links: list[SourceLink]
    results: list[dict[str, Any]]

    async def apply(self, plan: Plan, target: Memory | None) -> None:
        if plan.action == "NOOP" and target is not None:
            self._noop(plan, target)
        elif plan.action == "UPDATE" and target is not None:
            await self._update(plan, target)
        elif plan.action == "SUPERSEDE" and target is not None:
            await self._supersede(plan, target)
        else:
            await self._add(plan)

    def _noop(self, plan: Plan, memory: Memory) -> None:
        self.links.append(SourceLink(memory.id, plan.fact.message_indices))
        self.results.append({"id": str(memory.id), "memory": memory.text, "event": "NOOP"})

    async def _insert(self, plan: Plan) -> tuple[uuid.UUID, Memory | None]:
        """The new row's id, or the id of the live memory that already holds the text."""
        said = [self.context.turns[i].content for i in plan.fact.message_indices
                if 0 <= i < len(self.context.turns)]
        item = NewMemory(plan.text, plan.content_hash, dict(self.context.metadata),
                         plan.embedding, self.context.expires_at, plan.fact.valid_at,
                         lexical_context(said, self.context.observed_at),
                         lasting=plan.fact.lasting)
        found = await memories.insert_or_find(self.session, self.context.project_id,
                                              self.context.scope, [item])
        return found[plan.content_hash]

    async def _add(self, plan: Plan) -> None:
        memory_id, holder = await self._insert(plan)
        if holder is not None:
            self._noop(plan, holder)
            return
        self._record(memory_id, "ADD", None, plan, decision=plan.action)
        self.results.append({"id": str(memory_id), "memory": plan.text, "event": "ADD"})

    async def _update(self, plan: Plan, target: Memory) -> None:
        old_text = target.text
        try:
            async with self.session.begin_nested():
                await memories.update_content(self.session, target, text=plan.text,
                                              content_hash=plan.content_hash,
                                              embedding=plan.embedding, metadata=None)
        except IntegrityError:  # the merged text is another live memory word for word
            self._noop(plan, target)
            return
        self._record(target.id, "UPDATE", old_text, plan, decision="UPDATE")
        self.results.append({"id": str(target.id), "memory": plan.text, "event": "UPDATE",
                             "previous_memory": old_text})

    async def _supersede(self, plan: Plan, target: Memory) -> None:
        new_id, holder = await self._insert(plan)
        await self.retire(plan, target, new_id)
        if holder is None:
            self._record(new_id, "ADD", None, plan, decision="SUPERSEDE", related=target.id)
        else:
            self.links.append(SourceLink(new_id, plan.fact.message_indices))
        self.results.append(_superseding(new_id, plan, target))

    async def retire(self, plan: Plan, target: Memory, new_id: uuid.UUID) -> None:
        """``target`` superseded by the memory ``new_id`` holding ``plan``'s fact."""
        start = target.valid_at or target.created_at
        ended = plan.fact.valid_at
        if ended < start:  # the model's day predates the old fact: end it when we heard
            ended = max(start, self.context.observed_at)
        await memories.supersede(self.session, target, by=new_id, invalid_at=ended)
        self.events.append(EventRecord(
            target.id, "SUPERSEDE", target.text, plan.text, None, None, cause=self.cause,
            message_indices=plan.fact.message_indices, decision="SUPERSEDE",
            related_memory_id=new_id))

    def _record(self, memory_id: uuid.UUID, event: str, old_text: str | None, plan: Plan, *,
                decision: str, related: uuid.UUID | None = None) -> None:
        self.events.append(EventRecord(
            memory_id, event, old_text, plan.text, None, None, cause=self.cause,
            message_indices=plan.fact.message_indices, decision=decision,
            related_memory_id=related))
        self.links.append(SourceLink(memory_id, plan.fact.message_indices))


def _superseding(new_id: uuid.UUID, plan: Plan, target: Memory) -> dict[str, Any]:
    return {"id": str(new_id), "memory": plan.text, "event": "SUPERSEDE",
            "previous_memory": target.text, "previous_id": str(target.id)}


async def write(session: AsyncSession, context: EpisodeContext, plans: list[Plan],
                cause: Cause) -> list[dict[str, Any]]:
    """Applies the plans; returns the job's results, one per fact, in fact order."""
    targets = await memories.live_by_ids(
        session, context.project_id,
        sorted({plan.target.id for plan in plans if plan.target is not None}))
    writer = _Writer(session, context, cause, [], [], [])
    for plan in plans:
        await writer.apply(plan, targets.get(plan.target.id) if plan.target else None)
    await history.add_events(session, context.project_id, writer.events, actor_key_id=None,
                              request_id=None)
    await episodes.link_sources(session, context.project_id, context.episode_id, writer.links)
    return writer.results


async def supersede_added(session: AsyncSession, context: EpisodeContext, plans: list[Plan],
                          results: list[dict[str, Any]], targets: dict[int, Memory],
                          cause: Cause) -> list[dict[str, Any]]:
    """Each fact number in ``targets`` whose fact was written as an ADD (before the model's
    answer or the graph step said it ends that memory) supersedes the memory, as ``write``
    would have had the decision said so, its ADD event included. A target a client changed
    or deleted meanwhile is read again here and passed over when no longer current. Returns
    the job's results (``results``: per fact, in fact order) with those ADDs become
    SUPERSEDEs."""
    current = await memories.live_by_ids(session, context.project_id,
                                         sorted({target.id for target in targets.values()}))
    writer = _Writer(session, context, cause, [], [], list(results))
    for index, target in sorted(targets.items()):
        if target.id not in current or results[index]["event"] != "ADD":
            continue
        target = current[target.id]
        new_id = uuid.UUID(results[index]["id"])
        await writer.retire(plans[index], target, new_id)
        await history.mark_superseding(session, context.project_id, new_id, cause.job_id,
                                       target.id)
        writer.results[index] = _superseding(new_id, plans[index], target)
    await history.add_events(session, context.project_id, writer.events, actor_key_id=None,
                             request_id=None)
    return writer.results
