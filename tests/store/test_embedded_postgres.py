"""The bundled server: first start initialises and owns it, a second opener attaches."""

import asyncio
from pathlib import Path

import asyncpg

from app.store.embedded_postgres import EmbeddedPostgres
from tests.conftest import plain_dsn


async def _vector_distance(url: str) -> float:
    connection = await asyncpg.connect(plain_dsn(url))
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return float(await connection.fetchval("SELECT '[1,0]'::vector <=> '[0,1]'::vector"))
    finally:
        await connection.close()


async def test_start_attach_stop_restart(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    owner = EmbeddedPostgres(tmp_path / "data")
    first = await asyncio.to_thread(owner.ensure_running)
    try:
        assert first.owned
        assert await _vector_distance(first.url()) == 1.0

        guest = EmbeddedPostgres(tmp_path / "data")
        second = await asyncio.to_thread(guest.ensure_running)
        assert (second.port, second.owned) == (first.port, False)
        await asyncio.to_thread(guest.stop)  # a guest never stops the owner's server
        assert await _vector_distance(second.url()) == 1.0
    finally:
        await asyncio.to_thread(owner.stop)

    assert not (owner.pgdata / "postmaster.pid").exists()
    again = EmbeddedPostgres(tmp_path / "data")
    third = await asyncio.to_thread(again.ensure_running)
    try:
        assert third.owned
        assert third.password == first.password
        assert await _vector_distance(third.url()) == 1.0
    finally:
        await asyncio.to_thread(again.stop)
