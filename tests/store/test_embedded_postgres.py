"""The bundled server: first start initialises and owns it, a second opener attaches."""

import asyncio
import functools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from app.store.embedded_postgres import EmbeddedPostgres
from tests.conftest import plain_dsn, server_home


async def _vector_distance(url: str) -> float:
    connection = await asyncpg.connect(plain_dsn(url))
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return float(await connection.fetchval("SELECT '[1,0]'::vector <=> '[0,1]'::vector"))
    finally:
        await connection.close()


@pytest.fixture
def home() -> Iterator[Path]:
    with server_home() as path:
        yield path


async def test_start_attach_stop_restart(home: Path) -> None:
    owner = EmbeddedPostgres(home / "data")
    first = await asyncio.to_thread(owner.ensure_running)
    try:
        assert first.owned
        assert await _vector_distance(first.url()) == 1.0

        guest = EmbeddedPostgres(home / "data")
        second = await asyncio.to_thread(guest.ensure_running)
        assert (second.port, second.owned) == (first.port, False)
        await asyncio.to_thread(guest.stop)  # a guest never stops the owner's server
        assert await _vector_distance(second.url()) == 1.0
    finally:
        await asyncio.to_thread(owner.stop)

    assert not (owner.pgdata / "postmaster.pid").exists()
    again = EmbeddedPostgres(home / "data")
    third = await asyncio.to_thread(again.ensure_running)
    try:
        assert third.owned
        assert third.password == first.password
        assert await _vector_distance(third.url()) == 1.0
    finally:
        await asyncio.to_thread(again.stop)


async def test_a_server_whose_owner_died_is_adopted_by_the_api(home: Path) -> None:
    """The owner is killed (no clean stop): its server runs on. A passer-by (a CLI command)
    attaches and leaves it be; the API adopts it and stops it when it stops."""
    started = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-c",
        "import os, sys\n"
        "from pathlib import Path\n"
        "from app.store.embedded_postgres import EmbeddedPostgres\n"
        "EmbeddedPostgres(Path(sys.argv[1])).ensure_running()\n"
        "os.kill(os.getpid(), 9)\n", str(home / "data")], check=False)
    assert started.returncode == -9
    passer_by = EmbeddedPostgres(home / "data")
    attached = await asyncio.to_thread(passer_by.ensure_running)
    assert not attached.owned
    await asyncio.to_thread(passer_by.stop)
    assert await _vector_distance(attached.url()) == 1.0  # still running

    api = EmbeddedPostgres(home / "data")
    adopted = await asyncio.to_thread(functools.partial(api.ensure_running, adopt=True))
    assert (adopted.port, adopted.owned) == (attached.port, True)
    guest = EmbeddedPostgres(home / "data")  # the adopter lives: no one else adopts
    assert not (await asyncio.to_thread(functools.partial(guest.ensure_running,
                                                          adopt=True))).owned
    await asyncio.to_thread(api.stop)
    assert not (api.pgdata / "postmaster.pid").exists()


async def test_private_data_folder_under_root_moves_the_cluster(home: Path) -> None:
    private = home / "private"
    private.mkdir(mode=0o700)
    embedded = EmbeddedPostgres(private / "data")
    if embedded.as_root:
        # The server's user cannot enter a 0700 folder: the cluster lives under /var/lib.
        assert not embedded.pgdata.is_relative_to(private)
    else:
        assert embedded.pgdata == private / "data" / "postgres"
