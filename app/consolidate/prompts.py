"""The prompts of consolidation, each next to the model its reply must validate as.

A prompt's version is stored on every history event it causes; change the text of a
prompt, change its version. Each prompt shows one worked example: llama.cpp turns the reply's
JSON schema into a grammar, so a small model never sees the field descriptions, and an example
is how it learns what a good answer looks like. Prompts stay short: they run on every episode
(Mem0's extraction prompt alone is about 8k tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.llm import ChatMessage

# Bounds on what the model may write. They reach the endpoint as JSON-schema limits, which
# grammar-constrained servers (llama.cpp) enforce token by token: a small model that starts
# repeating itself inside a string is cut off at the bound instead of at max_tokens.
MAX_FACT_CHARS = 200
MAX_FACTS_PER_REPLY = 30
MAX_WHEN_CHARS = 40

# -- extract ---------------------------------------------------------------------------------

EXTRACT_VERSION = "extract/v3"


class Fact(BaseModel):
    text: str = Field(min_length=1, max_length=MAX_FACT_CHARS,
                      description="One short statement that names who it is about.")
    source_messages: list[int] = Field(
        min_length=1, max_length=3, description="Numbers of the messages that state it.")
    when: str | None = Field(
        max_length=MAX_WHEN_CHARS,
        description='The time words of the message, as said ("last March"); else null.')
    # Whether a later fact can end this one. An event (something that happened or was
    # said) stays true once told, so resolve never asks about it: on LoCoMo the bundled
    # model called most of a person's past events "no longer true" next to their newer
    # ones ("went to a support group" retired by "went to a pride parade").
    type: Literal["state", "event"] = Field(
        description="state: holds until something changes it (lives, works, has, likes, "
                    "plans, is); event: happened or was said once (went, met, shared).")


class ExtractedFacts(BaseModel):
    facts: list[Fact] = Field(max_length=MAX_FACTS_PER_REPLY)


# The example's brother "still lives in Hamburg". Showing a move instead ("Leo moved from
# Munich to Hamburg in May" → "Leo lives in Hamburg, after moving from Munich") made the
# bundled model write "Dana lives in Oslo" beside "Dana moved from Lisbon to Oslo", but on
# the knowledge-update suite it put the current answer first in 24 of 31 stories against 26
# (it wrote "Omar lives in a dorm" from the message that says he left it); "moved to Hamburg
# in May" → "Leo lives in Hamburg" changed nothing the model wrote for Dana.
_EXTRACT_SYSTEM = """\
You write down what is worth remembering about the people in a conversation: facts about \
them, their lives, plans, likes, relationships and events. Rules:
- One short sentence per fact, starting with the person's name (the name before the colon, \
or the name they give for themselves), so it makes sense alone.
- Keep every name, place, number and thing the message gives (a brother's name, a city, \
a company) in the fact.
- source_messages: only the numbers of the messages that say it.
- when: copy the time words of the message exactly ("yesterday", "last March", "in 2019"); \
null when there are none. Never compute a date.
- type: "state" when it stays true until something changes it (where someone lives or \
works, what they have, like, plan, do regularly or are); "event" when it happened once \
(went, visited, met, made, shared, said).
- Skip greetings, questions and small talk. Nothing worth keeping: {"facts": []}.

Example.
Conversation date: 2024-03-14 (Thursday)
Conversation:
[0] Maya: I started a new job at Siemens last week!
[1] Tom: Congrats! Are you still in Munich?
[2] Maya: Yes. My brother Leo still lives in Hamburg, he is vegan.
[3] Tom: I ran a half marathon yesterday. I fly to Rome tomorrow.
Answer:
{"facts": [\
{"text": "Maya works at Siemens.", "source_messages": [0], "when": "last week", \
"type": "state"}, \
{"text": "Maya lives in Munich.", "source_messages": [1, 2], "when": null, "type": "state"}, \
{"text": "Maya's brother Leo lives in Hamburg.", "source_messages": [2], "when": null, \
"type": "state"}, \
{"text": "Leo is vegan.", "source_messages": [2], "when": null, "type": "state"}, \
{"text": "Tom ran a half marathon.", "source_messages": [3], "when": "yesterday", \
"type": "event"}, \
{"text": "Tom plans to fly to Rome.", "source_messages": [3], "when": "tomorrow", \
"type": "state"}]}\
"""


# The names the worked examples use. A small model sometimes copies one into what it writes
# ("Caroline found support at Siemens"): a fact or entity holding one that was never said
# is dropped (``extract.clean_facts``, ``graph.without_example_names``).
EXAMPLE_NAMES = ("Maya", "Tom", "Siemens", "Munich", "Leo", "Hamburg", "Rome")


@dataclass(frozen=True)
class Turn:
    role: str
    content: str
    name: str | None = None

    @property
    def speaker(self) -> str:
        """Who said it, as the transcript names them: the message's name, else the role."""
        if self.name and self.name.strip():
            return self.name.strip()
        return {"user": "User", "assistant": "Assistant"}.get(self.role, self.role.title())

    def render(self) -> str:
        return f"{self.speaker}: {' '.join(self.content.split())}"


def extract_messages(turns: Sequence[tuple[int, Turn]], observed_at: datetime,
                     earlier: Sequence[Turn], instructions: Sequence[str],
                     ) -> list[ChatMessage]:
    """``turns``: (number, turn) of the messages to extract from (a window of the episode);
    ``earlier``: what was said just before, shown as context only."""
    system = _EXTRACT_SYSTEM
    for extra in instructions:
        system += f"\n\nAlso follow these instructions:\n{extra}"
    parts = [f"Conversation date: {_day(observed_at)}"]
    if earlier:
        history = "\n".join(turn.render() for turn in earlier)
        parts.append(f"Said before (context only, do not extract):\n{history}")
    numbered = "\n".join(f"[{index}] {turn.render()}" for index, turn in turns)
    parts.append(f"Conversation:\n{numbered}")
    return [ChatMessage(role="system", content=system),
            ChatMessage(role="user", content="\n".join(parts) + "\nAnswer:")]


# -- resolve ---------------------------------------------------------------------------------

RESOLVE_VERSION = "resolve/v3"
# Pairs (new fact, existing memory) one resolve call may check: each is a short object in the
# reply, so this bounds its length (a whole episode's facts rarely have more close memories).
MAX_CHECKS = 40


class Check(BaseModel):
    # One yes/no question per pair: a small model answers "can both be true now?" far more
    # reliably than it picks one of four actions for a fact (measured on the knowledge-update
    # suite's changes with the bundled 1.5B model: 13 of 14 changes seen, against 0 of 14).
    # What else a pair is (the same thing said again, the same with more detail) is told by
    # code from the texts (``app.consolidate.resolve``).
    fact: int = Field(description="Number of the new fact.")
    memory: int = Field(description="Number of the existing memory.")
    still_true: bool = Field(
        description="Whether the memory can still be true now that the new fact is.")


class Checks(BaseModel):
    checks: list[Check] = Field(max_length=MAX_CHECKS)


_RESOLVE_SYSTEM = """\
You keep a memory store true. New facts were just told. For each new fact and each existing \
memory listed with it, answer still_true: can the memory still be true now that the new fact \
is true? false when the new fact ends it: a move away, a new job replacing the old one, a \
change of mind, a correction, a state that is over, something given up. true when both can \
hold at once: a different topic, an extra detail, another hobby.

Example.
Existing memories:
[0] Maya lives in Munich.
[1] Maya works at Siemens.
[2] Maya likes jazz.
[3] Maya has the flu.
New facts:
[0] Maya moved to Berlin. - check memories 0, 1
[1] Maya started a job at BMW. - check memories 1, 2
[2] Maya also likes blues. - check memory 2
[3] Maya feels healthy again. - check memories 3, 2
Answer:
{"checks": [\
{"fact": 0, "memory": 0, "still_true": false}, \
{"fact": 0, "memory": 1, "still_true": true}, \
{"fact": 1, "memory": 1, "still_true": false}, \
{"fact": 1, "memory": 2, "still_true": true}, \
{"fact": 2, "memory": 2, "still_true": true}, \
{"fact": 3, "memory": 3, "still_true": false}, \
{"fact": 3, "memory": 2, "still_true": true}]}\
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
    near: tuple[int, ...] = ()  # the known memories to check it against, closest first


def resolve_messages(facts: Sequence[NewFact], known: Sequence[Known],
                     observed_at: datetime) -> list[ChatMessage]:
    memories = "\n".join(f"[{index}] {item.text}{_since(item.valid_at)}"
                         for index, item in enumerate(known))
    new = "\n".join(f"[{index}] {fact.text}{_since(fact.valid_from)}{_near(fact.near)}"
                    for index, fact in enumerate(facts))
    content = (f"Existing memories:\n{memories}\n"
               f"New facts (told on {_day(observed_at)}):\n{new}\nAnswer:")
    return [ChatMessage(role="system", content=_RESOLVE_SYSTEM),
            ChatMessage(role="user", content=content)]


def _near(memories: Sequence[int]) -> str:
    if not memories:
        return ""
    noun = "memory" if len(memories) == 1 else "memories"
    return f" - check {noun} {', '.join(str(m) for m in memories)}"


def _day(moment: datetime) -> str:
    return moment.date().isoformat() + f" ({moment.strftime('%A')})"


def _since(moment: date | datetime | None) -> str:
    if moment is None:
        return ""
    day = moment.date() if isinstance(moment, datetime) else moment
    return f" (since {day.isoformat()})"


# -- graph -----------------------------------------------------------------------------------

GRAPH_VERSION = "graph/v2"
EntityKind = Literal["person", "place", "organization", "object", "event", "concept", "animal",
                     "food", "activity", "other"]


class GraphEntity(BaseModel):
    name: str = Field(min_length=1, max_length=60, description="The name as the facts use it.")
    type: EntityKind
    summary: str = Field(max_length=48, description="A few words on who or what it is.")


class GraphRelation(BaseModel):
    source: str = Field(min_length=1, max_length=60, description="An entity name from the list.")
    relation: str = Field(min_length=1, max_length=40,
                          description="snake_case, e.g. lives_in, works_at, sister_of, likes.")
    target: str = Field(min_length=1, max_length=60, description="An entity name from the list.")
    fact: int = Field(description="Number of the fact that states it.")
    exclusive: bool = Field(description="True when the source holds only one such relation at a "
                            "time (lives_in, works_at, married_to).")


class ExtractedGraph(BaseModel):
    entities: list[GraphEntity] = Field(max_length=MAX_FACTS_PER_REPLY)
    relations: list[GraphRelation] = Field(max_length=MAX_FACTS_PER_REPLY)


_GRAPH_SYSTEM = """\
You turn facts into a knowledge graph. List each person, place, organization, animal, thing \
or event the facts name, once, by the name the facts use. Then list the relations the facts \
state between those entities: source and target are names from your list, relation is \
snake_case, fact is the number of the fact, exclusive is true when the source can hold only \
one such relation at a time (lives_in, works_at, married_to).

Example.
Facts:
[0] Maya works at Siemens.
[1] Maya lives in Munich.
[2] Maya's brother is Leo.
[3] Leo is vegan.
Answer:
{"entities": [\
{"name": "Maya", "type": "person", "summary": "engineer"}, \
{"name": "Siemens", "type": "organization", "summary": "company"}, \
{"name": "Munich", "type": "place", "summary": "city"}, \
{"name": "Leo", "type": "person", "summary": "Maya's brother"}], \
"relations": [\
{"source": "Maya", "relation": "works_at", "target": "Siemens", "fact": 0, "exclusive": true}, \
{"source": "Maya", "relation": "lives_in", "target": "Munich", "fact": 1, "exclusive": true}, \
{"source": "Leo", "relation": "brother_of", "target": "Maya", "fact": 2, "exclusive": false}]}\
"""


def graph_messages(facts: Sequence[NewFact], observed_at: datetime) -> list[ChatMessage]:
    numbered = "\n".join(f"[{index}] {fact.text}{_since(fact.valid_from)}"
                         for index, fact in enumerate(facts))
    return [ChatMessage(role="system", content=_GRAPH_SYSTEM),
            ChatMessage(role="user",
                        content=f"Facts (told on {_day(observed_at)}):\n{numbered}\nAnswer:")]
