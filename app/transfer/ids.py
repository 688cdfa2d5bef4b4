"""Which id a record of a file gets in the importing project.

Records keep their ids, so importing a file again, or resuming an interrupted import, finds
what is already there instead of adding it twice. But ids are unique across projects, and a
file can name ids another project holds (a project copied into another on the same
database, or a file written to collide): those rows are never touched. A record whose id is
another project's gets a *derived* id instead: the same for the same project and id every
time, so a resumed import derives it again and finds the row it wrote, and the derived id of
a time-ordered id keeps its first 64 bits (the time and counter of a version-7 UUID), so
history still reads in its order. The decision, for an id ``x`` and its derived ``x'``:

* ``x`` is the project's: ``x`` (already imported);
* ``x'`` is the project's: ``x'`` (imported earlier in place of another project's ``x``);
* ``x`` is another project's: ``x'``;
* otherwise ``x``.

References (a history event's memory, a source's episode, a memory's replacement) go through
the same decision, so they follow their record wherever it went.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.store.repositories import transfer as repository

_LOW_62 = (1 << 62) - 1


def derived(project_id: uuid.UUID, original: uuid.UUID) -> uuid.UUID:
    """``original``'s first 64 bits and 62 bits of a hash of the project and ``original``,
    with the RFC 9562 variant."""
    digest = hashlib.sha256(b"anamnesis.transfer" + project_id.bytes + original.bytes).digest()
    low = int.from_bytes(digest[:8], "big") & _LOW_62
    return uuid.UUID(int=(original.int >> 64 << 64) | (0b10 << 62) | low)


@dataclass(frozen=True)
class Placed:
    """Where a batch's ids go (``new``) and which of those the project already holds."""

    new: dict[uuid.UUID, uuid.UUID]
    held: frozenset[uuid.UUID]

    def __getitem__(self, original: uuid.UUID) -> uuid.UUID:
        return self.new[original]

    def get(self, original: uuid.UUID | None) -> uuid.UUID | None:
        return None if original is None else self.new[original]


async def place(session: AsyncSession, table: str, project_id: uuid.UUID,
                originals: Iterable[uuid.UUID | None]) -> Placed:
    """The ids ``originals`` take in ``table`` of the project (None ignored)."""
    wanted = {original for original in originals if original is not None}
    if not wanted:
        return Placed({}, frozenset())
    alternative = {original: derived(project_id, original) for original in wanted}
    stored = await repository.owners(session, table, project_id,
                                     [*wanted, *alternative.values()])
    new = {}
    for original in wanted:
        other = alternative[original]
        if stored.get(original) is True or (original not in stored
                                            and stored.get(other) is not True):
            new[original] = original
        else:
            new[original] = other
    return Placed(new, frozenset(i for i in new.values() if stored.get(i) is True))
