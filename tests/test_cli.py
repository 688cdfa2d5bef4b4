"""``anamnesis keys``, ``migrate`` and ``reindex`` against the test database."""

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from app.cli import main
from app.config import SearchSettings, Settings
from app.domain import CURRENT, ProjectScope
from app.index.memory_index import MemoryIndex
from app.store.db import Database
from app.store.models import Memory


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str, clean: None) -> Iterator[None]:
    monkeypatch.setenv("ANAMNESIS_DB__URL", database_url)
    # ``main`` sets up the process's logging as it does from a shell: a handler on the
    # stderr of the moment (the test's capture, closed after it). Undone after each test.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


async def _run(*argv: str) -> int:
    # The CLI runs its own event loop, as it does from a shell.
    return await asyncio.to_thread(main, list(argv))


async def test_keys_create_list_revoke(cli_env: None, app: FastAPI,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert await _run("keys", "create", "--project", "acme", "--name", "ci") == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("anm_")
    assert "\n" not in key
    prefix = key.split("_")[1]

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test") as http:
        headers = {"Authorization": f"Bearer {key}"}
        assert (await http.get("/v1/memories", headers=headers)).status_code == 200

        assert await _run("keys", "list") == 0
        listing = capsys.readouterr().out
        assert prefix in listing
        assert "acme" in listing
        assert key not in listing

        assert await _run("keys", "revoke", prefix) == 0
        # Another process revoked it: this one trusts it at most api.key_cache_s longer.
        await asyncio.sleep(Settings().api.key_cache_s)
        assert (await http.get("/v1/memories", headers=headers)).status_code == 401
        assert await _run("keys", "revoke", prefix) == 1


async def test_keys_create_with_scopes(cli_env: None, app: FastAPI,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert await _run("keys", "create", "--project", "acme", "--scopes", "read") == 0
    headers = {"Authorization": f"Bearer {capsys.readouterr().out.strip()}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://test", headers=headers) as http:
        assert (await http.get("/v1/memories")).status_code == 200
        added = await http.post("/v1/memories", json={
            "messages": [{"role": "user", "content": "hi"}], "user_id": "u1", "infer": False})
        assert added.status_code == 403
    assert await _run("keys", "list", "--project", "acme") == 0
    assert "\tread\t" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        await _run("keys", "create", "--project", "acme", "--scopes", "read,root")


async def test_migrate_is_idempotent(cli_env: None,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert await _run("migrate") == 0
    assert "migrated to head" in capsys.readouterr().out


async def test_reindex_writes_the_snapshot_api_processes_start_from(
        cli_env: None, client: httpx.AsyncClient, database: Database, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    added = await client.post("/v1/memories", json={"user_id": "u1", "infer": False, "messages": [
        {"role": "user", "content": "The boat is moored at pier seven."}]})
    assert added.status_code == 201
    monkeypatch.setenv("ANAMNESIS_DATA_DIR", str(tmp_path))
    assert await _run("reindex") == 0
    assert "search index rebuilt" in capsys.readouterr().out
    [folder] = (tmp_path / "index").iterdir()
    meta = json.loads((folder / "meta.json").read_text())
    async with database.session_scope() as session:
        live = await session.scalar(sa.select(sa.func.count()).select_from(Memory).where(
            Memory.deleted_at.is_(None)))
    assert meta["live"] == live
    assert meta["position"] > 0

    loaded = MemoryIndex(database, meta["dimension"], meta["model"], SearchSettings(), folder)
    await loaded.start(poll=False)
    try:
        project_id = uuid.UUID((await client.get("/v1/project")).json()["id"])
        found = loaded.lexical_search(project_id, "pier seven",
                                      loaded.allowed(ProjectScope(project_id), CURRENT), 5)
        assert [m for m, _ in found] == [uuid.UUID(added.json()["results"][0]["id"])]
    finally:
        await loaded.aclose(save=False)
