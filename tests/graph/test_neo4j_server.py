"""The session's Neo4j server speaks Bolt to the official async driver: constraints, MERGE with
parameters, reads, variable-length paths, and authentication."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import neo4j
import pytest
from neo4j import AsyncDriver, AsyncGraphDatabase

from tests.neo4j_server import Neo4jEndpoint


@pytest.fixture
async def driver(neo4j_url: Neo4jEndpoint) -> AsyncIterator[AsyncDriver]:
    url, user, password = neo4j_url
    async with AsyncGraphDatabase.driver(url, auth=(user, password)) as driver:
        yield driver


@pytest.fixture
async def scope(driver: AsyncDriver) -> AsyncIterator[str]:
    """A value that tags every node a test writes, deleted afterwards."""
    tag = uuid.uuid4().hex
    yield tag
    await driver.execute_query("MATCH (n {scope: $scope}) DETACH DELETE n", scope=tag)


async def test_server_is_neo4j_5(driver: AsyncDriver) -> None:
    await driver.verify_connectivity()
    records, _, _ = await driver.execute_query(
        "CALL dbms.components() YIELD name, versions, edition RETURN name, versions, edition")
    assert records[0]["name"] == "Neo4j Kernel"
    assert records[0]["versions"][0].startswith("5.")
    assert records[0]["edition"] == "community"


async def test_uniqueness_constraint_is_idempotent_and_enforced(driver: AsyncDriver,
                                                                scope: str) -> None:
    for _ in range(2):
        await driver.execute_query(
            "CREATE CONSTRAINT smoke_entity_id IF NOT EXISTS "
            "FOR (e:SmokeEntity) REQUIRE e.id IS UNIQUE")
    records, _, _ = await driver.execute_query(
        "SHOW CONSTRAINTS YIELD name, type WHERE name = 'smoke_entity_id' RETURN type")
    assert [r["type"] for r in records] == ["UNIQUENESS"]

    await driver.execute_query("CREATE (:SmokeEntity {id: $id, scope: $scope})",
                               id=f"{scope}-1", scope=scope)
    with pytest.raises(neo4j.exceptions.ConstraintError):
        await driver.execute_query("CREATE (:SmokeEntity {id: $id, scope: $scope})",
                                   id=f"{scope}-1", scope=scope)


async def test_merge_with_parameters_then_read_back(driver: AsyncDriver, scope: str) -> None:
    merge = ("MERGE (e:SmokeEntity {id: $id}) "
             "ON CREATE SET e.name = $name, e.scope = $scope, e.seen = 1 "
             "ON MATCH SET e.seen = e.seen + 1 RETURN e.seen AS seen")
    for expected in (1, 2):
        records, summary, _ = await driver.execute_query(
            merge, id=f"{scope}-ada", name="Ada 'Countess' Lovelace", scope=scope)
        assert records[0]["seen"] == expected
    assert summary.counters.nodes_created == 0

    records, _, _ = await driver.execute_query(
        "MATCH (e:SmokeEntity {scope: $scope}) RETURN e", scope=scope,
        routing_=neo4j.RoutingControl.READ)
    assert len(records) == 1
    node = records[0]["e"]
    assert node["name"] == "Ada 'Countess' Lovelace"
    assert set(node.labels) == {"SmokeEntity"}


async def test_variable_length_path(driver: AsyncDriver, scope: str) -> None:
    await driver.execute_query(
        "UNWIND range(0, 3) AS i CREATE (:SmokeEntity {id: $scope + '-' + i, i: i, "
        "scope: $scope})", scope=scope)
    await driver.execute_query(
        "MATCH (a:SmokeEntity {scope: $scope}), (b:SmokeEntity {scope: $scope}) "
        "WHERE b.i = a.i + 1 CREATE (a)-[:KNOWS {since: a.i}]->(b)", scope=scope)

    records, _, _ = await driver.execute_query(
        "MATCH p = (a:SmokeEntity {scope: $scope, i: 0})-[:KNOWS*1..3]->(b) "
        "RETURN b.i AS i, length(p) AS hops ORDER BY hops", scope=scope)
    assert [(r["i"], r["hops"]) for r in records] == [(1, 1), (2, 2), (3, 3)]

    records, _, _ = await driver.execute_query(
        "MATCH p = shortestPath((a:SmokeEntity {scope: $scope, i: 3})-[:KNOWS*]-"
        "(b:SmokeEntity {scope: $scope, i: 0})) RETURN [n IN nodes(p) | n.i] AS trail",
        scope=scope)
    assert records[0]["trail"] == [3, 2, 1, 0]


async def test_wrong_password_is_refused(neo4j_url: Neo4jEndpoint) -> None:
    url, user, password = neo4j_url
    if not password:
        pytest.skip("this server runs without authentication")
    async with AsyncGraphDatabase.driver(url, auth=(user, password + "-wrong")) as wrong:
        with pytest.raises(neo4j.exceptions.AuthError):
            await wrong.verify_connectivity()
