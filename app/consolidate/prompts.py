"""The prompts of consolidation, each next to the model its reply must validate as.

A prompt's version is stored on every history event it causes; change the text of a
prompt, change its version. Prompts are short on purpose: they run on every episode, and
the bundled model is small (Mem0's extraction prompt alone is about 8k tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.limits import MAX_MEMORY_CHARS
from app.llm import ChatMessage

# -- extract ---------------------------------------------------------------------------------

EXTRACT_VERSION = "extract/v1"


class Fact(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_MEMORY_CHARS,
                      description="One self-contained statement, understandable alone.")
    source_messages: list[int] = Field(
        min_length=1, description="Numbers of the messages that state the fact.")
    valid_from: date | None = Field(
        description="The day the fact became true, when the conversation says; else null.")


class ExtractedFacts(BaseModel):
    facts: list[Fact]


_EXTRACT_SYSTEM = """\
You turn a conversation into memories worth keeping about the people in it: facts, \
preferences, plans, relationships, events. Each fact is one short, self-contained sentence \
that names who it is about ("User ...", or their name) and makes sense without the \
conversation. List in source_messages the numbers of the messages that state it. Set \
valid_from to the day it became true when the conversation tells (resolve "yesterday", \
"last year" against the conversation date), else null. Skip greetings, questions, small talk \
and the assistant's own suggestions unless the user took them up. Extract only from the \
numbered conversation; earlier conversation is context. Nothing worth keeping: {"facts": []}.\
"""


@dataclass(frozen=True)
class Turn:
    role: str
    content: str
    name: str | None = None

    def render(self) -> str:
        who = f"{self.role} ({self.name})" if self.name else self.role
        return f"{who}: {self.content}"


def extract_messages(turns: Sequence[Turn], observed_at: datetime,
                     earlier: Sequence[Sequence[Turn]], instructions: Sequence[str],
                     ) -> list[ChatMessage]:
    system = _EXTRACT_SYSTEM
    for extra in instructions:
        system += f"\n\nAlso follow these instructions:\n{extra}"
    parts = [f"Conversation date: {_day(observed_at)}"]
    if earlier:
        history = "\n".join(turn.render() for episode in earlier for turn in episode)
        parts.append(f"Earlier conversation (context only):\n{history}")
    numbered = "\n".join(f"[{index}] {turn.render()}" for index, turn in enumerate(turns))
    parts.append(f"Conversation:\n{numbered}")
    return [ChatMessage(role="system", content=system),
            ChatMessage(role="user", content="\n\n".join(parts))]


# -- resolve ---------------------------------------------------------------------------------

RESOLVE_VERSION = "resolve/v1"
Action = Literal["ADD", "UPDATE", "SUPERSEDE", "NOOP"]


class Decision(BaseModel):
    fact: int = Field(description="Number of the new fact.")
    action: Action
    memory: int | None = Field(
        description="Number of the existing memory it concerns; null for ADD.")
    text: str | None = Field(
        max_length=MAX_MEMORY_CHARS,
        description="For UPDATE: the merged memory text. Otherwise null (the fact is kept).")


class Decisions(BaseModel):
    decisions: list[Decision]


_RESOLVE_SYSTEM = """\
You keep a memory store correct. For each new fact choose one action:
ADD - new information, not in the existing memories.
UPDATE - the same fact as existing memory M, with more detail or a correction; give in text \
the merged memory.
SUPERSEDE - existing memory M was true but no longer is, because the new fact replaces it \
(moved house, changed job, changed mind).
NOOP - existing memory M already says it.
Refer to facts and memories by their numbers. One decision per fact.\
"""


@dataclass(frozen=True)
class Known:
    """An existing memory as the resolver sees it."""

    text: str
    valid_at: datetime | None


@dataclass(frozen=True)
class NewFact:
    text: str
    valid_from: date | None


def resolve_messages(facts: Sequence[NewFact], known: Sequence[Known],
                     observed_at: datetime) -> list[ChatMessage]:
    memories = "\n".join(f"[{index}] {item.text}{_since(item.valid_at)}"
                         for index, item in enumerate(known))
    new = "\n".join(f"[{index}] {fact.text}{_since(fact.valid_from)}"
                    for index, fact in enumerate(facts))
    content = (f"Existing memories:\n{memories}\n\n"
               f"New facts (told on {_day(observed_at)}):\n{new}")
    return [ChatMessage(role="system", content=_RESOLVE_SYSTEM),
            ChatMessage(role="user", content=content)]


def _day(moment: datetime) -> str:
    return moment.date().isoformat() + f" ({moment.strftime('%A')})"


def _since(moment: date | datetime | None) -> str:
    if moment is None:
        return ""
    day = moment.date() if isinstance(moment, datetime) else moment
    return f" (since {day.isoformat()})"

