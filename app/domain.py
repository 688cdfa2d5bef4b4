"""The shared vocabulary: who a memory belongs to, which moment a read sees, the parsed filter
tree, what makes two texts the same, and the words around a message.

Every layer imports this module (store, index, retrieve, consolidate, the services); it
imports none of them, only the base modules ``errors``, ``limits`` and ``validation``.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from app.errors import ValidationFailed

SCOPE_FIELDS = ("user_id", "agent_id", "run_id")

# What a memory is: a ``message`` (what was said: one per message of an episode, never
# de-duplicated, as the same words said again are another event) or a ``fact`` (what
# consolidation distilled from messages; unique per scope by content).
MemoryKind = Literal["fact", "message"]
KINDS: tuple[MemoryKind, ...] = ("fact", "message")


# -- scope -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """Whose memories: a user, an agent, a run, or a combination. As a filter, None means
    "any"; as the place a memory is stored, None means "unset"."""

    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None

    def is_empty(self) -> bool:
        return self.user_id is None and self.agent_id is None and self.run_id is None

    def within(self, project_id: uuid.UUID) -> ProjectScope:
        return ProjectScope(project_id, self.user_id, self.agent_id, self.run_id)


@dataclass(frozen=True)
class ProjectScope:
    """A scope inside one project: what every read and write of the graph and the index
    names. None ids mean "any" (or "unset" where a store says ``exact``)."""

    project_id: uuid.UUID
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None

    @property
    def scope(self) -> Scope:
        return Scope(self.user_id, self.agent_id, self.run_id)


# -- time ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timeline:
    """Which memories (or relations) a read sees: the current ones (the default), those true
    at ``as_of``, or every one ever stored and not deleted (``include_superseded``)."""

    as_of: datetime | None = None
    include_superseded: bool = False

    @classmethod
    def of(cls, as_of: datetime | None, include_superseded: bool) -> Timeline:
        """The timeline a request asks for (``as_of`` without a zone is UTC)."""
        if as_of is not None and include_superseded:
            raise ValidationFailed("as_of and include_superseded exclude each other")
        if as_of is not None and as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=UTC)
        return cls(as_of=as_of, include_superseded=include_superseded)


CURRENT = Timeline()
EVERY = Timeline(include_superseded=True)


# -- filters ---------------------------------------------------------------------------------

Operator = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin", "contains", "icontains"]
OPERATORS: frozenset[str] = frozenset(Operator.__args__)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Condition:
    """``field`` is an id or time column, or ``metadata`` with a key ``path``."""

    field: str
    op: Operator
    value: Any
    path: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return ".".join((self.field, *self.path))


@dataclass(frozen=True)
class All:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Any_:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    part: Filter


Filter = Condition | All | Any_ | Not


def conjoin(*parts: Filter | None) -> Filter | None:
    present = tuple(part for part in parts if part is not None)
    if not present:
        return None
    return present[0] if len(present) == 1 else All(present)


def scope_filter(scope: Scope) -> Filter | None:
    """The scope's ids as ``eq`` conditions (None when it names none)."""
    return conjoin(*(Condition(name, "eq", getattr(scope, name)) for name in SCOPE_FIELDS
                     if getattr(scope, name) is not None))


# -- content ---------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """What makes two memory texts "the same": Unicode NFC and collapsed whitespace."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def content_hash(text: str) -> str:
    """SHA-256 of the normalised text; backs the (project, scope, hash) unique index."""
    return hashlib.sha256(normalise(text).encode()).hexdigest()


_WORD = re.compile(r"[^\W_]+")


# Snowball's English stopword list: the words BM25 drops, and those that are never a name.
_STOPWORD_TEXT = """
a about above after again against all am an and any are aren't as at be because been before
being below between both but by can't cannot could couldn't did didn't do does doesn't doing
don't down during each few for from further had hadn't has hasn't have haven't having he he'd
he'll he's her here here's hers herself him himself his how how's i i'd i'll i'm i've if in
into is isn't it it's its itself let's me more most mustn't my myself no nor not of off on
once only or other ought our ours ourselves out over own same shan't she she'd she'll she's
should shouldn't so some such than that that's the their theirs them themselves then there
there's these they they'd they'll they're they've this those through to too under until up
very was wasn't we we'd we'll we're we've were weren't what what's when when's where where's
which while who who's whom why why's with won't would wouldn't you you'd you'll you're you've
your yours yourself yourselves s t d ll m re ve
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
# Capitalised words that name no one.
_NOT_NAMES = frozenset((
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "january",
    "february", "march", "april", "may", "june", "july", "august", "september", "october",
    "november", "december"))


def names(text: str) -> list[str]:
    """The names a statement mentions, in order, as ``word_key`` compares words: its
    capitalised words, but a function word or a day or month that starts a sentence ("The",
    "Her", "On Monday")."""
    found = []
    for word in _WORD.findall(text):
        key = word.lower()
        if word[0].isupper() and key not in STOPWORDS and key not in _NOT_NAMES:
            found.append(key)
    return found


def stems(text: str, shortest: int = 1) -> set[str]:
    """Crude stems of a text's words of ``shortest`` letters or more (their first five
    letters, lower case): "sister" and "sister's", "child" and "children" meet; names and
    numbers stay. Enough to ask whether one short statement holds the words of another, or
    which message a fact came from, without a language's stemmer."""
    return {word[:5] for word in _WORD.findall(text.lower()) if len(word) >= shortest}


def word_key(word: str) -> str:
    """A word as statements compare it: lower case, without trailing marks or a possessive
    ("Priya's" and "Priya." are "priya")."""
    word = word.lower().replace("\u2019", "'").rstrip(".,;:!?")
    return word.removesuffix("'s").rstrip("'")


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


def speaker_of(name: object) -> str | None:
    """Who said a message (its metadata's ``name``) as search compares speakers: case-folded,
    its spaces collapsed; None when it has none."""
    if not isinstance(name, str):
        return None
    return " ".join(name.casefold().split()) or None


def name_key(speaker: str) -> str:
    """A speaker (as ``speaker_of`` gives it) as a query names it: its words, one space
    apart ("j.r." is "j r"); empty for a name without letters."""
    return " ".join(_WORD.findall(speaker))


def word_runs(query: str, longest: int) -> set[str]:
    """Every run of up to ``longest`` consecutive words of ``query``, case-folded, as
    ``name_key`` spells names: what a query can name someone by."""
    words = _WORD.findall(query.casefold())
    return {" ".join(words[start:start + length]) for length in range(1, longest + 1)
            for start in range(len(words) - length + 1)}


def named_speakers(query: str, speakers: set[str]) -> set[str]:
    """Those of ``speakers`` (as ``speaker_of`` gives them) that ``query`` names, as whole
    words: "what did Caroline paint?" names "caroline", not "carol"."""
    keys = {speaker: key for speaker in speakers if (key := name_key(speaker))}
    runs = word_runs(query, max((key.count(" ") + 1 for key in keys.values()), default=0))
    return {speaker for speaker, key in keys.items() if key in runs}


def without_names(query: str, names: set[str]) -> str:
    """``query`` as its words and meaning are searched when it names these speakers (as
    ``named_speakers`` gives them): without their names and possessives. Who said a message
    is ranked by its speaker ("speaker_weight"); left in, a name outweighs what is asked of
    its bearer (in MiniLM vectors most of all), and every turn that greets them matches it.
    LoCoMo dev, hybrid recall@10: 0.860 → 0.882. A query that would be left without a word
    is searched as it is."""
    searched = query
    for name in names:
        words = _WORD.findall(name)
        if words:
            said = r"[\W_]+".join(re.escape(word) for word in words)
            searched = re.sub(rf"(?<![^\W_]){said}(?:['\u2019]s)?(?![^\W_])", " ", searched,
                              flags=re.IGNORECASE)
    searched = " ".join(searched.split())
    return searched if _WORD.search(searched) else query


def embedding_text(text: str, metadata: dict[str, object] | None) -> str:
    """What a memory's vector is made from: its text, said by its speaker when one is known
    (a message's ``name``): "Caroline: I went to the support group" is found by a question
    about Caroline, the bare text is not (LoCoMo dev: dense recall@10 0.25 → 0.53)."""
    name = (metadata or {}).get("name")
    return f"{name}: {text}" if isinstance(name, str) and name.strip() else text


# Messages of one scope said at most this far apart are one conversation: the last one said
# before a message is its context, whichever add brought each (ingest), and earlier episodes
# are shown to extraction only when they belong to the same conversation (consolidate).
CONVERSATION_GAP = timedelta(hours=6)
MAX_CONTEXT_CHARS = 1000


def lexical_context(messages: Sequence[str], when: datetime | None) -> str | None:
    """A memory's context (migration 0006): the words said around it and the day it was
    said, which find it by words it does not contain itself. Capped at 1,000 characters."""
    parts = [f"{when.day} {when:%B %Y}"] if when is not None else []
    parts += [message.strip() for message in messages if message and message.strip()]
    text = "\n".join(parts)[:MAX_CONTEXT_CHARS]
    return text or None


def lexical_text(text: str, context: str | None) -> str:
    """What the lexical index reads of a memory: its text, then its context."""
    return f"{text}\n{context}" if context else text
