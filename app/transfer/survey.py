"""The first pass of an import: every line read and validated before anything is written, so
a file with a bad line changes nothing and every bad line is named by its number.

A line is bad when it is not JSON, not one of the format's records (``records``), breaks the
API's input rules, comes before the header (or is a second one), or carries a vector of the
database's own model at another size. A vector of another model is not a problem: the
import embeds that memory's text instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError

from app.transfer.records import (
    MAX_LINE_BYTES,
    Embedded,
    Header,
    MemoryLine,
    Record,
    parse,
)

MAX_PROBLEMS = 100


@dataclass(frozen=True)
class Problem:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True)
class Space:
    """The model and size of the database's vectors (``embedding_space``)."""

    model: str
    dimension: int


@dataclass
class Survey:
    """What the first pass found: the header, how many lines of each record, the bad lines
    (the first ``MAX_PROBLEMS``, and how many in all), and how many memories the import
    will have to embed."""

    space: Space
    header: Header | None = None
    lines: int = 0
    records: Counter[str] = field(default_factory=Counter)
    problems: list[Problem] = field(default_factory=list)
    bad: int = 0
    to_embed: int = 0

    @property
    def ok(self) -> bool:
        return self.bad == 0 and self.header is not None

    def complain(self, line: int, message: str) -> None:
        self.bad += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(line, message))

    def summary(self, shown: int = 20) -> str:
        """The bad lines for a person: how many, then the first ``shown``."""
        listed = "; ".join(str(problem) for problem in self.problems[:shown])
        more = f"; and {self.bad - shown} more" if self.bad > shown else ""
        return f"{self.bad} bad line(s), nothing was imported: {listed}{more}"

    def feed(self, number: int, raw: bytes) -> None:
        """Checks line ``number`` (counted from 1; a blank line is skipped)."""
        self.lines = number
        if not raw.strip():
            return
        if len(raw) > MAX_LINE_BYTES:
            self.complain(number, f"longer than {MAX_LINE_BYTES} bytes")
            return
        try:
            record = parse(raw)
        except ValidationError as error:
            self.complain(number, describe(error))
            return
        self.check(number, record)

    def check(self, number: int, record: Record) -> None:
        if isinstance(record, Header):
            if self.header is not None or self.records:
                self.complain(number, "a header must be the first line, and only once")
            else:
                self.header = record
            return
        if self.header is None:
            self.complain(number, "the first line must be the header "
                                  '({"record": "header", "format": "anamnesis.export", …})')
            return
        self.records[record.record] += 1
        if isinstance(record, Embedded):
            if not usable_vector(record, self.header, self.space):
                if isinstance(record, MemoryLine):
                    self.to_embed += 1
            elif record.vector is not None and record.vector.size != self.space.dimension:
                self.complain(number, f"embedding: {record.vector.size} values, but vectors of "
                                      f"{self.space.model} have {self.space.dimension}")

    def finish(self) -> None:
        if self.header is None and not self.bad:
            self.complain(max(self.lines, 1), "no header: the file is empty or not an export")


def usable_vector(record: Embedded, header: Header, space: Space) -> bool:
    """The line's vector is of the database's model (its dimension is checked apart)."""
    model = record.embedding_model or header.embedding.model
    return record.vector is not None and model == space.model


def describe(error: ValidationError) -> str:
    """A validation error as one line: ``field: problem`` for each (the first five)."""
    parts = []
    for item in error.errors()[:5]:
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)


def survey(lines: Iterable[bytes], space: Space) -> Survey:
    found = Survey(space)
    for number, raw in enumerate(lines, 1):
        found.feed(number, raw)
    found.finish()
    return found


async def split_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The lines of a byte stream (a request body), newline kept. Of a line longer than
    ``MAX_LINE_BYTES`` only its first bytes are yielded, which the survey names as too
    long; the rest of it is passed over, so later lines keep their numbers."""
    pending = b""
    skipping = False
    async for chunk in chunks:
        pending += chunk
        while pending:
            end = pending.find(b"\n")
            if skipping:
                if end < 0:
                    pending = b""
                    break
                skipping, pending = False, pending[end + 1:]
                continue
            if end < 0:
                if len(pending) > MAX_LINE_BYTES:
                    yield pending
                    skipping, pending = True, b""
                break
            yield pending[:end + 1]
            pending = pending[end + 1:]
    if pending and not skipping:
        yield pending
