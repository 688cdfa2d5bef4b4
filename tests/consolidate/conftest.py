from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.consolidate.scripted_brain import Brain
from tests.scripted_llm import ScriptedLLM


@pytest.fixture
def brain(scripted_llm: ScriptedLLM) -> Iterator[Brain]:
    """The scripted LLM answering consolidation prompts by the test's rules."""
    thinking = Brain()
    scripted_llm.responder = thinking
    return thinking
