"""The slot table: which memory each slot of the vector and lexical indexes holds, and what
search filters on, per slot (project, scope ids, validity, expiry, alive).

A memory's vector and words get a slot; a changed text gets a new slot and the old one is
dead (masked out of every search until a compaction renumbers the live ones). Ids and
project and scope names are coded as small integers, so ``allowed`` is a few vectorised
comparisons over the slots of a project (or of one of its users: a posting list each).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from app.domain import (
    KINDS,
    SCOPE_FIELDS,
    MemoryKind,
    ProjectScope,
    Timeline,
    name_key,
    speaker_of,
    word_count,
    word_runs,
)
from app.index.columns import Column
from app.index.saved import Saved
from app.store.repositories.changes import IndexRow

NEVER = np.iinfo(np.int64).max
Slots = npt.NDArray[np.int64]


def epoch_ms(value: datetime | None) -> int:
    """Milliseconds since the epoch (a time without zone is UTC); ``NEVER`` for None."""
    if value is None:
        return NEVER
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp() * 1000)


def digest(row: IndexRow) -> int:
    """What decides whether a changed memory needs a new slot: its words, context and
    speaker, as a signed 64-bit number that is the same in every process (snapshots keep
    it; ``hash`` of a string differs per process)."""
    words = json.dumps([row.content_hash, row.context, row.name]).encode()
    return int.from_bytes(hashlib.blake2b(words, digest_size=8).digest(), "little",
                          signed=True)


# The columns holding codes of names (``SlotTable.code``).
_CODED = ("project", "conversation", "speaker", *(f"scope.{name}" for name in SCOPE_FIELDS))
# A speaker's code is that of this prefix and the name (``speaker_of``): a user id that is
# also someone's name keeps a code of its own.
SPEAKER = "speaker:"


class SlotTable:
    def __init__(self) -> None:
        self.ids: list[uuid.UUID] = []
        self.slot_of: dict[uuid.UUID, int] = {}  # live memories only
        self.digest: dict[int, int] = {}  # live slot → what was indexed
        self.codes: dict[str, int] = {}
        self.speakers: dict[int, str] = {}  # speaker code → name (``speaker_of``)
        # Codes are never reused while a slot may hold one: a compaction drops the names no
        # live slot uses (an erased user's id leaves memory and the next snapshot).
        self.next_code = 0
        self.columns: dict[str, Column] = {
            "project": Column(np.int32, -1), "valid": Column(np.int64, 0),
            "invalid": Column(np.int64, NEVER), "expires": Column(np.int64, NEVER),
            "alive": Column(np.bool_, False), "kind": Column(np.int8, -1),
            "conversation": Column(np.int32, -1), "turn": Column(np.int32, -1),
            "speaker": Column(np.int32, -1), "words": Column(np.int32, 0),
            **{f"scope.{name}": Column(np.int32, -1) for name in SCOPE_FIELDS},
        }
        self.postings: dict[tuple[int, int], list[int]] = {}  # (project, -1 | user) → slots
        self._posting_arrays: dict[tuple[int, int], Slots] = {}
        self._posting_speakers: dict[tuple[int, int], _Speakers] = {}  # once searched

    @property
    def live(self) -> int:
        return len(self.slot_of)

    def column(self, name: str) -> npt.NDArray[Any]:
        return self.columns[name].data

    # -- changes ---------------------------------------------------------------------------

    def unchanged(self, row: IndexRow) -> bool:
        """Whether the memory's live slot already holds these words (a time may differ)."""
        slot = self.slot_of.get(row.id)
        return slot is not None and self.digest.get(slot) == digest(row)

    def add(self, slot: int, row: IndexRow) -> int:
        """``row`` takes ``slot`` (the next one); returns its project's code."""
        for column in self.columns.values():
            column.ensure(slot + 1)
        self.ids.append(row.id)
        self.slot_of[row.id] = slot
        self.digest[slot] = digest(row)
        project = self.code(str(row.project_id))
        self.column("project")[slot] = project
        for name in SCOPE_FIELDS:
            value = getattr(row, name)
            self.column(f"scope.{name}")[slot] = -1 if value is None else self.code(value)
        self.set_times(slot, row)
        self.column("kind")[slot] = KINDS.index(row.kind)
        if row.conversation_id is not None and row.turn is not None:
            self.column("conversation")[slot] = self.code(str(row.conversation_id))
            self.column("turn")[slot] = row.turn
        speaker = speaker_of(row.name)
        if speaker is not None:
            self.column("speaker")[slot] = self.code(SPEAKER + speaker)
        self.column("words")[slot] = word_count(row.text)
        self.column("alive")[slot] = True
        self._post(slot)
        return project

    def set_times(self, slot: int, row: IndexRow) -> None:
        self.column("valid")[slot] = epoch_ms(row.valid_at or row.created_at)
        self.column("invalid")[slot] = epoch_ms(row.invalid_at)
        self.column("expires")[slot] = epoch_ms(row.expires_at)

    def kill(self, memory_id: uuid.UUID) -> int | None:
        """The memory's slot, now dead; None when it had none."""
        slot = self.slot_of.pop(memory_id, None)
        if slot is not None:
            self.column("alive")[slot] = False
            self.digest.pop(slot, None)
        return slot

    def code(self, value: str) -> int:
        code = self.codes.get(value)
        if code is None:
            code = self.codes[value] = self.next_code
            self.next_code += 1
            if value.startswith(SPEAKER):
                self.speakers[code] = value.removeprefix(SPEAKER)
        return code

    def _name_speakers(self) -> None:
        self.speakers = {code: name.removeprefix(SPEAKER) for name, code in self.codes.items()
                         if name.startswith(SPEAKER)}

    def _post(self, slot: int) -> None:
        project = int(self.column("project")[slot])
        user = int(self.column("scope.user_id")[slot])
        for key in ((project, -1), (project, user)) if user >= 0 else ((project, -1),):
            self.postings.setdefault(key, []).append(slot)
            self._posting_arrays.pop(key, None)
            said = self._posting_speakers.get(key)
            if said is not None and (code := int(self.column("speaker")[slot])) >= 0:
                said.file(self.speakers[code])

    # -- reading ---------------------------------------------------------------------------

    def slots(self, ids: Sequence[uuid.UUID]) -> list[tuple[uuid.UUID, int]]:
        """(id, slot) of those of ``ids`` that are live, in order."""
        return [(m, s) for m in ids if (s := self.slot_of.get(m)) is not None]

    def allowed(self, where: ProjectScope, timeline: Timeline,
                among: Sequence[uuid.UUID] | None = None, now: datetime | None = None,
                kinds: Sequence[MemoryKind] | None = None) -> Slots:
        """The sorted slots a search of ``where`` at ``timeline`` may return, of ``kinds``
        (None: both); ``among`` narrows to ids (the ones Postgres found matching the rest of
        a filter)."""
        project = self.codes.get(str(where.project_id))
        if project is None:
            return np.empty(0, np.int64)
        if among is not None:
            slots = np.fromiter((s for _, s in self.slots(among)), dtype=np.int64)
            slots = slots[self.column("project")[slots] == project]
        else:
            user = self.codes.get(where.user_id) if where.user_id is not None else None
            if where.user_id is not None and user is None:
                return np.empty(0, np.int64)
            slots = self._posting((project, -1 if user is None else user))
        if slots.size == 0:
            return slots
        keep = self.column("alive")[slots].copy()
        for name in SCOPE_FIELDS:
            value = getattr(where, name)
            if value is not None:
                code = self.codes.get(value)
                if code is None:
                    return np.empty(0, np.int64)
                keep &= self.column(f"scope.{name}")[slots] == code
        if kinds is not None:
            keep &= np.isin(self.column("kind")[slots], [KINDS.index(kind) for kind in kinds])
        moment = epoch_ms(now or datetime.now(UTC))
        keep &= self.column("expires")[slots] > moment
        if timeline.as_of is not None:
            at = epoch_ms(timeline.as_of)
            keep &= (self.column("valid")[slots] <= at) & (self.column("invalid")[slots] > at)
        elif not timeline.include_superseded:
            keep &= self.column("invalid")[slots] > moment
        return np.sort(slots[keep])

    def by_kind(self, slots: Slots) -> list[Slots]:
        """``slots`` (sorted) split by kind, in ``KINDS`` order, the kinds without one left
        out."""
        kinds = self.column("kind")[slots]
        return [part for code in range(len(KINDS)) if (part := slots[kinds == code]).size]

    def speakers_named(self, where: ProjectScope, query: str) -> set[str]:
        """Those who said messages held for ``where``'s project and user (any agent or run,
        in any state) that ``query`` names (``named_speakers``). Looked up by the query's
        word runs, not by going through every speaker: a search of a project of many users
        costs the same as one of a user. Each posting's speakers are gathered at its first
        search, then added to as it grows."""
        project = self.codes.get(str(where.project_id))
        user = -1 if where.user_id is None else self.codes.get(where.user_id)
        if project is None or user is None:
            return set()
        key = (project, user)
        said = self._posting_speakers.get(key)
        if said is None:
            said = self._posting_speakers[key] = _Speakers()
            for code in np.unique(self.column("speaker")[self._posting(key)]).tolist():
                if code in self.speakers:
                    said.file(self.speakers[code])
        return said.named(query)

    def _posting(self, key: tuple[int, int]) -> Slots:
        array = self._posting_arrays.get(key)
        if array is None:
            array = np.asarray(self.postings.get(key, []), dtype=np.int64)
            self._posting_arrays[key] = array
        return array

    # -- snapshot and compaction -----------------------------------------------------------

    def saved(self) -> Saved:
        """The table as arrays, one row per slot: ids (16 bytes each), digests (0 on dead
        slots) and every column; the codes (names and numbers). ``slot_of`` and ``postings``
        follow from those, so they are made again on load rather than stored."""
        ids = np.frombuffer(b"".join(memory_id.bytes for memory_id in self.ids),
                            dtype=np.uint8).reshape(-1, 16)
        digests = np.zeros(len(self.ids), dtype=np.int64)
        digests[np.fromiter(self.digest, np.int64, len(self.digest))] = np.fromiter(
            self.digest.values(), np.int64, len(self.digest))
        codes = sorted(self.codes, key=self.codes.__getitem__)
        # With their numbers: a compaction leaves gaps where names no slot used were.
        return Saved({"codes": codes, "code_numbers": [self.codes[c] for c in codes]}, {
            "ids": ids, "digest": digests,
            **{f"column.{name}": column.copy() for name, column in self.columns.items()}})

    @classmethod
    def from_saved(cls, saved: Saved) -> SlotTable:
        """The table ``saved`` holds; raises ``ValueError`` on anything missing, of another
        type or shape, or pointing nowhere."""
        table = cls()
        codes, numbers = saved.strings("codes"), saved.integers("code_numbers")
        table.codes = dict(zip(codes, numbers, strict=True))
        if len(table.codes) != len(codes) or len(set(numbers)) != len(numbers) \
                or min(numbers, default=0) < 0:
            raise ValueError("snapshot codes repeat or are negative")
        table.next_code = max(numbers, default=-1) + 1
        table._name_speakers()
        raw = saved.array("ids", np.uint8, (None, 16)).tobytes()
        table.ids = [uuid.UUID(bytes=raw[at:at + 16]) for at in range(0, len(raw), 16)]
        for name, column in table.columns.items():
            bounds = (-1, table.next_code) if name in _CODED else (
                (-1, len(KINDS)) if name == "kind" else None)
            data = saved.array(f"column.{name}", column.data.dtype, (len(table.ids),), bounds)
            table.columns[name] = Column(column.data.dtype, column.fill, data=data)
        live = np.flatnonzero(table.column("alive"))
        table.slot_of = {table.ids[slot]: slot for slot in live.tolist()}
        if len(table.slot_of) != len(live):
            raise ValueError("snapshot has a memory in two live slots")
        digests = saved.array("digest", np.int64, (len(table.ids),))
        table.digest = dict(zip(live.tolist(), digests[live].tolist(), strict=True))
        table._post_every()
        return table

    def _post_every(self) -> None:
        """``postings`` of every slot at once: what ``_post`` makes one slot at a time (slots
        ascending in each list), sorted by numpy rather than appended in Python."""
        self.postings, self._posting_arrays, self._posting_speakers = {}, {}, {}
        slots = np.arange(len(self.ids), dtype=np.int64)
        project = self.column("project").astype(np.int64)
        user = self.column("scope.user_id").astype(np.int64)
        has_user = user >= 0
        for first, second, members in (
                (project, np.full(len(slots), -1, np.int64), slots),
                (project[has_user], user[has_user], slots[has_user])):
            if not members.size:
                continue
            order = np.lexsort((members, second, first))
            first, second, members = first[order], second[order], members[order]
            cuts = np.flatnonzero((np.diff(first) != 0) | (np.diff(second) != 0)) + 1
            starts = np.concatenate(([0], cuts)).tolist()
            for start, group in zip(starts, np.split(members, cuts), strict=True):
                self.postings[(int(first[start]), int(second[start]))] = group.tolist()

    def live_slots(self) -> Slots:
        """The live slots, in slot order (what a compaction keeps)."""
        return np.asarray(sorted(self.slot_of.values()), dtype=np.int64)

    def renumbered(self, old: Slots) -> SlotTable:
        """The table of slots ``old`` (sorted), slot ``old[i]`` moved to ``i``."""
        table = SlotTable()
        used = set().union(*(np.unique(self.column(name)[old]).tolist()
                             for name in _CODED)) if len(old) else set()
        table.codes = {name: code for name, code in self.codes.items() if code in used}
        table.next_code = self.next_code
        table._name_speakers()
        table.ids = [self.ids[slot] for slot in old.tolist()]
        table.slot_of = {memory_id: new for new, memory_id in enumerate(table.ids)}
        table.digest = {new: self.digest[slot] for new, slot in enumerate(old.tolist())}
        for name, column in table.columns.items():
            column.ensure(len(old))
            column.data[:len(old)] = self.column(name)[old]
        for new in range(len(old)):
            table._post(new)
        return table


@dataclass
class _Speakers:
    """A posting's speakers by ``name_key``, and the most words one of those has."""

    by_key: dict[str, set[str]] = field(default_factory=dict)
    longest: int = 0

    def file(self, speaker: str) -> None:
        if key := name_key(speaker):
            self.by_key.setdefault(key, set()).add(speaker)
            self.longest = max(self.longest, key.count(" ") + 1)

    def named(self, query: str) -> set[str]:
        return {speaker for run in word_runs(query, self.longest)
                for speaker in self.by_key.get(run, ())}
