"""Evidence recall of a LoCoMo conversation's questions on a server that holds it, three ways:
facts only, messages only, both fused (the default search). A message stands for its own
turn (its ``dia_id``); a fact for the turns its ``sources`` cite. Recall@k is the share of
questions with any evidence turn in the top k. Questions that the messages answer within 10
and the fused search does not are listed with what the ranking said (the target is that
facts add and never subtract)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import httpx

from bench.locomo_graph import CATEGORIES, answerable
from bench.memory_api import search

KS = (1, 5, 10, 20)
VIEWS = {"facts": {"kind": "fact"}, "messages": {"kind": "message"}, "both": None}


class EvidenceRecall:
    """Scores questions conversation by conversation, then reports them all together."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[int, list[tuple[int, bool]]]] = {
            view: {k: [] for k in KS} for view in VIEWS}
        self.fusion_losses: list[dict[str, Any]] = []

    async def score(self, client: httpx.AsyncClient, sample: dict[str, Any], user_id: str,
                    ingested: set[str], turns_of: dict[str, list[str]]) -> None:
        """``ingested``: the turns consolidated (questions about others are not scored);
        ``turns_of``: episode id → the ``dia_id`` of each of its messages."""
        cache: dict[str, set[str]] = {}
        for qa in answerable(sample, ingested):
            evidence = set(qa["evidence"])
            first: dict[str, int | None] = {}  # view → rank of the first hit with evidence
            for view, filters in VIEWS.items():
                hits = await search(client, qa["question"], user_id, max(KS), filters)
                covered = [await turns_of_hit(client, hit, turns_of, cache) for hit in hits]
                first[view] = next((rank for rank, turns in enumerate(covered, 1)
                                    if evidence & turns), None)
                for k in KS:
                    found = set().union(*covered[:k]) if covered[:k] else set()
                    self.rows[view][k].append((qa["category"], bool(evidence & found)))
            if _within(first["messages"], 10) and not _within(first["both"], 10):
                self.fusion_losses.append({"question": qa["question"], "first_hit": first,
                                           **await _why_lost(client, qa["question"], user_id,
                                                             evidence)})

    def report(self) -> dict[str, Any]:
        return {"recall": {view: {f"recall@{k}": _recall(rows) for k, rows in per_k.items()}
                           for view, per_k in self.rows.items()},
                "fusion_losses": self.fusion_losses}


async def turns_of_hit(client: httpx.AsyncClient, hit: dict[str, Any],
                       turns_of: dict[str, list[str]], cache: dict[str, set[str]]) -> set[str]:
    if hit["kind"] == "message":
        return {str(hit["metadata"].get("dia_id"))}
    if hit["id"] not in cache:
        detail = (await client.get(f"/v1/memories/{hit['id']}")).json()
        cache[hit["id"]] = {turns_of[source["episode_id"]][index]
                            for source in detail.get("sources", [])
                            if source["episode_id"] in turns_of
                            for index in source["message_indices"]
                            if 0 <= index < len(turns_of[source["episode_id"]])}
    return cache[hit["id"]]


async def _why_lost(client: httpx.AsyncClient, question: str, user_id: str,
                    evidence: set[str]) -> dict[str, Any]:
    """For a fusion loss, what the ranking said: the evidence message as the messages-only
    search scored it, where the fused search (50 deep) put it, and the fused top 10."""
    def brief(hit: dict[str, Any]) -> dict[str, Any]:
        explain = hit.get("explain") or {}
        return {"kind": hit["kind"], "memory": hit["memory"][:80],
                "dia_id": hit["metadata"].get("dia_id"), "score": round(hit["score"], 3),
                "explain": {key: explain.get(key) for key in
                            ("dense", "lexical", "date", "speaker", "conversation")}}
    alone = await search(client, question, user_id, 10, {"kind": "message"}, explain=True)
    fused = await search(client, question, user_id, 50, None, explain=True)
    def evidence_at(hits: list[dict[str, Any]]) -> dict[str, Any] | None:
        return next(({"rank": rank, **brief(hit)} for rank, hit in enumerate(hits, 1)
                     if hit["kind"] == "message" and hit["metadata"].get("dia_id") in evidence),
                    None)
    return {"messages_view": evidence_at(alone), "fused_50": evidence_at(fused),
            "fused_top10": [brief(hit) for hit in fused[:10]]}


def _within(rank: int | None, k: int) -> bool:
    return rank is not None and rank <= k


def _recall(rows: list[tuple[int, bool]]) -> dict[str, Any]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for category, hit in rows:
        groups["overall"].append(hit)
        groups[CATEGORIES[category]].append(hit)
    return {name: {"questions": len(hits), "any": round(sum(hits) / len(hits), 3)}
            for name, hits in groups.items()}
