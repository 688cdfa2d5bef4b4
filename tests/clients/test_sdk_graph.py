"""The SDK's graph, key and transfer methods against the live server, once per client (sync
and async). The graph is made the way production makes it: inferred adds consolidated by the
scripted LLM, whose graph step names the entities and relations; it lives in Postgres."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime

import pytest
from anamnesis import (
    AnamnesisConnectionError,
    AuthenticationError,
    Entity,
    EntityDetail,
    ImportReceipt,
    KeyCreated,
    NotFoundError,
    PermissionDeniedError,
    Relation,
    Unmerged,
    ValidationError,
)

from tests.clients.conftest import Facade, KeyFactory, open_client
from tests.conftest import LiveServer
from tests.consolidate.scripted_brain import Brain, FactSpec, ends
from tests.graph.test_graph_pipeline import graph_of

SESSIONS = [
    ("My sister Melanie lives in Paris since June 2023.", datetime(2024, 1, 10, tzinfo=UTC)),
    ("Mel moved to Berlin on 20 February, she works at Siemens now.",
     datetime(2024, 3, 1, tzinfo=UTC)),
    ("I miss the bakeries of Paris.", datetime(2024, 5, 1, tzinfo=UTC)),
]


def teach_graph(brain: Brain) -> Brain:
    """Extracts the three sessions' facts, lets Berlin supersede Paris, and names their graph
    (the second session calls Melanie "Mel", which the graph step merges into her)."""
    brain.facts = {
        SESSIONS[0][0]: [FactSpec("User's sister is Melanie"),
                         FactSpec("Melanie lives in Paris", "since June 2023")],
        SESSIONS[1][0]: [FactSpec("Melanie lives in Berlin", "on 20 February"),
                         FactSpec("Melanie works at Siemens")],
        SESSIONS[2][0]: [FactSpec("User likes the bakeries of Paris")],
    }
    brain.still_true = ends(("Melanie lives in Berlin", "Melanie lives in Paris"))
    brain.graph = graph_of
    return brain


@pytest.fixture
def brain(brain: Brain) -> Brain:
    return teach_graph(brain)


async def remember(sdk: Facade, user: str) -> dict[str, Entity]:
    """The three sessions, consolidated; the scope's entities by name."""
    for text, when in SESSIONS:
        job = await sdk.add(text, user_id=user, observed_at=when, wait=True)
        assert job.status == "SUCCEEDED", job.error
    return {e.name: e for e in await sdk.collect("entities", user_id=user)}


def triples(relations: list[Relation], names: dict[str, str]) -> set[tuple[str, str, str]]:
    return {(names[r.source_id], r.type, names[r.target_id]) for r in relations}


async def test_entities_relations_and_neighbours(sdk: Facade, user: str, brain: Brain) -> None:
    entities = await remember(sdk, user)
    assert set(entities) == {"User", "Melanie", "Paris", "Berlin", "Siemens"}
    names = {e.id: e.name for e in entities.values()}
    melanie = entities["Melanie"]
    assert melanie.type == "person"
    assert melanie.user_id == user

    paged = await sdk.collect("entities", user_id=user, page_size=2)
    assert [e.id for e in paged] == [e.id for e in entities.values()]  # oldest first, all pages
    assert sum(1 for r in sdk.requests if r.url.path == "/v1/entities") >= 3
    assert [e.name for e in await sdk.collect("entities", user_id=user, name="mel")] == [
        "Melanie"]
    assert await sdk.collect("entities", user_id="nobody") == []

    detail = await sdk.get_entity(melanie.id)
    assert isinstance(detail, EntityDetail)
    assert [a.alias for a in detail.aliases] == ["Mel"]
    assert {m.memory for m in detail.memories} == {
        "User's sister is Melanie", "Melanie lives in Berlin", "Melanie works at Siemens"}
    assert {r.type for r in detail.relations} == {"sister_of", "lives_in", "works_at"}

    hops = await sdk.neighbors(entities["Siemens"].id, depth=2)
    assert {(n.entity.name, n.distance) for n in hops} == {
        ("Melanie", 1), ("User", 2), ("Berlin", 2)}
    assert {n.entity.name for n in await sdk.neighbors(entities["Siemens"].id)} == {"Melanie"}
    back_then = await sdk.neighbors(melanie.id, as_of=datetime(2024, 1, 15, tzinfo=UTC))
    assert {n.entity.name for n in back_then} == {"User", "Paris"}

    current = await sdk.relations(user_id=user)
    assert triples(current, names) == {
        ("Melanie", "sister_of", "User"), ("Melanie", "lives_in", "Berlin"),
        ("Melanie", "works_at", "Siemens"), ("User", "likes", "Paris")}
    then = await sdk.relations(user_id=user, as_of=datetime(2024, 1, 15, tzinfo=UTC))
    assert ("Melanie", "lives_in", "Paris") in triples(then, names)
    everything = await sdk.relations(user_id=user, include_invalid=True)
    [paris] = [r for r in everything if r.type == "lives_in" and r.target_name == "Paris"]
    assert paris.invalid_at == datetime(2024, 2, 20, tzinfo=UTC)
    lives = await sdk.relations(user_id=user, source=melanie.id, type="lives_in")
    assert [r.target_name for r in lives] == ["Berlin"]
    assert len(await sdk.relations(user_id=user, target=entities["User"].id, limit=1)) == 1


async def test_search_includes_the_relations_among_its_hits(sdk: Facade, user: str,
                                                          brain: Brain) -> None:
    entities = await remember(sdk, user)
    hits = await sdk.search("Where does Melanie live?", user_id=user, relations=True,
                            filters={"kind": "fact"})
    assert hits[0].memory == "Melanie lives in Berlin"
    assert hits.relations
    assert all(isinstance(r, Relation) for r in hits.relations)
    names = {e.id: e.name for e in entities.values()}
    assert ("Melanie", "lives_in", "Berlin") in triples(hits.relations, names)
    plain = await sdk.search("Where does Melanie live?", user_id=user, context=True)
    assert plain.relations is None
    body = json.loads(sdk.requests[-1].content)
    assert body["include"] == ["context"]


async def test_unmerge_then_delete_an_entity(sdk: Facade, user: str, brain: Brain) -> None:
    entities = await remember(sdk, user)
    melanie = entities["Melanie"]
    unmerged = await sdk.unmerge_entity(melanie.id, "Mel")
    assert isinstance(unmerged, Unmerged)
    assert unmerged.undone == 1
    assert unmerged.split is not None
    assert unmerged.split.name == "Mel"
    assert unmerged.entity is not None
    assert unmerged.entity.id == melanie.id
    assert (await sdk.get_entity(melanie.id)).aliases == []
    with pytest.raises(NotFoundError):
        await sdk.unmerge_entity(melanie.id, "Mel")

    berlin = entities["Berlin"]
    await sdk.delete_entity(berlin.id)
    with pytest.raises(NotFoundError):
        await sdk.get_entity(berlin.id)
    with pytest.raises(NotFoundError):
        await sdk.delete_entity(berlin.id)
    kept = {m.memory for m in await sdk.get_all(user_id=user, kind="fact")}
    assert "Melanie lives in Berlin" in kept  # the memories stay


async def test_graph_arguments_are_checked(sdk: Facade, user: str) -> None:
    sdk.requests.clear()
    for bad in (sdk.get_entity(""), sdk.delete_entity(""), sdk.unmerge_entity("", "x"),
                sdk.neighbors("", depth=1)):
        with pytest.raises(ValueError):
            await bad
    with pytest.raises(ValueError):
        await sdk.neighbors(str(uuid.uuid4()), as_of=datetime(2024, 1, 1))  # naive
    with pytest.raises(ValueError):
        await sdk.collect("entities", page_size=0)
    assert sdk.requests == []
    with pytest.raises(NotFoundError):
        await sdk.get_entity(str(uuid.uuid4()))
    with pytest.raises(ValidationError):
        await sdk.neighbors(str(uuid.uuid4()), depth=4)
    with pytest.raises(ValidationError):
        await sdk.relations(as_of=datetime(2024, 1, 1, tzinfo=UTC), include_invalid=True)
    with pytest.raises(ValidationError):
        await sdk.get_entity("not-a-uuid")


async def test_keys_are_made_listed_and_revoked(sdk: Facade, kind: str, live_server: LiveServer,
                                                user: str) -> None:
    made = await sdk.create_key(name="reader", scopes=["read"])
    assert isinstance(made, KeyCreated)
    assert made.scopes == ["read"]
    assert made.prefix in made.key
    listed = await sdk.list_keys()
    assert [k.prefix for k in listed][-1] == made.prefix
    assert listed[-1].revoked_at is None
    base_url = live_server.base_url
    async with open_client(kind, base_url, made.key) as reader:
        assert await reader.search("anything", user_id=user) == []
        with pytest.raises(PermissionDeniedError) as raised:
            await reader.add("I like tea", user_id=user, infer=False)
        assert raised.value.status_code == 403
        with pytest.raises(PermissionDeniedError):
            await reader.export_project(io.BytesIO())
        await sdk.revoke_key(made.prefix)
        with pytest.raises(AuthenticationError):
            await reader.search("anything", user_id=user)
    assert (await sdk.list_keys())[-1].revoked_at is not None
    with pytest.raises(NotFoundError):
        await sdk.revoke_key("ak_nonexistent")


async def test_export_then_import_into_another_project(
        sdk: Facade, kind: str, live_server: LiveServer, api_key_factory: KeyFactory,
        user: str) -> None:
    await sdk.add("I keep bees on the roof", user_id=user, infer=False)
    exported = io.BytesIO()
    written = await sdk.export_project(exported)
    data = exported.getvalue()
    assert written == len(data) > 0
    assert b"I keep bees on the roof" in data

    base_url = live_server.base_url
    async with open_client(kind, base_url, await api_key_factory()) as other:
        receipt = await other.import_project(data)
        assert isinstance(receipt, ImportReceipt)
        assert receipt.records["memory"].inserted == 1
        assert [m.memory for m in await other.get_all(user_id=user)] == [
            "I keep bees on the roof"]
        again = await other.import_project(io.BytesIO(data))  # a file, streamed
        assert again.records["memory"].present == 1
        assert again.records["memory"].inserted == 0
        with pytest.raises(ValidationError):
            await other.import_project(b'{"record": "nonsense"}\n')


async def test_an_export_that_cannot_connect_is_a_connection_error(kind: str) -> None:
    async with open_client(kind, "http://127.0.0.1:9", "anm_unused") as nowhere:
        with pytest.raises(AnamnesisConnectionError):
            await nowhere.export_project(io.BytesIO())
