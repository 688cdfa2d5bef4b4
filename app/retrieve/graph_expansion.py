"""Graph candidates for search: memories one relation away from what the query names.

The query's entities are those of the search's scope whose whole name appears in the query
("What does Melanie's employer build?" names Melanie). Their neighbours' memories are the
candidates vector similarity alone misses: the answer to a multi-hop question mentions the
neighbour (Siemens), not the entity asked about. Memories of the named entities themselves
are left to the vector search, which finds them by their own words.
"""

from __future__ import annotations

import uuid

from app.domain import ProjectScope, Timeline
from app.store.graph.base import GraphStore

MAX_NAMED = 10
MAX_CANDIDATES = 200


async def named_entities(graph: GraphStore, scope: ProjectScope, query: str) -> list[uuid.UUID]:
    """One lookup whatever the query's length (it was one per word: an 8,000-character query
    made some 2,000)."""
    return [entity.id for entity in await graph.entities_named_in(scope, query, MAX_NAMED)]


async def hop_memories(graph: GraphStore, scope: ProjectScope, query: str,
                       moment: Timeline) -> list[uuid.UUID]:
    """Ids of memories linked to entities one hop from the query's entities, not to those."""
    named = await named_entities(graph, scope, query)
    if not named:
        return []
    near: dict[uuid.UUID, None] = {}
    for entity_id in named:
        for neighbour, _ in await graph.neighbors(scope.project_id, entity_id, 1, moment):
            near[neighbour.id] = None
    own = {m for ms in (await graph.memories_of(scope.project_id, named)).values() for m in ms}
    linked = await graph.memories_of(scope.project_id, [e for e in near if e not in named])
    candidates = dict.fromkeys(m for ms in linked.values() for m in ms if m not in own)
    return list(candidates)[:MAX_CANDIDATES]
