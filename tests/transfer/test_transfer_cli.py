"""``anamnesis export`` and ``anamnesis import`` against the test database: a gzip file, the
receipt as JSON, the pgvector index set aside and built again, a bad file refused."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from app.store.db import Database
from app.store.repositories import transfer as repository
from app.transfer.console import index_memory
from tests.test_cli import _run, cli_env  # noqa: F401 - the fixture, for these tests too
from tests.transfer.test_transfer import every_memory, messages_of


async def test_export_then_import_from_the_command_line(
        cli_env: None, client: httpx.AsyncClient, database: Database, tmp_path: Path,  # noqa: F811
        capsys: pytest.CaptureFixture[str]) -> None:
    await messages_of(client, adds=2, size=5)
    name = (await client.get("/v1/project")).json()["name"]
    exported = tmp_path / "project.ndjson.gz"
    assert await _run("export", "--project", name, "--output", str(exported)) == 0
    assert f"exported {name!r}: 2 episodes, 10 memories" in capsys.readouterr().err
    lines = gzip.decompress(exported.read_bytes()).splitlines()
    assert json.loads(lines[0])["record"] == "header"
    assert len(lines) == 1 + 2 + 10 + 10 + 10  # header, episodes, memories, sources, events

    assert await _run("import", str(exported), "--project", "copy", "--json",
                      "--vector-index", "rebuild", "--batch", "4") == 0
    out, err = capsys.readouterr()
    receipt = json.loads(out)
    assert receipt["records"]["memory"] == {"inserted": 10, "present": 0, "skipped": 0}
    assert receipt["records"]["event"] == {"inserted": 10, "present": 0, "skipped": 0}
    assert "setting the pgvector index aside" in err
    assert "pgvector index built" in err
    assert "importing into copy" in err
    async with database.session_scope() as session:
        assert await repository.vector_index_state(session) == "valid"
        copies = await session.scalar(sa.text(
            "SELECT count(*) FROM memories m JOIN projects p ON p.id = m.project_id "
            "WHERE p.name = 'copy'"))
    assert copies == 10
    assert len(await every_memory(client)) == 10  # the original untouched

    assert await _run("import", str(exported), "--project", "copy", "--json") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["records"]["memory"] == {"inserted": 0, "present": 10, "skipped": 0}

    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(lines[0] + b"\n" + b'{"record": "memory", "id": "nope"}\n')
    assert await _run("import", str(bad), "--project", "copy") == 1
    err = capsys.readouterr().err
    assert "line 2:" in err
    assert "nothing was imported" in err


def test_the_index_build_gets_memory_for_its_whole_graph() -> None:
    # 1M MiniLM vectors: 1,536 bytes each, 32 neighbours of 16 bytes, bookkeeping, +25%.
    assert index_memory(1_000_000, 384, ceiling=8 << 30) == "2632MB"
    assert index_memory(100, 384, ceiling=8 << 30) == "64MB"
    assert index_memory(10**8, 384, ceiling=4 << 30) == "4096MB"
