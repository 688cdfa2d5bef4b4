from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.scripted_llm import ScriptedLLM


@pytest.fixture
def scripted_llm() -> Iterator[ScriptedLLM]:
    """A real OpenAI-compatible server on a free local port, replies scripted per test."""
    with ScriptedLLM() as server:
        yield server
