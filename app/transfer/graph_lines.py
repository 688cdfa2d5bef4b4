"""Entities and relations of a file, into the graph store (Postgres tables or Neo4j) through
the ``GraphStore`` contract, so no SQL or Cypher lives here.

An entity's id in the project is made as consolidation makes it, from the project, the scope
and the name (``consolidate.graph.entity_id``): the same id as in the file when the file is
this project's, and one no other project can hold otherwise, so an import never writes into
another project's graph whatever ids the file names. Relations follow their entities; a
relation's own id is kept for this project's own file and derived (``ids.derived``) for
another's. Links to memories the project does not hold are left out.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from app.consolidate.graph import entity_id
from app.domain import ProjectScope
from app.store.graph.base import EntityRecord, RelationRecord, name_key
from app.store.repositories import bulk_insert
from app.transfer.ids import derived, place
from app.transfer.records import EntityLine, RelationLine
from app.transfer.survey import usable_vector

if TYPE_CHECKING:
    from app.transfer.import_ import Loader


async def put_entities(loader: Loader, batch: list[tuple[int, Any]]) -> None:
    target, project = loader.target, loader.target.project_id
    lines: list[tuple[int, EntityLine]] = batch
    records: list[EntityRecord] = []
    for _, line in lines:
        scope = ProjectScope(project, line.user_id, line.agent_id, line.run_id)
        new = entity_id(scope, name_key(line.name))
        loader.entities[line.id] = new
        records.append(EntityRecord(
            id=new, project_id=project, user_id=line.user_id, agent_id=line.agent_id,
            run_id=line.run_id, name=line.name, type=line.type, summary=line.summary,
            embedding=[], created_at=line.created_at,
            updated_at=line.updated_at or line.created_at, embedding_model=loader.space.model))
    missing = [i for i, (_, line) in enumerate(lines)
               if not usable_vector(line, loader.header, loader.space)]
    made = await target.embedder.embed([lines[i][1].name for i in missing]) if missing else []
    vectors = dict(zip(missing, made, strict=True))
    loader.embedded += len(missing)
    records = [dataclasses.replace(record, embedding=vectors[i] if i in vectors
                                   else _given(lines[i][1]))
               for i, record in enumerate(records)]
    await target.graph.put_entities(records)
    loader.counts["entity"].inserted += len(lines)
    cited = [memory for _, line in lines for memory in line.memories]
    async with target.database.session_scope() as session:
        memories = await place(session, "memories", project, cited)
        held = await bulk_insert.memories_held(session, project, list(memories.new.values()))
    links = [(loader.entities[line.id], memories[memory]) for _, line in lines
             for memory in line.memories if memories[memory] in held]
    await target.graph.link_memories(project, links)


def _given(line: EntityLine) -> list[float]:
    assert line.vector is not None
    vector: list[float] = line.vector.tolist()
    return vector


async def put_relations(loader: Loader, batch: list[tuple[int, Any]]) -> None:
    target, project = loader.target, loader.target.project_id
    lines: list[tuple[int, RelationLine]] = batch
    async with target.database.session_scope() as session:
        memories = await place(session, "memories", project, [r.memory_id for _, r in lines])
        episodes = await place(session, "episodes", project, [r.episode_id for _, r in lines])
    records = []
    for number, line in lines:
        source, end = loader.entities.get(line.source_id), loader.entities.get(line.target_id)
        if source is None or end is None:
            loader.skip(number, "relation", "its entities are not in the file")
            continue
        records.append(RelationRecord(
            id=line.id if loader.same_project else derived(project, line.id),
            project_id=project, user_id=line.user_id, agent_id=line.agent_id,
            run_id=line.run_id, source_id=source, target_id=end, type=line.type,
            source_name=line.source_name, target_name=line.target_name,
            valid_at=line.valid_at, invalid_at=line.invalid_at,
            memory_id=memories.get(line.memory_id), episode_id=episodes.get(line.episode_id),
            created_at=line.created_at))
    await target.graph.put_relations(records)
    loader.counts["relation"].inserted += len(records)

