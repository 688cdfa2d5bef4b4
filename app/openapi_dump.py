"""``python -m app.openapi_dump PATH``: the API's OpenAPI schema as JSON, written to PATH.

The TypeScript SDK's types are generated from it (``clients/typescript``). The schema is the
app's own, built without starting it (no database, no model)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from app.config import Settings
from app.main import create_app


def schema_json() -> str:
    """The schema, formatted the one way the checked-in copy is (stable key order, indented,
    trailing newline), so a stale copy shows as a plain text difference."""
    return json.dumps(create_app(Settings()).openapi(), indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.openapi_dump",
                                     description="Write the API's OpenAPI schema to a file.")
    parser.add_argument("path", type=Path, help="the JSON file to write")
    path: Path = parser.parse_args(argv).path
    path.write_text(schema_json(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
