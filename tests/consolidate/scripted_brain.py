"""Deterministic consolidation decisions for the scripted LLM server.

``Brain`` answers the prompts of the pipeline by reading them as the model would: the
extraction prompt's numbered messages are looked up in ``facts`` (message text → the facts
it states), each (fact, memory) pair the resolution prompt asks about goes to ``still_true``,
and the graph prompt's facts to ``graph``.
Tests state what a competent model would answer; the server speaks real HTTP, so the
production client, prompts and parsing all run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NUMBERED = re.compile(r"^\[(\d+)\] (.*)$")
CHECKED = re.compile(r"^\[(\d+)\] (.*?)(?: - check memor(?:y|ies) ([\d, ]+))?$")


@dataclass(frozen=True)
class FactSpec:
    """A fact, its time words as the message says them (an ISO day reads as that day) and
    whether it is a state or an event (``prompts.Fact.type``)."""

    text: str
    when: str | None = None
    type: str = "state"


@dataclass(frozen=True)
class Seen:
    """The resolution prompt as the brain read it."""

    facts: list[str]
    memories: list[str]


StillTrue = Callable[[str, str, Seen], bool]  # (fact, memory, prompt) → still true?
Graph = Callable[[list[str]], dict[str, Any]]


def strip_since(text: str) -> str:
    """The statement alone: without its "(since …)" and "- check memories …" notes."""
    text = re.sub(r" - check memor(y|ies) [\d, ]+$", "", text)
    return re.sub(r" \(since \d{4}-\d{2}-\d{2}\)$", "", text)


def all_still_true(fact: str, memory: str, seen: Seen) -> bool:
    return True


def no_graph(facts: list[str]) -> dict[str, Any]:
    return {"entities": [], "relations": []}


@dataclass
class Brain:
    facts: Mapping[str, Sequence[FactSpec | str]] = field(default_factory=dict)
    still_true: StillTrue = all_still_true
    graph: Graph = no_graph
    extract_calls: int = 0
    resolve_calls: int = 0
    graph_calls: int = 0
    seen: list[Seen] = field(default_factory=list)

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        schema = body["response_format"]["json_schema"]["name"]
        # The first user message is the prompt; later ones are re-asks after bad output.
        prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
        if schema == "ExtractedFacts":
            self.extract_calls += 1
            return self._extract(prompt)
        if schema == "Checks":
            self.resolve_calls += 1
            return self._resolve(prompt)
        if schema == "ExtractedGraph":
            self.graph_calls += 1
            return self.graph([strip_since(m.group(2)) for line in prompt.splitlines()
                               if (m := NUMBERED.match(line))])
        raise AssertionError(f"unexpected schema {schema}")

    def _extract(self, prompt: str) -> dict[str, Any]:
        conversation = prompt.split("Conversation:\n", 1)[1]
        found: list[dict[str, Any]] = []
        for line in conversation.splitlines():
            match = NUMBERED.match(line)
            if not match:
                continue
            index, said = int(match.group(1)), match.group(2).split(": ", 1)[1]
            for spec in self._facts().get(said, []):
                spec = FactSpec(spec) if isinstance(spec, str) else spec
                found.append({"text": spec.text, "source_messages": [index],
                              "when": spec.when, "type": spec.type})
        return {"facts": found}

    def _facts(self) -> dict[str, Sequence[FactSpec | str]]:
        """``facts`` by message text as the transcript shows it (whitespace collapsed)."""
        return {" ".join(said.split()): specs for said, specs in self.facts.items()}

    def _resolve(self, prompt: str) -> dict[str, Any]:
        memories_part, facts_part = prompt.split("\nNew facts", 1)
        memories = [strip_since(m.group(2)) for line in memories_part.splitlines()
                    if (m := NUMBERED.match(line))]
        asked = [(m.group(2), [int(n) for n in re.findall(r"\d+", m.group(3) or "")])
                 for line in facts_part.splitlines() if (m := CHECKED.match(line))]
        seen = Seen([strip_since(text) for text, _ in asked], memories)
        self.seen.append(seen)
        return {"checks": [{"fact": fact, "memory": memory,
                            "still_true": self.still_true(seen.facts[fact], memories[memory],
                                                          seen)}
                           for fact, (_, numbers) in enumerate(asked) for memory in numbers]}


def ends(*pairs: tuple[str, str]) -> StillTrue:
    """A model that answers "no longer true" for these (fact text, memory text) pairs and
    "still true" for every other pair it is asked about."""

    def still_true(fact: str, memory: str, seen: Seen) -> bool:
        return (fact, memory) not in pairs

    return still_true
