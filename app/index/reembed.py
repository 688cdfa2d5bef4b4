"""Switching the stored vectors to another embedding model while the service runs
(``anamnesis reindex --model``).

1. *Announce* the next model (``embedding_space.next_model``): running processes load it
   ahead (``app.index.switch``).
2. *Stage* every memory's vector by the new model beside the current one
   (``memory_vectors_next``), in batches, while searches and writes go on with the old
   model; a memory changed meanwhile is staged again.
3. *Swap*, in one transaction that holds the memories table: the last changes staged, every
   vector replaced, the column resized, the HNSW index made again, the space switched.
   Searches wait for it (they do not fail); it lasts about as long as rewriting the table.
4. *Entities* of the graph embedded again by name (they are only compared with one another,
   by consolidation, which skips those of the other model meanwhile).

Processes move to the new model within a poll interval of the swap. At the end no vector of
the old model is left, in Postgres or the graph.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from app.domain import embedding_text
from app.embeddings import Embedder
from app.store.db import Database
from app.store.graph.base import GraphStore
from app.store.repositories import embedding_space
from app.store.repositories.embedding_space import Source

logger = logging.getLogger(__name__)

BATCH = 256


@dataclass(frozen=True)
class Receipt:
    """What a switch did."""

    from_model: str
    to_model: str
    memories: int  # vectors swapped
    embedded: int  # memory vectors made (a memory changed while staging is made again)
    entities: int
    seconds: float


async def reembed(database: Database, graph: GraphStore, embedder: Embedder, source: str,
                  *, batch: int = BATCH, hnsw_m: int = 16,
                  hnsw_ef_construction: int = 64) -> Receipt | None:
    """Switches the database to ``embedder``'s model (``source``: its name or folder, for
    the running processes to load); None when it is already that model's. ``database``
    must name ``embedder``'s model on its connections."""
    began = time.perf_counter()
    model = embedder.model_name
    async with database.session_scope() as session:
        space = await embedding_space.current(session)
        if space.model == model:
            return None
        await embedding_space.announce(session, source)
    logger.info("switching the embedding model from %s to %s", space.model, model)
    staged = 0
    while True:
        async with database.session_scope() as session:
            pending = await embedding_space.unstaged(session, model, batch)
            if not pending:
                break
            await embedding_space.stage(session, model, await _embed(embedder, pending))
        staged += len(pending)
    async with database.session_scope() as session:
        await embedding_space.lock_memories(session)
        again = 0
        while pending := await embedding_space.unstaged(session, model, batch):
            await embedding_space.stage(session, model, await _embed(embedder, pending))
            again += len(pending)
        swapped = await embedding_space.swap(session, model, embedder.dimension,
                                             hnsw_m=hnsw_m,
                                             hnsw_ef_construction=hnsw_ef_construction)
    entities = 0
    while named := await graph.entities_to_embed(model, batch):
        vectors = await embedder.embed([name for _, name in named])
        await graph.set_entity_embeddings(model, {
            entity_id: vector for (entity_id, _), vector in zip(named, vectors, strict=True)})
        entities += len(named)
    return Receipt(space.model, model, swapped, staged + again, entities,
                   round(time.perf_counter() - began, 2))


async def _embed(embedder: Embedder, sources: list[Source]
                 ) -> list[tuple[Source, list[float]]]:
    vectors = await embedder.embed([embedding_text(s.text, s.metadata) for s in sources])
    return list(zip(sources, vectors, strict=True))
