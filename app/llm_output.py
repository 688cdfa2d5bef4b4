"""What an LLM must answer, and reading what it did: the strict JSON schema sent as
``response_format`` for a Pydantic model, and the parsing and validation of a reply."""

from __future__ import annotations

import copy
import re
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

OutputT = TypeVar("OutputT", bound=BaseModel)


def response_format(output: type[BaseModel]) -> dict[str, Any]:
    """The ``response_format`` asking for JSON that validates as ``output``."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": re.sub(r"[^A-Za-z0-9_-]", "_", output.__name__)[:64],
            "schema": strict_schema(output.model_json_schema()),
            "strict": True,
        },
    }


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` as OpenAI's strict mode accepts it: every object closed and every property
    required, ``None`` defaults dropped, no siblings beside a ``$ref``. Only ever stricter than
    the Pydantic model, so whatever satisfies it still validates."""
    return _closed(copy.deepcopy(schema), schema, frozenset())


def _closed(node: dict[str, Any], root: dict[str, Any], inlining: frozenset[str]) -> dict[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str) and len(node) > 1:
        siblings = {key: value for key, value in node.items() if key != "$ref"}
        if ref in inlining:  # a recursive model: keep the bare reference
            return {"$ref": ref}
        node = {**_resolve(root, ref), **siblings}
        inlining = inlining | {ref}
    for key in ("$defs", "properties"):
        if isinstance(node.get(key), dict):
            node[key] = {name: _closed(sub, root, inlining) for name, sub in node[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _closed(node[key], root, inlining)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        if isinstance(node.get(key), list):
            node[key] = [_closed(sub, root, inlining) for sub in node[key]]
    if node.get("type") == "object" or "properties" in node:
        node.setdefault("additionalProperties", False)
        node["required"] = list(node.get("properties", {}))
    if "default" in node and node["default"] is None:
        del node["default"]
    return node


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    target: Any = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return copy.deepcopy(dict(target))


_FENCED = re.compile(r"```[A-Za-z]*\s*(.*?)\s*```", re.DOTALL)


def parse_output(content: str, output: type[OutputT]) -> OutputT:
    """Validate a reply as ``output``, tolerating a fenced code block or prose around the one
    JSON object. Raises ``pydantic.ValidationError`` (invalid JSON included)."""
    text = content.strip()
    fenced = _FENCED.search(text)
    if fenced:
        text = fenced.group(1)
    elif not text.startswith(("{", "[")):
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            text = text[start:end + 1]
    return output.model_validate_json(text)


def describe_errors(error: ValidationError, limit: int = 5) -> str:
    """A validation error short enough to quote back to the model."""
    problems = []
    for item in error.errors(include_url=False)[:limit]:
        where = ".".join(str(part) for part in item["loc"]) or "reply"
        problems.append(f"{where}: {item['msg']}")
    if error.error_count() > limit:
        problems.append(f"and {error.error_count() - limit} more")
    return "; ".join(problems)
