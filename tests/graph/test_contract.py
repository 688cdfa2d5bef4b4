"""One contract, every ``GraphStore``: the same tests run on each implementation."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest

from app.store.db import Database
from app.store.graph.base import (
    EntityRecord,
    GraphScope,
    GraphStore,
    Moment,
    RelationRecord,
    entity_type,
    name_key,
    relation_type,
)
from app.store.graph.postgres import PostgresGraphStore
from app.store.ids import uuid7
from app.store.repositories import keys

T0 = datetime(2024, 1, 1, tzinfo=UTC)
DIMENSION = 384

StoreFactory = Callable[[], GraphStore]


def unit(*weights: float) -> list[float]:
    """A 384-d unit vector from a few leading weights."""
    vector = [*weights, *([0.0] * (DIMENSION - len(weights)))]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


@pytest.fixture(params=["postgres"])
async def store(request: pytest.FixtureRequest, database: Database,
                clean: None) -> AsyncIterator[GraphStore]:
    graph: GraphStore = PostgresGraphStore(database)
    await graph.setup()
    yield graph
    await graph.aclose()


async def project(database: Database) -> uuid.UUID:
    async with database.session_scope() as session:
        made = await keys.get_or_create_project(session, f"graph-{uuid.uuid4().hex[:8]}")
    return made.id


def entity(scope: GraphScope, name: str, *, kind: str = "person", summary: str = "",
           vector: list[float] | None = None) -> EntityRecord:
    return EntityRecord(id=uuid7(), project_id=scope.project_id, user_id=scope.user_id,
                        agent_id=scope.agent_id, run_id=scope.run_id, name=name, type=kind,
                        summary=summary, embedding=vector or unit(1.0), created_at=T0,
                        updated_at=T0)


def relation(source: EntityRecord, kind: str, target: EntityRecord, *,
             valid_at: datetime = T0, invalid_at: datetime | None = None,
             memory_id: uuid.UUID | None = None) -> RelationRecord:
    return RelationRecord(id=uuid7(), project_id=source.project_id, user_id=source.user_id,
                          agent_id=source.agent_id, run_id=source.run_id, source_id=source.id,
                          target_id=target.id, type=kind, source_name=source.name,
                          target_name=target.name, valid_at=valid_at, invalid_at=invalid_at,
                          memory_id=memory_id, episode_id=None, created_at=valid_at)


def test_allow_lists() -> None:
    assert entity_type(" Person ") == "person"
    assert entity_type("Person:Admin") == "other"
    assert entity_type("x`) DETACH DELETE n //") == "other"
    assert relation_type("Lives In") == "lives_in"
    assert relation_type("works-at") == "works_at"
    assert relation_type("`]-() DELETE r //") == "delete_r"
    assert relation_type("2nd") == "r_2nd"
    assert relation_type("!!!") is None
    assert name_key("  Melanie  O'Brien ") == "melanie o brien"


async def test_upsert_is_by_id(store: GraphStore, database: Database) -> None:
    scope = GraphScope(await project(database), user_id="u1")
    alice = entity(scope, "Alice", summary="a friend")
    await store.put_entities([alice])
    await store.put_entities([alice])
    renamed = EntityRecord(**{**alice.__dict__, "summary": "a close friend",
                              "updated_at": T0 + timedelta(days=1)})
    await store.put_entities([renamed])
    found = await store.find_entities(scope)
    assert [(e.id, e.name, e.summary) for e in found] == [(alice.id, "Alice", "a close friend")]
    assert await store.entity_named(scope, "alice") == found[0]
    assert await store.get_entity(scope.project_id, alice.id) == found[0]

    paris = entity(scope, "Paris", kind="place")
    await store.put_entities([paris])
    lives = relation(alice, "lives_in", paris)
    await store.put_relations([lives, lives])
    assert [r.id for r in await store.find_relations(scope)] == [lives.id]


async def test_scopes_and_projects_never_meet(store: GraphStore, database: Database) -> None:
    mine, theirs = await project(database), await project(database)
    u1, u2 = GraphScope(mine, user_id="u1"), GraphScope(mine, user_id="u2")
    other = GraphScope(theirs, user_id="u1")
    a1, a2, a3 = entity(u1, "Alice"), entity(u2, "Alice"), entity(other, "Alice")
    b1 = entity(u1, "Bob")
    await store.put_entities([a1, a2, a3, b1])
    await store.put_relations([relation(a1, "knows", b1)])
    await store.link_memories(mine, [(a1.id, await memory(database, mine))])

    assert {e.id for e in await store.find_entities(u1)} == {a1.id, b1.id}
    assert {e.id for e in await store.find_entities(GraphScope(mine))} == {a1.id, a2.id, b1.id}
    assert [e.id for e in await store.find_entities(other)] == [a3.id]
    assert await store.get_entity(theirs, a1.id) is None
    assert (await store.entity_named(u2, "alice") or a1).id == a2.id
    assert [e.id for e, _ in await store.similar_entities(other, unit(1.0), 10)] == [a3.id]
    assert await store.find_relations(u2) == []
    assert await store.find_relations(other) == []
    assert await store.neighbors(theirs, a1.id, 3) == []
    assert await store.memories_of(theirs, [a1.id]) == {}
    # A link naming another project's entity is dropped, not written.
    await store.link_memories(theirs, [(a1.id, await memory(database, theirs))])
    assert await store.memories_of(mine, [a1.id]) != {}
    assert len((await store.memories_of(mine, [a1.id]))[a1.id]) == 1
    assert await store.delete_entity(theirs, a1.id) is False
    assert await store.get_entity(mine, a1.id) is not None


async def test_similarity_ranks_entities_of_the_exact_scope(store: GraphStore,
                                                            database: Database) -> None:
    scope = GraphScope(await project(database), user_id="u1")
    wider = GraphScope(scope.project_id, user_id="u1", run_id="r1")
    mel = entity(scope, "Melanie", vector=unit(1.0, 0.1))
    mountain = entity(scope, "Mount Fuji", kind="place", vector=unit(0.0, 1.0))
    elsewhere = entity(wider, "Mel", vector=unit(1.0, 0.1))
    await store.put_entities([mel, mountain, elsewhere])
    ranked = await store.similar_entities(scope, unit(1.0, 0.12), 5)
    assert [e.id for e, _ in ranked] == [mel.id, mountain.id]
    assert ranked[0][1] > 0.99 > ranked[1][1]


async def test_relations_are_read_as_of_a_time(store: GraphStore, database: Database) -> None:
    scope = GraphScope(await project(database), user_id="u1")
    alice, paris, berlin = entity(scope, "Alice"), entity(scope, "Paris"), entity(scope, "Berlin")
    await store.put_entities([alice, paris, berlin])
    moved = T0 + timedelta(days=150)
    in_paris = relation(alice, "lives_in", paris, valid_at=T0)
    in_berlin = relation(alice, "lives_in", berlin, valid_at=moved)
    await store.put_relations([in_paris, in_berlin])
    # Retiring the old relation is an update of its invalid_at, by id.
    await store.put_relations([RelationRecord(**{**in_paris.__dict__, "invalid_at": moved})])

    def targets(relations: list[RelationRecord]) -> list[uuid.UUID]:
        return [r.target_id for r in relations]

    assert targets(await store.find_relations(scope, source=alice.id,
                                              type="lives_in")) == [berlin.id]
    then = Moment(as_of=T0 + timedelta(days=30))
    assert targets(await store.find_relations(scope, source=alice.id, moment=then)) == [paris.id]
    assert targets(await store.find_relations(
        scope, moment=Moment(as_of=T0 - timedelta(days=1)))) == []
    assert targets(await store.find_relations(
        scope, moment=Moment(include_invalid=True))) == [paris.id, berlin.id]
    assert targets(await store.find_relations(scope, target=paris.id)) == []
    assert targets(await store.find_relations(scope, touching=[alice.id, berlin.id])) == [
        berlin.id]
    assert [(e.id, hops) for e, hops in await store.neighbors(scope.project_id, alice.id, 1,
                                                              then)] == [(paris.id, 1)]


async def test_neighbours_up_to_depth_three(store: GraphStore, database: Database) -> None:
    scope = GraphScope(await project(database), user_id="u1")
    chain = [entity(scope, name) for name in ("A", "B", "C", "D", "E")]
    await store.put_entities(chain)
    await store.put_relations([relation(chain[i], "knows", chain[i + 1]) for i in range(4)]
                              + [relation(chain[2], "knows", chain[0])])  # a cycle
    for depth, expected in ((1, {"B": 1, "C": 1}), (2, {"B": 1, "C": 1, "D": 2}),
                            (3, {"B": 1, "C": 1, "D": 2, "E": 3})):
        found = await store.neighbors(scope.project_id, chain[0].id, depth)
        assert {e.name: hops for e, hops in found} == expected
    # Direction does not matter for a neighbourhood.
    back = await store.neighbors(scope.project_id, chain[4].id, 1)
    assert [e.name for e, _ in back] == ["D"]


async def test_deletions_propagate(store: GraphStore, database: Database) -> None:
    pid = await project(database)
    u1, u2 = GraphScope(pid, user_id="u1"), GraphScope(pid, user_id="u2")
    alice, bob, carol = entity(u1, "Alice"), entity(u1, "Bob"), entity(u1, "Carol")
    dave = entity(u2, "Dave")
    await store.put_entities([alice, bob, carol, dave])
    said, other = await memory(database, pid), await memory(database, pid)
    await store.put_relations([relation(alice, "knows", bob, memory_id=said),
                               relation(alice, "knows", carol, memory_id=other)])
    await store.link_memories(pid, [(alice.id, said), (bob.id, said), (carol.id, other)])
    assert await store.entities_of(pid, [said]) == {said: sorted([alice.id, bob.id])}

    await store.detach_memories(pid, [said])
    assert await store.entities_of(pid, [said]) == {}
    assert [r.target_id for r in await store.find_relations(u1)] == [carol.id]
    assert await store.memories_of(pid, [carol.id]) == {carol.id: [other]}

    assert await store.delete_entity(pid, carol.id) is True
    assert await store.find_relations(u1) == []
    assert await store.memories_of(pid, [carol.id]) == {}
    assert await store.get_entity(pid, carol.id) is None

    await store.delete_scope(u1)
    assert await store.find_entities(u1) == []
    assert [e.id for e in await store.find_entities(GraphScope(pid))] == [dave.id]
    await store.clear_project(pid)
    assert await store.find_entities(GraphScope(pid)) == []


async def memory(database: Database, project_id: uuid.UUID) -> uuid.UUID:
    """A memory row to link entities to."""
    from app.memories.content import content_hash
    from app.store.repositories import memories
    from app.store.repositories.memories import NewMemory, Scope

    text = f"memory {uuid.uuid4().hex}"
    async with database.session_scope() as session:
        inserted = await memories.insert_new(session, project_id, Scope(user_id="u1"), [
            NewMemory(text, content_hash(text), {}, unit(0.5, 0.5))])
    return inserted[content_hash(text)]
