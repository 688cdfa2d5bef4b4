"""API shapes for search."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.graph.schemas import RelationRead
from app.limits import MAX_ID_CHARS, MAX_QUERY_CHARS, MAX_TOP_K
from app.memories.schemas import MemoryRead
from app.validation import OptionalStorableStr, OptionalTimestamp, StorableStr


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: StorableStr = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    filters: dict[str, Any] | None = Field(
        default=None,
        description="user_id, agent_id, run_id, created_at, updated_at, metadata.<key> with "
        "eq/ne/gt/gte/lt/lte/in/nin/contains/icontains, combined with AND/OR/NOT.",
    )
    top_k: int = Field(default=10, ge=1, le=MAX_TOP_K)
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0,
                                    description="Minimum cosine similarity of a hit.")
    user_id: OptionalStorableStr = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
    agent_id: OptionalStorableStr = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
    run_id: OptionalStorableStr = Field(default=None, min_length=1, max_length=MAX_ID_CHARS)
    as_of: OptionalTimestamp = Field(default=None,
                                   description="Search what was true at this time.")
    include_superseded: bool = Field(default=False,
                                     description="Search superseded memories too.")
    graph: bool = Field(default=False,
                        description="Also take memories linked to entities one relation away "
                        "from the entities the query names (multi-hop questions).")
    include: list[Literal["relations", "context"]] = Field(
        default_factory=list, max_length=2,
        description='"relations": add the current relations among the hits\' entities; '
        '"context": give each hit the exchange it belongs to (a message: the turns next '
        'to it in its conversation; a fact: the messages it was distilled from).')
    ranking: Literal["hybrid", "dense", "lexical"] | None = Field(
        default=None, description="hybrid: meaning and words fused; dense: cosine similarity "
        "only; lexical: BM25 only. Default: the server's search.ranking (hybrid).")
    explain: bool = Field(default=False,
                          description="Give each hit the ranks and scores behind its score.")


class SearchHit(MemoryRead):
    score: float = Field(description="What the results are ordered by, higher first: the "
                         "fused score (hybrid), cosine similarity (dense) or BM25 (lexical), "
                         "plus the graph bonus.")
    similarity: float = Field(description="Cosine similarity to the query (what threshold "
                              "applies to).")
    explain: dict[str, Any] | None = Field(
        default=None, description='With "explain": per signal (dense, lexical, graph) its '
        "rank among that signal's candidates, score and z-score; the recency term, the "
        "superseded penalty, what its conversation lent it and the fused score.")
    context: list[MemoryRead] | None = Field(
        default=None, description='With "include": ["context"]: the messages around the '
        "hit, in the order said (a message: the turns just before and after it in its "
        "conversation; a fact: the messages it was distilled from).")


class SearchResponse(BaseModel):
    results: list[SearchHit]
    relations: list[RelationRead] | None = Field(
        default=None, description='With "include": ["relations"].')
