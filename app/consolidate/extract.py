"""Step 2, *extract*: the episode's messages become short facts, each with the messages it
came from and, when they say, the day it became true.

* **Windows.** A long episode is read in windows of at most ``WINDOW_TURNS`` messages and
  ``WINDOW_CHARS`` characters, one LLM call each, the last messages of the previous window
  shown as context: a small model keeps track of a dozen turns, not of fifty.
* **Bounded replies.** Each call may write at most a number of tokens proportional to its
  window, so a model that starts copying the conversation is cut early (and re-asked once,
  by the LLM client) instead of running to the global ``max_tokens``; a window that runs
  away twice is split in two.
* **Dates in code.** The model copies a fact's time words ("last March"); ``dates`` turns them
  into a day against when the conversation took place.
* **Citations checked.** A model citing the wrong message, or every message, for one fact is
  held to those that share its words (see ``cited``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time

from app.consolidate.context import EpisodeContext
from app.consolidate.dates import resolve_when
from app.consolidate.prompts import (
    EXAMPLE_NAMES,
    EXTRACT_VERSION,
    ExtractedFacts,
    Turn,
    extract_messages,
)
from app.domain import content_hash, normalise, stems, word_key
from app.errors import LLMError, LLMOutputError
from app.llm import Completion, LLMClient

logger = logging.getLogger(__name__)

WINDOW_TURNS = 12
WINDOW_CHARS = 3000
CONTEXT_TURNS = 2  # of the previous window (or the previous episode), shown before a window
TOKENS_PER_TURN = 60  # a reply's budget: facts of a turn are rarely more than two sentences
MIN_REPLY_TOKENS = 160
EXAMPLE_STEMS = frozenset(stems(" ".join(EXAMPLE_NAMES), 3))  # what a copied example holds


@dataclass(frozen=True)
class ExtractedFact:
    text: str
    content_hash: str
    message_indices: tuple[int, ...]
    valid_at: datetime
    stated_valid_from: bool
    # A state holds until something ends it; an event, once told, never stops being true
    # (``prompts.Fact.type``), so no later fact is checked against it.
    lasting: bool = True


def windows(turns: Sequence[Turn]) -> list[list[tuple[int, Turn]]]:
    """The non-empty messages, numbered as in the episode, cut into windows."""
    said = [(index, turn) for index, turn in enumerate(turns) if turn.content.strip()]
    found: list[list[tuple[int, Turn]]] = []
    current: list[tuple[int, Turn]] = []
    size = 0
    for item in said:
        length = len(item[1].content)
        if current and (len(current) >= WINDOW_TURNS or size + length > WINDOW_CHARS):
            found.append(current)
            current, size = [], 0
        current.append(item)
        size += length
    if current:
        found.append(current)
    return found


@dataclass
class Extraction:
    facts: list[ExtractedFact]
    completions: list[Completion[ExtractedFacts]] = field(default_factory=list)
    failures: list[LLMOutputError] = field(default_factory=list)  # paid for, then split


async def extract(llm: LLMClient, context: EpisodeContext, max_facts: int) -> Extraction:
    """The facts of every window, merged; with what each call cost."""
    done = Extraction([])
    before = [turn for episode in context.earlier for turn in episode][-CONTEXT_TURNS:]
    try:
        for window in windows(context.turns):
            await _extract_window(llm, context, window, before, done)
            before = [turn for _, turn in window[-CONTEXT_TURNS:]]
    except LLMError as exc:  # the job fails: it is charged for every call made, not the last
        for completion in done.completions:
            exc.prompt_tokens += completion.usage.prompt_tokens
            exc.completion_tokens += completion.usage.completion_tokens
            exc.replies += completion.attempts
            exc.truncated += completion.truncated
        for failure in done.failures:
            exc.prompt_tokens += failure.prompt_tokens
            exc.completion_tokens += failure.completion_tokens
            exc.replies += failure.replies
            exc.truncated += failure.truncated
        raise
    done.facts = merge(done.facts, max_facts)
    return done


async def _extract_window(llm: LLMClient, context: EpisodeContext,
                          window: list[tuple[int, Turn]], before: list[Turn],
                          done: Extraction) -> None:
    """One window's facts into ``done``. A window the model ran away on twice (the client
    re-asks a runaway once) is split in two and each half asked on its own: a small model
    that starts copying one long message derails the whole window, and only that message's
    half stays at risk. A single message that still runs away fails the job (retryable; its
    messages stay searchable)."""
    try:
        completion = await llm.complete(
            extract_messages(window, context.observed_at, before, context.instructions),
            ExtractedFacts, prompt_version=EXTRACT_VERSION,
            max_tokens=max(MIN_REPLY_TOKENS, TOKENS_PER_TURN * len(window)))
    except LLMOutputError as exc:
        if not exc.truncated or len(window) < 2:
            raise
        logger.warning("episode %s: extraction of messages %d-%d ran away, split in two",
                       context.episode_id, window[0][0], window[-1][0])
        done.failures.append(exc)
        half = len(window) // 2
        await _extract_window(llm, context, window[:half], before, done)
        await _extract_window(llm, context, window[half:],
                              [turn for _, turn in window[:half][-CONTEXT_TURNS:]], done)
        return
    done.completions.append(completion)
    done.facts += clean_facts(completion.value, context, [index for index, _ in window], before)


def clean_facts(extracted: ExtractedFacts, context: EpisodeContext, window: Sequence[int],
                before: Sequence[Turn] = ()) -> list[ExtractedFact]:
    """What the model said of one window, made safe to store: texts normalised, citations
    kept to the window's messages and checked (``cited``), time words the window contains
    turned into a day no later than the conversation. A fact whose words are only in what
    was said before the window (shown as context) is dropped: a small model copies facts
    out of the context, which were extracted when it was new. So is a fact about an unnamed
    assistant (the agent itself: "Assistant thanks Hana."): memories are of the people it
    talks with, and what it said stays searchable as messages. So is a fact naming someone or
    something of the worked example (``EXAMPLE_NAMES``) that neither the window nor what was
    said before it names: the model copied it from the example."""
    found = []
    said = " ".join(" ".join(context.turns[index].content.split()) for index in window).lower()
    speakers = {word for index in window for word in stems(context.turns[index].speaker, 3)}
    agents = {turn.speaker.lower() for index in window
              if (turn := context.turns[index]).role == "assistant"
              and not (turn.name or "").strip()}
    in_window = stems(said, 3)
    in_context = stems(" ".join(turn.content for turn in before), 3)
    copied = EXAMPLE_STEMS - in_window - in_context - speakers
    for fact in extracted.facts:
        text = normalise(fact.text)
        if not text:
            continue
        words = stems(text, 3) - speakers
        if words & copied or (words and not words & in_window and words & in_context):
            continue
        if word_key(text.split(maxsplit=1)[0]) in agents:
            continue
        indices = cited(text, fact.source_messages, context.turns, window)
        valid_at, stated = context.observed_at, False
        # Time words the conversation does not contain are the model's invention (a small
        # model repeats the worked example's): only words actually said are resolved.
        when = " ".join((fact.when or "").split()).lower()
        day = resolve_when(when, context.observed_at) if when and when in said else None
        if day is not None:
            valid_at, stated = datetime.combine(day, time(), tzinfo=UTC), True
        found.append(ExtractedFact(text, content_hash(text), indices, valid_at, stated,
                                   lasting=fact.type == "state"))
    return found


def cited(text: str, named: Sequence[int], turns: Sequence[Turn],
          window: Sequence[int]) -> tuple[int, ...]:
    """The messages a fact came from, by the words it shares with each message of the window,
    each word weighing 1 / the number of messages holding it (a name said everywhere points
    nowhere); speakers' names do not count (a fact starts with one by design). Those the model
    named are kept when they score at least half the best message's; otherwise the window's
    messages that do. A fact sharing no word with any message keeps what the model named (or
    the whole window): it came from this conversation, only the pointer is unsure."""
    allowed = [index for index in dict.fromkeys(named) if index in window]
    speakers = {word for index in window for word in stems(turns[index].speaker, 3)}
    words = stems(text, 3) - speakers
    held = {index: stems(turns[index].content, 3) & words for index in window}
    holders: dict[str, int] = {}
    for shared in held.values():
        for word in shared:
            holders[word] = holders.get(word, 0) + 1
    score = {index: sum(1 / holders[word] for word in shared) for index, shared in held.items()}
    best = max(score.values(), default=0.0)
    if best == 0:
        return tuple(sorted(allowed or window))
    kept = [index for index in allowed if 2 * score[index] >= best]
    return tuple(sorted(kept or (index for index in window if 2 * score[index] >= best)))


def merge(facts: Sequence[ExtractedFact], max_facts: int) -> list[ExtractedFact]:
    """Repeats (the same text from two windows) become one fact citing both, a state if
    either telling says so (it stays open to change); at most ``max_facts``, in order."""
    merged: dict[str, ExtractedFact] = {}
    for fact in facts:
        previous = merged.get(fact.content_hash)
        if previous is not None:
            indices = tuple(sorted(set(previous.message_indices) | set(fact.message_indices)))
            merged[fact.content_hash] = ExtractedFact(
                previous.text, previous.content_hash, indices, previous.valid_at,
                previous.stated_valid_from, previous.lasting or fact.lasting)
        elif len(merged) < max_facts:
            merged[fact.content_hash] = fact
    return list(merged.values())
