"""Where the index stands in the change log: a position, and the holes around it.

Sequence numbers are taken when a transaction writes and appear when it commits, so a number
can be missing for a while. Every change at or below ``position`` is applied (or was given up
on); changes applied above it are ``ahead``. The position stops below a hole for
``gap_timeout_s``, then moves on, but the hole is checked again (``late``) for an hour, so a
long transaction's changes are applied late rather than never.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from app.index.saved import Saved

LATE_FOR_S = 3600.0  # how long a hole in the change log is checked again
BUILD_LOOKBACK = 10_000  # holes below a full build's position that are still checked


class ChangeCursor:
    def __init__(self, position: int = 0) -> None:
        self.position = position
        self.ahead: set[int] = set()  # applied changes above the position
        self.holes: dict[int, float] = {}  # missing sequence numbers → first seen missing
        self.late: dict[int, float] = {}  # holes passed over, still checked

    @classmethod
    def after_build(cls, top: int, committed: Sequence[int], now: float) -> ChangeCursor:
        """A full build read every memory as of change ``top``; of the numbers just below
        it, those not ``committed`` yet may belong to open transactions: checked as late."""
        cursor = cls(top)
        present = set(committed)
        cursor.late = {seq: now for seq in range(max(1, top - BUILD_LOOKBACK + 1), top + 1)
                       if seq not in present}
        return cursor

    def fresh(self, found: Sequence[tuple[int, uuid.UUID]],
              late: Sequence[tuple[int, uuid.UUID]]) -> list[tuple[int, uuid.UUID]]:
        """Of the changes read past the position and the late ones now committed, those
        not applied yet."""
        return [(s, m) for s, m in found if s not in self.ahead] + list(late)

    def advance(self, found: Sequence[tuple[int, uuid.UUID]],
                late: Sequence[tuple[int, uuid.UUID]], now: float,
                gap_timeout_s: float) -> None:
        """Records ``found`` and ``late`` as applied and moves the position over what is
        applied and over holes that waited ``gap_timeout_s``."""
        for seq, _ in late:
            self.late.pop(seq, None)
        seen = {s for s, _ in found}
        self.ahead |= seen
        for seq in range(self.position + 1, max(seen, default=self.position)):
            if seq not in seen and seq not in self.ahead:
                self.holes.setdefault(seq, now)
        while True:
            following = self.position + 1
            if following in self.ahead:
                self.ahead.discard(following)
            elif following in self.holes and now - self.holes[following] > gap_timeout_s:
                self.late[following] = self.holes.pop(following)
            else:
                break
            self.holes.pop(following, None)
            self.position = following
        self.late = {s: t for s, t in self.late.items() if now - t < LATE_FOR_S}

    def copy(self) -> ChangeCursor:
        other = ChangeCursor(self.position)
        other.ahead, other.holes, other.late = set(self.ahead), dict(self.holes), dict(self.late)
        return other

    def saved(self) -> Saved:
        """The position and the sequence numbers (a few: the holes' clocks are not kept)."""
        return Saved({"position": self.position, "ahead": sorted(self.ahead),
                      "holes": list(self.holes), "late": list(self.late)})

    @classmethod
    def from_saved(cls, saved: Saved, now: float) -> ChangeCursor:
        """Monotonic clocks do not survive a restart: every hole counts from ``now``."""
        cursor = cls(saved.integer("position"))
        cursor.ahead = set(saved.integers("ahead"))
        cursor.holes = dict.fromkeys(saved.integers("holes"), now)
        cursor.late = dict.fromkeys(saved.integers("late"), now)
        return cursor
