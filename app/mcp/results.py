"""What the MCP tools answer: a structured result (its schema is the tool's output schema) and
a short text a model reads at a glance, built from the SDK's own response models."""

from __future__ import annotations

from anamnesis import (
    AddedMemory,
    EntityDetail,
    HistoryEvent,
    Job,
    Memory,
    MemoryDetail,
    Neighbor,
    Relation,
    SearchHit,
)
from mcp.types import CallToolResult, TextContent
from pydantic import BaseModel, Field


class AddMemoryResult(BaseModel):
    """``stored``: the memories written at once (``infer`` false); ``job``: the consolidation
    that distils the message into facts in the background (``infer`` true)."""

    stored: list[AddedMemory] = Field(default_factory=list)
    job: Job | None = None


class SearchMemoriesResult(BaseModel):
    results: list[SearchHit]
    relations: list[Relation] | None = Field(
        default=None, description="With relations: the current relations among the hits' "
        "entities (their source_id/target_id are entity ids for get_entity and neighbors).")


class MemoryListResult(BaseModel):
    results: list[Memory]
    more: bool = Field(description="More memories than the limit exist: ask for more.")


class DeletedResult(BaseModel):
    id: str
    deleted: bool = True


class HistoryResult(BaseModel):
    results: list[HistoryEvent]


class NeighborsResult(BaseModel):
    entity_id: str
    results: list[Neighbor]


def answer(result: BaseModel, text: str) -> CallToolResult:
    """The tool's answer: ``result`` as structured content, ``text`` for reading."""
    return CallToolResult(content=[TextContent(type="text", text=text)],
                          structured_content=result.model_dump(mode="json"))


def _scope(memory: Memory) -> str:
    ids = [f"{name}={value}" for name, value in (("user", memory.user_id),
                                                  ("agent", memory.agent_id),
                                                  ("run", memory.run_id)) if value]
    return ", ".join(ids)


def memory_line(memory: Memory) -> str:
    """One line per memory: its words, then id, kind, scope and since when it holds."""
    since = (memory.valid_at or memory.created_at).date().isoformat()
    notes = [f"id {memory.id}", memory.kind, _scope(memory), f"since {since}"]
    if memory.invalid_at is not None:
        notes.append(f"no longer true since {memory.invalid_at.date().isoformat()}")
    return f"- {memory.memory} ({'; '.join(note for note in notes if note)})"


def relation_line(relation: Relation) -> str:
    return (f"- {relation.source_name} {relation.type} {relation.target_name} "
            f"(entities {relation.source_id} -> {relation.target_id})")


def added_text(result: AddMemoryResult) -> str:
    if result.job is not None:
        return (f"Stored the message (searchable now); consolidation job {result.job.id} "
                f"({result.job.status}) distils it into facts in the background.")
    return "Stored:\n" + "\n".join(f"- {m.memory} (id {m.id})" for m in result.stored)


def search_text(result: SearchMemoriesResult) -> str:
    if not result.results:
        return "No memories match."
    lines = [f"{len(result.results)} memories, best first:"]
    lines += [f"{memory_line(hit)} [score {hit.score:.3f}]" for hit in result.results]
    if result.relations:
        lines += ["Relations among them:", *map(relation_line, result.relations)]
    return "\n".join(lines)


def list_text(result: MemoryListResult) -> str:
    if not result.results:
        return "No memories in this scope."
    more = " (more exist: raise the limit)" if result.more else ""
    return "\n".join([f"{len(result.results)} memories, newest first{more}:",
                      *map(memory_line, result.results)])


def detail_text(memory: MemoryDetail) -> str:
    lines = [memory_line(memory)]
    if memory.superseded_by:
        lines.append(f"Superseded by {memory.superseded_by}.")
    for source in memory.sources:
        lines += [f"  said ({source.observed_at.date().isoformat()}) {m.role}: {m.content}"
                  for m in source.messages]
    return "\n".join(lines)


def history_text(memory_id: str, result: HistoryResult) -> str:
    lines = [f"{len(result.results)} changes to {memory_id}, oldest first:"]
    for event in result.results:
        words = (f"{event.old_memory!r} -> {event.new_memory!r}" if event.old_memory
                 else repr(event.new_memory))
        cause = f"job {event.job_id}" if event.job_id else "API request"
        lines.append(f"- {event.created_at.isoformat()} {event.event} {words} ({cause})")
    return "\n".join(lines)


def entity_text(entity: EntityDetail) -> str:
    lines = [f"{entity.name} ({entity.type}; id {entity.id}): {entity.summary}".rstrip(": ")]
    if entity.aliases:
        lines.append("Also called: " + ", ".join(a.alias for a in entity.aliases))
    if entity.relations:
        lines += ["Relations:", *map(relation_line, entity.relations)]
    if entity.memories:
        lines += ["Memories that mention it:", *map(memory_line, entity.memories)]
    return "\n".join(lines)


def neighbors_text(result: NeighborsResult) -> str:
    return "\n".join([f"{len(result.results)} entities near {result.entity_id}, nearest first:",
                      *(f"- {n.entity.name} ({n.entity.type}; id {n.entity.id}), "
                        f"{n.distance} hop{'s' if n.distance > 1 else ''}"
                        for n in result.results)])
