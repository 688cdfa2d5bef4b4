"""One data directory for every test of the bundled model, so its 1.1 GB file is assembled
once per session however many tests start a server on it."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def llm_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<dir>/models/`` receives the assembled model on the first start; later starts reuse it."""
    return tmp_path_factory.mktemp("llm") / "data"
