"""One contract, every ``GraphStore``: the same tests run on each implementation."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from neo4j import AsyncGraphDatabase

from app.domain import ProjectScope, Timeline
from app.store.db import Database
from app.store.graph.base import (
    EntityRecord,
    GraphStore,
    RelationRecord,
    entity_type,
    name_key,
    relation_type,
)
from app.store.graph.neo4j import Neo4jGraphStore
from app.store.graph.postgres import PostgresGraphStore
from app.store.ids import uuid7
from app.store.repositories import keys
from tests.neo4j_server import Neo4jEndpoint

T0 = datetime(2024, 1, 1, tzinfo=UTC)
DIMENSION = 384
MODEL = "all-MiniLM-L6-v2"

StoreFactory = Callable[[], GraphStore]


def unit(*weights: float) -> list[float]:
    """A 384-d unit vector from a few leading weights."""
    vector = [*weights, *([0.0] * (DIMENSION - len(weights)))]
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


@pytest.fixture(params=["postgres", "neo4j"])
async def store(request: pytest.FixtureRequest, database: Database,
                clean: None) -> AsyncIterator[GraphStore]:
    """Projects live in Postgres for both stores (the tests make them there); the Neo4j store
    starts from a graph without entities or memory links (other tests' nodes are left alone)."""
    graph: GraphStore
    if request.param == "neo4j":
        endpoint: Neo4jEndpoint = request.getfixturevalue("neo4j_url")
        graph = Neo4jGraphStore(endpoint.url, endpoint.user, endpoint.password)
        await graph.setup()
        async with AsyncGraphDatabase.driver(
                endpoint.url, auth=(endpoint.user, endpoint.password)) as driver:
            await driver.execute_query("MATCH (n) WHERE n:Entity OR n:Memory DETACH DELETE n")
    else:
        graph = PostgresGraphStore(database.companion(2, 30.0))
        await graph.setup()
    yield graph
    await graph.aclose()


async def project(database: Database) -> uuid.UUID:
    async with database.session_scope() as session:
        made = await keys.get_or_create_project(session, f"graph-{uuid.uuid4().hex[:8]}")
    return made.id


def entity(scope: ProjectScope, name: str, *, kind: str = "person", summary: str = "",
           vector: list[float] | None = None) -> EntityRecord:
    return EntityRecord(id=uuid7(), project_id=scope.project_id, user_id=scope.user_id,
                        agent_id=scope.agent_id, run_id=scope.run_id, name=name, type=kind,
                        summary=summary, embedding=vector or unit(1.0), created_at=T0,
                        updated_at=T0, embedding_model=MODEL)


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
    scope = ProjectScope(await project(database), user_id="u1")
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
    u1, u2 = ProjectScope(mine, user_id="u1"), ProjectScope(mine, user_id="u2")
    other = ProjectScope(theirs, user_id="u1")
    a1, a2, a3 = entity(u1, "Alice"), entity(u2, "Alice"), entity(other, "Alice")
    b1 = entity(u1, "Bob")
    await store.put_entities([a1, a2, a3, b1])
    await store.put_relations([relation(a1, "knows", b1)])
    await store.link_memories(mine, [(a1.id, await memory(database, mine))])

    assert {e.id for e in await store.find_entities(u1)} == {a1.id, b1.id}
    assert {e.id for e in await store.find_entities(ProjectScope(mine))} == {a1.id, a2.id, b1.id}
    assert [e.id for e in await store.find_entities(other)] == [a3.id]
    assert await store.get_entity(theirs, a1.id) is None
    assert (await store.entity_named(u2, "alice") or a1).id == a2.id
    assert [e.id for e, _ in await store.similar_entities(other, unit(1.0), 10, MODEL)] == [a3.id]
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
    scope = ProjectScope(await project(database), user_id="u1")
    wider = ProjectScope(scope.project_id, user_id="u1", run_id="r1")
    mel = entity(scope, "Melanie", vector=unit(1.0, 0.1))
    mountain = entity(scope, "Mount Fuji", kind="place", vector=unit(0.0, 1.0))
    elsewhere = entity(wider, "Mel", vector=unit(1.0, 0.1))
    await store.put_entities([mel, mountain, elsewhere])
    ranked = await store.similar_entities(scope, unit(1.0, 0.12), 5, MODEL)
    assert [e.id for e, _ in ranked] == [mel.id, mountain.id]
    assert ranked[0][1] > 0.99 > ranked[1][1]


async def test_the_entities_a_text_names_come_in_one_lookup(store: GraphStore,
                                                            database: Database) -> None:
    """Whole names only, longest first, the scope's and its sub-scopes', however long the
    text (search's graph expansion looked up each word of the query once)."""
    scope = ProjectScope(await project(database), user_id="u1")
    narrower = ProjectScope(scope.project_id, user_id="u1", run_id="r1")
    melanie, fuji = entity(scope, "Melanie"), entity(scope, "Mount Fuji", kind="place")
    mel, fujiko = entity(narrower, "Mel"), entity(scope, "Fujiko")
    elsewhere = entity(ProjectScope(scope.project_id, user_id="u2"), "Melanie")
    await store.put_entities([melanie, fuji, mel, fujiko, elsewhere])
    filler = " ".join(f"word{i}" for i in range(1200))  # about 8,000 characters
    text = f"{filler} Did MELANIE climb mount   fuji with Mel, or Fuji alone? {filler}"
    found = await store.entities_named_in(scope, text, 10)
    assert [e.id for e in found] == [fuji.id, melanie.id, mel.id]
    assert [e.id for e in await store.entities_named_in(scope, text, 1)] == [fuji.id]
    assert await store.entities_named_in(scope, "nobody here", 10) == []


async def test_entities_are_re_embedded_for_another_model(store: GraphStore,
                                                         database: Database) -> None:
    """After a switch of embedding model (``reindex --model``), each entity's vector is made
    again; until then an entity is not compared with vectors of the other model."""
    scope = ProjectScope(await project(database), user_id="u1")
    ada = entity(scope, "Ada", vector=unit(1.0))
    await store.put_entities([ada])
    assert await store.similar_entities(scope, unit(1.0), 5, "next-model") == []
    listed: list[tuple[uuid.UUID, str]] = []
    while batch := await store.entities_to_embed("next-model", 100):
        listed += batch
        await store.set_entity_embeddings("next-model", {i: unit(0.0, 1.0) for i, _ in batch})
    assert (ada.id, "Ada") in listed
    [(found, score)] = await store.similar_entities(scope, unit(0.0, 1.0), 5, "next-model")
    assert (found.id, found.embedding_model) == (ada.id, "next-model")
    assert score > 0.99
    assert await store.similar_entities(scope, unit(1.0), 5, MODEL) == []


async def test_relations_are_read_as_of_a_time(store: GraphStore, database: Database) -> None:
    scope = ProjectScope(await project(database), user_id="u1")
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
    then = Timeline(as_of=T0 + timedelta(days=30))
    assert targets(await store.find_relations(scope, source=alice.id, moment=then)) == [paris.id]
    assert targets(await store.find_relations(
        scope, moment=Timeline(as_of=T0 - timedelta(days=1)))) == []
    assert targets(await store.find_relations(
        scope, moment=Timeline(include_superseded=True))) == [paris.id, berlin.id]
    assert targets(await store.find_relations(scope, target=paris.id)) == []
    assert targets(await store.find_relations(scope, touching=[alice.id, berlin.id])) == [
        berlin.id]
    assert [(e.id, hops) for e, hops in await store.neighbors(scope.project_id, alice.id, 1,
                                                              then)] == [(paris.id, 1)]


async def test_neighbours_up_to_depth_three(store: GraphStore, database: Database) -> None:
    scope = ProjectScope(await project(database), user_id="u1")
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


async def test_a_dense_neighbourhood_is_walked_once_per_node(store: GraphStore,
                                                             database: Database) -> None:
    """Everyone knows everyone: walking paths (degree ** depth) would make ~1.6 million rows
    at depth 3; each entity is reached once, at its nearest distance."""
    scope = ProjectScope(await project(database), user_id="u1")
    people = [entity(scope, f"P{i}") for i in range(118)]
    await store.put_entities(people)
    pairs = [(a, b) for i, a in enumerate(people) for b in people[i + 1:]]
    for start in range(0, len(pairs), 500):
        await store.put_relations([relation(a, "knows", b) for a, b in pairs[start:start + 500]])
    found = await store.neighbors(scope.project_id, people[0].id, 3)
    assert sorted((e.name, hops) for e, hops in found) == sorted(
        (p.name, 1) for p in people[1:])


async def test_deletions_propagate(store: GraphStore, database: Database) -> None:
    pid = await project(database)
    u1, u2 = ProjectScope(pid, user_id="u1"), ProjectScope(pid, user_id="u2")
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
    assert [e.id for e in await store.find_entities(ProjectScope(pid))] == [dave.id]
    await store.clear_project(pid)
    assert await store.find_entities(ProjectScope(pid)) == []


async def memory(database: Database, project_id: uuid.UUID) -> uuid.UUID:
    """A memory row to link entities to."""
    from app.domain import Scope, content_hash
    from app.store.repositories import memories
    from app.store.repositories.memories import NewMemory

    text = f"memory {uuid.uuid4().hex}"
    async with database.session_scope() as session:
        inserted = await memories.insert_new(session, project_id, Scope(user_id="u1"), [
            NewMemory(text, content_hash(text), {}, unit(0.5, 0.5))])
    return inserted[content_hash(text)]


async def test_times_round_trip_as_aware_utc(store: GraphStore, database: Database) -> None:
    scope = ProjectScope(await project(database), user_id="u1")
    plus_two = timezone(timedelta(hours=2))
    written = datetime(2024, 3, 5, 14, 30, 15, 123456, tzinfo=plus_two)
    alice = EntityRecord(**{**entity(scope, "Alice").__dict__, "created_at": written,
                            "updated_at": written + timedelta(microseconds=1)})
    paris = entity(scope, "Paris", kind="place")
    await store.put_entities([alice, paris])
    lives = relation(alice, "lives_in", paris, valid_at=written,
                     invalid_at=written + timedelta(days=400, microseconds=7))
    await store.put_relations([lives])

    read = await store.get_entity(scope.project_id, alice.id)
    assert read is not None
    assert (read.created_at, read.updated_at) == (alice.created_at, alice.updated_at)
    [found] = await store.find_relations(scope, moment=Timeline(include_superseded=True))
    assert (found.valid_at, found.invalid_at, found.created_at) == (
        lives.valid_at, lives.invalid_at, lives.created_at)
    for value in (read.created_at, read.updated_at, found.valid_at, found.invalid_at,
                  found.created_at):
        assert value is not None
        assert value.utcoffset() == timedelta(0)
    assert found == lives


async def test_exact_reads_take_unset_ids_as_unset(store: GraphStore,
                                                   database: Database) -> None:
    pid = await project(database)
    everyone, u1, u1_r1 = ProjectScope(pid), ProjectScope(pid, user_id="u1"), ProjectScope(
        pid, user_id="u1", run_id="r1")
    u2_r1 = ProjectScope(pid, user_id="u2", run_id="r1")
    shared, mine, run, theirs = (entity(everyone, "Ada"), entity(u1, "Ada"),
                                 entity(u1_r1, "Ada"), entity(u2_r1, "Ada"))
    await store.put_entities([shared, mine, run, theirs])

    for scope, expected in ((everyone, shared), (u1, mine), (u1_r1, run), (u2_r1, theirs)):
        assert (await store.entity_named(scope, "ada") or shared).id == expected.id
        assert [e.id for e, _ in await store.similar_entities(scope, unit(1.0), 10, MODEL)] == [
            expected.id]
    assert await store.entity_named(ProjectScope(pid, run_id="r1"), "ada") is None
    assert await store.entity_named(ProjectScope(pid, user_id="u2"), "ada") is None
    # Non-exact reads take an unset id as "any".
    assert {e.id for e in await store.find_entities(everyone)} == {
        shared.id, mine.id, run.id, theirs.id}
    assert {e.id for e in await store.find_entities(u1)} == {mine.id, run.id}
    assert {e.id for e in await store.find_entities(ProjectScope(pid, run_id="r1"))} == {
        run.id, theirs.id}


async def test_entities_by_name_part_and_by_page(store: GraphStore, database: Database) -> None:
    scope = ProjectScope(await project(database), agent_id="a1")
    names = ["Alice Smith", "alice  COOPER", "Bob", "Malice", "Carol"]
    made = [entity(scope, name) for name in names]
    await store.put_entities(made)

    assert [e.name for e in await store.find_entities(scope, name="ALICE")] == [
        "Alice Smith", "alice  COOPER", "Malice"]
    assert [e.name for e in await store.find_entities(scope, name=" Smith ")] == ["Alice Smith"]
    assert await store.find_entities(scope, name="zed") == []

    pages: list[list[uuid.UUID]] = []
    after: uuid.UUID | None = None
    while page := [e.id for e in await store.find_entities(scope, limit=2, after=after)]:
        pages.append(page)
        after = page[-1]
    assert pages == [[made[0].id, made[1].id], [made[2].id, made[3].id], [made[4].id]]


async def test_updates_change_only_what_the_contract_names(store: GraphStore,
                                                           database: Database) -> None:
    scope = ProjectScope(await project(database), user_id="u1")
    ada = entity(scope, "Ada", summary="a mathematician")
    paris = entity(scope, "Paris", kind="place")
    await store.put_entities([ada, paris])
    moved = EntityRecord(**{**ada.__dict__, "user_id": "u2", "name": "Ada Lovelace",
                            "type": "organization", "summary": "a countess",
                            "embedding": unit(0.0, 1.0), "created_at": T0 + timedelta(days=9),
                            "updated_at": T0 + timedelta(days=9)})
    # Last write wins within a batch, as across batches.
    await store.put_entities([EntityRecord(**{**moved.__dict__, "summary": "stale"}), moved])
    read = await store.get_entity(scope.project_id, ada.id)
    assert read is not None
    assert (read.user_id, read.created_at) == (ada.user_id, ada.created_at)  # kept
    assert (read.name, read.type, read.summary) == ("Ada Lovelace", "organization", "a countess")
    assert read.embedding == pytest.approx(unit(0.0, 1.0), abs=1e-6)
    assert await store.entity_named(scope, "ada") is None
    assert await store.entity_named(scope, "ada lovelace") == read

    lives = relation(ada, "lives_in", paris)
    await store.put_relations([lives])
    retired = RelationRecord(**{**lives.__dict__, "source_name": "someone else",
                                "valid_at": T0 + timedelta(days=5),
                                "invalid_at": T0 + timedelta(days=30)})
    await store.put_relations([lives, retired])
    [found] = await store.find_relations(scope, moment=Timeline(include_superseded=True))
    assert found == RelationRecord(**{**lives.__dict__, "invalid_at": T0 + timedelta(days=30)})
    assert await store.find_relations(scope) == []
    await store.put_relations([lives])  # an invalid_at set back to None revives it
    assert await store.find_relations(scope) == [lives]


async def test_relations_oldest_first_with_every_filter(store: GraphStore,
                                                        database: Database) -> None:
    scope = ProjectScope(await project(database), user_id="u1")
    ada, bob, cy = entity(scope, "Ada"), entity(scope, "Bob"), entity(scope, "Cy")
    await store.put_entities([ada, bob, cy])
    said = await memory(database, scope.project_id)
    late = relation(ada, "knows", bob, valid_at=T0 + timedelta(days=3))
    early = relation(bob, "mentions", cy, valid_at=T0 + timedelta(days=1), memory_id=said)
    middle = relation(cy, "knows", ada, valid_at=T0 + timedelta(days=2))
    await store.put_relations([late, early, middle])
    await store.link_memories(scope.project_id, [(bob.id, said), (cy.id, said)])

    assert [r.id for r in await store.find_relations(scope)] == [early.id, middle.id, late.id]
    assert [r.id for r in await store.find_relations(scope, limit=2)] == [early.id, middle.id]
    assert [r.id for r in await store.find_relations(scope, type="knows")] == [
        middle.id, late.id]
    assert [r.id for r in await store.find_relations(scope, source=cy.id, target=ada.id)] == [
        middle.id]
    assert [r.id for r in await store.find_relations(scope, touching=[ada.id, bob.id])] == [
        late.id]
    assert await store.find_relations(scope, touching=[]) == []
    assert await store.find_relations(scope, type="likes") == []
    # A relation that happens to be called "mentions" is not a memory link, nor the reverse.
    assert await store.find_relations(scope, type="mentions") == [early]
    assert await store.memories_of(scope.project_id, [ada.id, bob.id, cy.id]) == {
        bob.id: [said], cy.id: [said]}


async def test_neighbours_see_each_hop_at_the_moment(store: GraphStore,
                                                     database: Database) -> None:
    scope = ProjectScope(await project(database), user_id="u1")
    a, b, c = entity(scope, "A"), entity(scope, "B"), entity(scope, "C")
    await store.put_entities([a, b, c])
    ended = T0 + timedelta(days=10)
    await store.put_relations([relation(a, "knows", b, valid_at=T0 + timedelta(days=1)),
                               relation(c, "knows", b, valid_at=T0, invalid_at=ended)])

    def named(found: list[tuple[EntityRecord, int]]) -> dict[str, int]:
        return {e.name: hops for e, hops in found}

    assert named(await store.neighbors(scope.project_id, a.id, 2)) == {"B": 1}
    assert named(await store.neighbors(scope.project_id, a.id, 2,
                                       Timeline(include_superseded=True))) == {"B": 1, "C": 2}
    assert named(await store.neighbors(scope.project_id, a.id, 2,
                                       Timeline(as_of=T0 + timedelta(days=5)))) == {"B": 1, "C": 2}
    assert named(await store.neighbors(scope.project_id, a.id, 2, Timeline(as_of=T0))) == {}
    assert named(await store.neighbors(scope.project_id, c.id, 3, Timeline(as_of=T0))) == {
        "B": 1}
    assert await store.neighbors(scope.project_id, uuid7(), 3) == []


async def test_similarity_ties_by_id_and_limit(store: GraphStore, database: Database) -> None:
    scope = ProjectScope(await project(database), run_id="r1")
    twins = [entity(scope, name, vector=unit(0.3, 0.7)) for name in ("Twin A", "Twin B")]
    far = entity(scope, "Far", vector=unit(-1.0))
    await store.put_entities([far, *reversed(twins)])
    ranked = await store.similar_entities(scope, unit(0.3, 0.7), 10, MODEL)
    assert [e.id for e, _ in ranked] == [twins[0].id, twins[1].id, far.id]
    assert ranked[0][1] == pytest.approx(1.0, abs=1e-6)
    assert ranked[2][1] == pytest.approx(-0.3 / math.sqrt(0.58), abs=1e-6)
    assert [e.id for e, _ in await store.similar_entities(scope, unit(0.3, 0.7), 1, MODEL)] == [
        twins[0].id]


async def test_links_are_kept_once_and_forgotten_everywhere(store: GraphStore,
                                                            database: Database) -> None:
    pid = await project(database)
    u1, u2 = ProjectScope(pid, user_id="u1", run_id="r1"), ProjectScope(pid, user_id="u2",
                                                                     run_id="r1")
    ada, bob, cy = entity(u1, "Ada"), entity(u1, "Bob"), entity(u2, "Cy")
    await store.put_entities([ada, bob, cy])
    first, second = sorted([await memory(database, pid), await memory(database, pid)])
    await store.link_memories(pid, [(ada.id, first), (ada.id, first), (ada.id, second)])
    await store.link_memories(pid, [(ada.id, first), (bob.id, first), (uuid7(), first)])
    assert await store.memories_of(pid, [ada.id, bob.id]) == {ada.id: [first, second],
                                                             bob.id: [first]}
    assert await store.entities_of(pid, [second, first]) == {
        first: sorted([ada.id, bob.id]), second: [ada.id]}
    await store.detach_memories(pid, [])
    assert await store.delete_entity(pid, uuid7()) is False

    await store.put_relations([relation(ada, "knows", bob), relation(cy, "knows", ada)])
    assert await store.delete_entity(pid, ada.id) is True
    assert await store.delete_entity(pid, ada.id) is False
    assert await store.entities_of(pid, [first, second]) == {first: [bob.id]}
    assert await store.find_relations(
        ProjectScope(pid), moment=Timeline(include_superseded=True)) == []

    # delete_scope takes unset ids as "any": run r1 of every user.
    dan = entity(ProjectScope(pid, user_id="u1"), "Dan")
    await store.put_entities([dan])
    await store.put_relations([relation(dan, "knows", bob)])
    await store.delete_scope(ProjectScope(pid, run_id="r1"))
    assert [e.id for e in await store.find_entities(ProjectScope(pid))] == [dan.id]
    assert await store.entities_of(pid, [first]) == {}
    assert await store.find_relations(ProjectScope(pid)) == []


async def test_an_entity_id_of_another_project_is_left_alone(store: GraphStore,
                                                             database: Database) -> None:
    mine, theirs = ProjectScope(await project(database)), ProjectScope(await project(database))
    ada = entity(mine, "Ada", summary="mine")
    await store.put_entities([ada])
    await store.put_entities([EntityRecord(**{**ada.__dict__, "project_id": theirs.project_id,
                                              "summary": "theirs"})])
    assert (await store.get_entity(mine.project_id, ada.id) or ada).summary == "mine"
    assert await store.get_entity(theirs.project_id, ada.id) is None
    assert await store.find_entities(theirs) == []
