"""Step 2, *extract*: one LLM call turns the episode into self-contained facts, each with
the messages it came from and, when the conversation says, the day it became true."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time

from app.consolidate.context import EpisodeContext
from app.consolidate.prompts import EXTRACT_VERSION, ExtractedFacts, extract_messages
from app.domain import content_hash, normalise
from app.llm import Completion, LLMClient


@dataclass(frozen=True)
class ExtractedFact:
    text: str
    content_hash: str
    message_indices: tuple[int, ...]
    valid_at: datetime
    stated_valid_from: bool


async def extract(llm: LLMClient, context: EpisodeContext,
                  max_facts: int) -> tuple[list[ExtractedFact], Completion[ExtractedFacts]]:
    completion = await llm.complete(
        extract_messages(context.turns, context.observed_at, context.earlier,
                         context.instructions),
        ExtractedFacts, prompt_version=EXTRACT_VERSION)
    return clean_facts(completion.value, context, max_facts), completion


def clean_facts(extracted: ExtractedFacts, context: EpisodeContext,
                max_facts: int) -> list[ExtractedFact]:
    """What the model said, made safe to store: texts normalised, repeats merged, message
    numbers kept to this episode's non-empty messages, days never after the conversation.

    A fact that cites no real message is attributed to all of the episode's messages rather
    than dropped: it came from this conversation, only the model's pointer is wrong.
    """
    stated = [index for index, turn in enumerate(context.turns) if turn.content.strip()]
    allowed = set(stated)
    merged: dict[str, ExtractedFact] = {}
    for fact in extracted.facts:
        text = normalise(fact.text)
        if not text:
            continue
        indices = sorted({index for index in fact.source_messages if index in allowed}) or stated
        valid_at, stated_day = context.observed_at, False
        if fact.valid_from is not None:
            day = datetime.combine(fact.valid_from, time(), tzinfo=UTC)
            if day <= context.observed_at:
                valid_at, stated_day = day, True
        digest = content_hash(text)
        if digest in merged:
            previous = merged[digest]
            indices = sorted(set(previous.message_indices) | set(indices))
            merged[digest] = ExtractedFact(text, digest, tuple(indices), previous.valid_at,
                                           previous.stated_valid_from)
        elif len(merged) < max_facts:
            merged[digest] = ExtractedFact(text, digest, tuple(indices), valid_at, stated_day)
    return list(merged.values())
