"""Fixtures shared by the ranking tests that compare servers searching the same data."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.conftest import KeyFactory


@pytest.fixture
async def clients(apps: dict[str, FastAPI], api_key_factory: KeyFactory
                  ) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """One client per server of the module's ``apps``, all with one new project's key."""
    key = await api_key_factory()
    opened = {name: httpx.AsyncClient(transport=httpx.ASGITransport(app=application),
                                      base_url="http://test",
                                      headers={"Authorization": f"Bearer {key}"})
              for name, application in apps.items()}
    try:
        yield opened
    finally:
        for client in opened.values():
            await client.aclose()
