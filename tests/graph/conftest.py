"""A real Neo4j server for the graph tests: started once per session from the Maven-resolved
Community edition (tests/neo4j_server.py), or the one that ``ANAMNESIS_TEST_NEO4J_URL`` names
(``bolt://USER:PASSWORD@HOST:PORT``; user ``neo4j`` and an empty password when left out)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.neo4j_server import DEFAULT_USER, Neo4jEndpoint, Neo4jServer


def endpoint_from_url(url: str) -> Neo4jEndpoint:
    """Moves credentials in the URL's user part out, as the driver takes them separately."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    bare = parts._replace(netloc=netloc).geturl()
    return Neo4jEndpoint(bare, unquote(parts.username or DEFAULT_USER),
                         unquote(parts.password or ""))


@pytest.fixture(scope="session")
def neo4j_url() -> Iterator[Neo4jEndpoint]:
    """``(url, user, password)`` of a Neo4j 5 server for this session; tests share its one
    database, so each cleans up what it writes (or works under labels of its own)."""
    configured = os.environ.get("ANAMNESIS_TEST_NEO4J_URL")
    if configured:
        yield endpoint_from_url(configured)
        return
    home = Path(tempfile.mkdtemp(prefix="anamnesis-neo4j-"))
    try:
        with Neo4jServer(home) as server:
            yield server.endpoint
    finally:
        shutil.rmtree(home, ignore_errors=True)
