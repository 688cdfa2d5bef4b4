"""The LoCoMo development conversations as dated episodes (windows of one session's turns),
for the benchmarks that post them; and the summaries their numbers are reported in."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.managed_server import (
    REPO_ROOT,
)
from bench.timed_requests import percentile

DATA_CANDIDATES = (
    REPO_ROOT / "shared" / "data" / "locomo" / "locomo_dev.json",
    REPO_ROOT.parent / "shared" / "data" / "locomo" / "locomo_dev.json",
)
# -- data ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Episode:
    sample_id: str
    session: int
    first_turn: int  # index in the session of the window's first turn
    observed_at: dt.datetime
    messages: list[dict[str, str]]
    dia_ids: list[str]

    @property
    def label(self) -> str:
        return f"{self.sample_id}/s{self.session}/t{self.first_turn}"


def default_data_path() -> Path | None:
    configured = os.environ.get("LOCOMO_DEV")
    if configured:
        return Path(configured)
    return next((path for path in DATA_CANDIDATES if path.is_file()), None)


def session_time(text: str) -> dt.datetime:
    """LoCoMo's ``"1:56 pm on 8 May, 2023"`` as an aware UTC datetime."""
    return dt.datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=dt.UTC)


def windows(length: int, size: int) -> list[tuple[int, int]]:
    """[start, end) windows of ``size`` turns; a remainder under half a window joins the last."""
    bounds = [(start, min(start + size, length)) for start in range(0, length, size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < max(2, size // 2):
        bounds[-2:] = [(bounds[-2][0], bounds[-1][1])]
    return bounds


def conversation_episodes(sample: dict[str, Any], turns: int) -> Iterator[Episode]:
    """One conversation's episodes in time order. The first speaker is the ``user`` (the
    scope's user), the second the ``assistant``; each message keeps the speaker's name."""
    conversation = sample["conversation"]
    speaker_a = conversation["speaker_a"]
    numbers = sorted(int(key.split("_")[1]) for key in conversation
                     if key.startswith("session_") and key.count("_") == 1)
    for number in numbers:
        session = conversation[f"session_{number}"]
        when = session_time(conversation[f"session_{number}_date_time"])
        for start, end in windows(len(session), turns):
            messages = []
            for turn in session[start:end]:
                text = turn["text"]
                if turn.get("blip_caption"):
                    text += f" [shares a photo: {turn['blip_caption']}]"
                messages.append({"role": "user" if turn["speaker"] == speaker_a else "assistant",
                                 "content": text, "name": turn["speaker"]})
            # Windows of one session share its date; a minute per turn keeps them in order.
            yield Episode(sample["sample_id"], number, start,
                          when + dt.timedelta(minutes=start), messages,
                          [turn["dia_id"] for turn in session[start:end]])


def pick_episodes(samples: list[dict[str, Any]], count: int, turns: int,
                  conversations: int) -> list[Episode]:
    """``count`` episodes, round-robin over the first ``conversations`` conversations, each
    conversation's from its beginning: the posting order is chronological per user."""
    streams = [conversation_episodes(sample, turns) for sample in samples[:conversations]]
    chosen: list[Episode] = []
    while len(chosen) < count and streams:
        for stream in list(streams):
            episode = next(stream, None)
            if episode is None:
                streams.remove(stream)
            elif len(chosen) < count:
                chosen.append(episode)
    return chosen


# -- statistics ----------------------------------------------------------------------------------


def number_summary(values: list[float] | list[int], digits: int = 1) -> dict[str, Any]:
    if not values:
        return {"n": 0, "mean": None, "p50": None, "min": None, "max": None, "total": 0}
    ordered = sorted(float(value) for value in values)
    return {"n": len(values), "mean": round(sum(ordered) / len(ordered), digits),
            "p50": round(percentile(ordered, 0.5), digits), "min": round(ordered[0], digits),
            "max": round(ordered[-1], digits), "total": round(sum(ordered), digits)}


def seconds_summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50_s": None, "p95_s": None, "mean_s": None, "min_s": None,
                "max_s": None}
    ordered = sorted(values)
    return {"n": len(values), "p50_s": round(percentile(ordered, 0.5), 2),
            "p95_s": round(percentile(ordered, 0.95), 2),
            "mean_s": round(sum(values) / len(values), 2), "min_s": round(ordered[0], 2),
            "max_s": round(ordered[-1], 2)}


def per_minute(count: int, seconds: float | None) -> float | None:
    if not seconds or seconds <= 0:
        return None
    return round(count * 60.0 / seconds, 3)
