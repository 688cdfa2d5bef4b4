"""What an LLM must answer, and reading what it did: the strict JSON schema sent as
``response_format`` for a Pydantic model, the parsing and validation of a reply, the events
of a streamed one and the watch that cuts it where it loops."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

OutputT = TypeVar("OutputT", bound=BaseModel)


def response_format(output: type[BaseModel]) -> dict[str, Any]:
    """The ``response_format`` asking for JSON that validates as ``output``."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": re.sub(r"[^A-Za-z0-9_-]", "_", output.__name__)[:64],
            "schema": strict_schema(output.model_json_schema()),
            "strict": True,
        },
    }


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` as OpenAI's strict mode accepts it: every object closed and every property
    required, ``None`` defaults dropped, no siblings beside a ``$ref``. Only ever stricter than
    the Pydantic model, so whatever satisfies it still validates."""
    return _closed(copy.deepcopy(schema), schema, frozenset())


def _closed(node: dict[str, Any], root: dict[str, Any], inlining: frozenset[str]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and len(node) > 1:
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        if ref in inlining:  # a recursive model: keep the bare reference
            return {"$ref": ref}
        node = {**_resolve(root, ref), **siblings}
        inlining = inlining | {ref}
    for key in ("$defs", "properties"):
        if isinstance(node.get(key), dict):
            node[key] = {name: _closed(sub, root, inlining) for name, sub in node[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _closed(node[key], root, inlining)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(node.get(key), list):
            node[key] = [_closed(sub, root, inlining) for sub in node[key]]
    if node.get("type") == "object" or "properties" in node:
        node.setdefault("additionalProperties", False)
        node["required"] = list(node.get("properties", {}))
    if "default" in node and node["default"] is None:
        del node["default"]
    return node


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    target: Any = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return copy.deepcopy(dict(target))


_FENCED = re.compile(r"```[A-Za-z]*\s*(.*?)\s*```", re.DOTALL)


def parse_output(content: str, output: type[OutputT]) -> OutputT:
    """Validate a reply as ``output``, tolerating a fenced code block or prose around the one
    JSON object. Raises ``pydantic.ValidationError`` (invalid JSON included)."""
    text = content.strip()
    fenced = _FENCED.search(text)
    if fenced:
        text = fenced.group(1)
    elif not text.startswith(("{", "[")):
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            text = text[start:end + 1]
    return output.model_validate_json(text)


def describe_errors(error: ValidationError, limit: int = 5) -> str:
    """A validation error short enough to quote back to the model."""
    problems = []
    for item in error.errors(include_url=False)[:limit]:
        where = ".".join(str(part) for part in item["loc"]) or "reply"
        problems.append(f"{where}: {item['msg']}")
    if error.error_count() > limit:
        problems.append(f"and {error.error_count() - limit} more")
    return "; ".join(problems)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One server-sent event of a streamed chat completion; ``usage`` is (prompt,
    completion) tokens, sent with the last event."""

    model: str | None
    usage: tuple[int, int] | None
    finish_reason: str | None
    pieces: list[str]


def stream_event(data: str) -> StreamEvent | None:
    """The event whose JSON is ``data``; None when it is not a chat completion chunk."""
    try:
        chunk = json.loads(data)
        usage = chunk.get("usage")
        choices = chunk.get("choices") or []
        return StreamEvent(
            model=str(chunk["model"]) if chunk.get("model") else None,
            usage=(int(usage.get("prompt_tokens") or 0),
                   int(usage.get("completion_tokens") or 0)) if usage else None,
            finish_reason=next((c["finish_reason"] for c in choices if c.get("finish_reason")),
                               None),
            pieces=[piece for c in choices if (piece := (c.get("delta") or {}).get("content"))],
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class LoopWatch:
    """Tells, while a JSON reply streams in, that the model is looping, so the reply can be
    cut there instead of running on to ``max_tokens`` (a small model that starts repeating
    itself rarely stops: measured with the bundled 1.5B model, such replies ran to their
    limit, ~1,000 tokens at ~23 tokens/s), and keeps what it said before the loop.

    A loop is either one string that keeps repeating its own words (the last ``TAIL``
    characters of an open string found ``TAIL_REPEATS`` times in it), or ``max_repeats`` items
    said again: an innermost object identical to an earlier one, or carrying a string of at
    least ``MIN_STRING`` characters said before (the same fact with other sources). A repeat
    or two are tolerated (a model often lists a thing twice and then stops: measured, cutting
    at the second repeat cut a third of the bundled model's extraction replies); the JSON's
    punctuation, keys and short values (names) never count.

    ``salvage`` is then the reply up to the item that made the loop, without the items said
    again, its open arrays and objects closed: what the model said once, as JSON (which may
    still not validate); None when it said no whole item before looping.

    Written here rather than taken from a library: it must see the reply piece by piece, and
    no streaming JSON parser on PyPI reports repeated values."""

    TAIL = 24
    TAIL_REPEATS = 3
    MIN_STRING = 32

    def __init__(self, max_repeats: int = 3) -> None:
        self.max_repeats = max_repeats
        self.repeats = 0
        self.reason = ""
        self.salvage: str | None = None
        self._text = ""
        self._seen: set[str] = set()
        self._repeated: list[tuple[int, int]] = []  # where the tolerated repeats are
        self._items = 0  # items said once
        self._open: list[_Open] = []  # the arrays and objects open, outermost first
        self._string_start: int | None = None
        self._escaped = False

    def feed(self, piece: str) -> bool:
        """Add the next piece of the reply; True once it loops (``salvage`` is then set)."""
        start = len(self._text)
        self._text += piece
        for index in range(start, len(self._text)):
            char = self._text[index]
            if self._string_start is not None:
                if self._escaped:
                    self._escaped = False
                elif char == "\\":
                    self._escaped = True
                elif char == '"' and self._string_closed(index):
                    return True
            elif char == '"':
                self._string_start = index
            elif char in "[{":
                if char == "{" and (outer := self._object()) is not None:
                    outer.nested = True  # no innermost item any more
                self._open.append(_Open(char, index))
            elif char in "]}" and self._open and self._closed(self._open.pop(), index):
                return True
        if self._string_start is not None:
            value = self._text[self._string_start + 1:]
            if (len(value) >= self.TAIL * self.TAIL_REPEATS
                    and value.count(value[-self.TAIL:]) >= self.TAIL_REPEATS):
                self.reason = f"a string repeats {value[-self.TAIL:]!r}"
                self._cut(self._open.pop().begin if self._in_object() else self._string_start)
                return True
        return False

    def _in_object(self) -> bool:
        """Whether the innermost open bracket is an object's (a string there is a value)."""
        return bool(self._open) and self._open[-1].bracket == "{"

    def _object(self) -> _Open | None:
        """The innermost open object."""
        return next((frame for frame in reversed(self._open) if frame.bracket == "{"), None)

    def _string_closed(self, end: int) -> bool:
        """A string ended at ``end``: a long one said before marks its object, or is a
        repeat itself when it stands alone in an array. True when that makes a loop."""
        begin, self._string_start = self._string_start, None
        assert begin is not None
        value = self._text[begin + 1:end]
        if len(value) < self.MIN_STRING:
            return False
        again = self._said_before("s" + value)
        if self._in_object():
            self._open[-1].repeated |= again
            return False
        if not again:
            self._items += 1
            return False
        return self._repeat(value, begin, end)

    def _closed(self, frame: _Open, end: int) -> bool:
        """An array or object ended at ``end``; True when an innermost object made a loop."""
        if frame.bracket != "{" or frame.nested:
            return False
        item = " ".join(self._text[frame.begin:end + 1].split())
        if not (self._said_before("o" + item) or frame.repeated):
            self._items += 1
            return False
        return self._repeat(item, frame.begin, end)

    def _said_before(self, key: str) -> bool:
        if key in self._seen:
            return True
        self._seen.add(key)
        return False

    def _repeat(self, item: str, begin: int, end: int) -> bool:
        self.repeats += 1
        self.reason = f"{self.repeats} items said again, the last {item[:80]!r}"
        if self.repeats < self.max_repeats:
            self._repeated.append((begin, end))
            return False
        self._cut(begin)
        return True

    def _cut(self, begin: int) -> None:
        """``salvage``: the reply before ``begin`` without the repeated items (each with the
        comma after it), the arrays and objects open there closed; None when no item came
        before the loop."""
        if not self._items:
            return
        kept, at = [], 0
        for start, end in self._repeated:
            kept.append(self._text[at:start])
            at = end + 1
            while at < begin and self._text[at] in " \t\r\n,":
                at += 1
        kept.append(self._text[at:begin])
        closers = "".join("]" if frame.bracket == "[" else "}" for frame in reversed(self._open))
        self.salvage = "".join(kept).rstrip().rstrip(",").rstrip() + closers


@dataclass(slots=True)
class _Open:
    """An array or object of the reply not closed yet; for an object, whether it holds an
    object (``nested``: then it is no item) and a long string said before (``repeated``)."""

    bracket: str
    begin: int
    nested: bool = False
    repeated: bool = False
