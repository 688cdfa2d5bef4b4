"""``anamnesis keys`` and ``anamnesis migrate`` against the test database."""

import asyncio

import httpx
import pytest
from fastapi import FastAPI

from app.cli import main


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, database_url: str, clean: None) -> None:
    monkeypatch.setenv("ANAMNESIS_DB__URL", database_url)


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
        assert (await http.get("/v1/memories", headers=headers)).status_code == 401
        assert await _run("keys", "revoke", prefix) == 1


async def test_migrate_is_idempotent(cli_env: None,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert await _run("migrate") == 0
    assert "migrated to head" in capsys.readouterr().out
