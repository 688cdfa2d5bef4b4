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

from app.llm import ChatMessage

# -- extract ---------------------------------------------------------------------------------

EXTRACT_VERSION = "extract/v1"


# Bounds on what the model may write. They reach the endpoint as JSON-schema limits, which
# grammar-constrained servers (llama.cpp) enforce token by token: a small model that starts
# repeating itself inside a string is cut off at the bound instead of at max_tokens.
MAX_FACT_CHARS = 300
MAX_FACTS_PER_REPLY = 40


class Fact(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_FACT_CHARS,
                      description="One self-contained statement, understandable alone.")
    source_messages: list[int] = Field(
        min_length=1, description="Numbers of the messages that state the fact.")
    valid_from: date | None = Field(
        description="The day the fact became true, when the conversation says; else null.")


class ExtractedFacts(BaseModel):
    facts: list[Fact] = Field(max_length=MAX_FACTS_PER_REPLY)


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
        max_length=2 * MAX_FACT_CHARS,
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



# -- graph -----------------------------------------------------------------------------------

GRAPH_VERSION = "graph/v1"
EntityKind = Literal["person", "place", "organization", "object", "event", "concept", "animal",
                     "food", "activity", "other"]


class GraphEntity(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="The name as the facts use it.")
    type: EntityKind
    summary: str = Field(max_length=120, description="A few words on who or what it is.")


class GraphRelation(BaseModel):
    source: str = Field(min_length=1, max_length=100, description="An entity name from the list.")
    relation: str = Field(min_length=1, max_length=64,
                          description="snake_case, e.g. lives_in, works_at, sister_of, likes.")
    target: str = Field(min_length=1, max_length=100, description="An entity name from the list.")
    fact: int = Field(description="Number of the fact that states it.")
    valid_from: date | None = Field(description="The day it became true, when known; else null.")
    exclusive: bool = Field(description="True when the source holds only one such relation at a "
                            "time (lives_in, works_at, married_to).")


class ExtractedGraph(BaseModel):
    entities: list[GraphEntity] = Field(max_length=MAX_FACTS_PER_REPLY)
    relations: list[GraphRelation] = Field(max_length=MAX_FACTS_PER_REPLY)


_GRAPH_SYSTEM = """\
You turn facts into a knowledge graph. List the people, places, organizations, things and \
events the facts mention, each once, by the name the facts use; call the user "User" unless \
the facts give their name. Then list the relations between those entities that the facts \
state, each with the number of its fact. Use snake_case relation names. Nothing to list: \
{"entities": [], "relations": []}.\
"""


def graph_messages(facts: Sequence[NewFact], observed_at: datetime) -> list[ChatMessage]:
    numbered = "\n".join(f"[{index}] {fact.text}{_since(fact.valid_from)}"
                         for index, fact in enumerate(facts))
    return [ChatMessage(role="system", content=_GRAPH_SYSTEM),
            ChatMessage(role="user",
                        content=f"Facts (told on {_day(observed_at)}):\n{numbered}")]
