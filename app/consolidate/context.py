"""Step 1, *context*: the episode to consolidate, read together with the scope's last few
episodes (short-term memory) and the extraction instructions that apply to it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.consolidate.prompts import Turn
from app.domain import CONVERSATION_GAP, Scope
from app.store.models import Episode
from app.store.repositories import episodes


@dataclass(frozen=True)
class EpisodeContext:
    episode_id: uuid.UUID
    project_id: uuid.UUID
    scope: Scope
    observed_at: datetime
    expires_at: datetime | None
    metadata: dict[str, Any]
    turns: list[Turn]
    earlier: list[list[Turn]]
    instructions: list[str]


def turns_of(episode: Episode) -> list[Turn]:
    return [Turn(role=str(message.get("role", "user")), content=str(message.get("content", "")),
                 name=message.get("name")) for message in episode.messages]


async def load_context(session: AsyncSession, episode: Episode,
                       earlier_episodes: int) -> EpisodeContext:
    """Earlier episodes of the scope count only when they continue the same conversation
    (``CONVERSATION_GAP``): a small model shown last month's chat as context extracts from
    it again instead of from the new one. Project instructions come first, then the call's
    own, so the call can refine them."""
    earlier = [previous for previous in
               await episodes.preceding(session, episode, earlier_episodes)
               if episode.observed_at - previous.observed_at <= CONVERSATION_GAP]
    instructions = [text for text in (
        await episodes.project_instructions(session, episode.project_id),
        episode.instructions,
    ) if text]
    return EpisodeContext(
        episode_id=episode.id, project_id=episode.project_id,
        scope=Scope(episode.user_id, episode.agent_id, episode.run_id),
        observed_at=episode.observed_at, expires_at=episode.expires_at,
        metadata=dict(episode.metadata_), turns=turns_of(episode),
        earlier=[turns_of(previous) for previous in earlier], instructions=instructions,
    )
