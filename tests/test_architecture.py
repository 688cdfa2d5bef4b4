"""The layout holds: imports run one way, down the layers of the data flow, no package imports
itself back through another, and no module grows past 400 lines. Read from the source (the
AST, function-level imports included), so it holds for code no test runs."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 400

# Top to bottom. A module may import its own layer or any lower one, never a higher one.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("workers", ("workers",)),
    ("edge", ("app.main", "app.cli", "app.deps", "app.http", "app.metrics", "app.mcp",
              "app.ui", "*.router", "app.openapi", "app.openapi_dump")),
    ("services", ("app.ingest", "app.memories", "app.graph", "app.projects", "app.retrieve",
                  "app.jobs", "app.auth", "app.throttle", "app.transfer", "app.compat")),
    ("consolidate", ("app.consolidate",)),
    ("resources", ("app.resources",)),
    ("index", ("app.index",)),
    ("store and models", ("app.store", "app.embeddings", "app.embeddings_onnx",
                          "app.embeddings_torch", "app.llm", "app.llm_output", "app.local_llm",
                          "app.bundled")),
    ("vocabulary", ("app.domain", "app.config", "app.errors", "app.limits", "app.validation",
                    "app.backoff", "app.logs")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def imports(path: Path) -> Iterator[tuple[str, int]]:
    """Every module of ours ``path`` imports, with its line."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from app.x import y`` may name a module y: count it as app.x.y.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in ("app", "workers"):
                yield name, node.lineno


def layer(module: str) -> int | None:
    if module.endswith(".router"):
        return 1
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), rank)
    return None if best is None else best[1]


def package(module: str) -> str:
    """The unit cycles are checked between: ``app.<package>``; a router is the HTTP edge's,
    not its package's (it imports ``deps``, which the package's services never do)."""
    if module.endswith(".router"):
        return module
    parts = module.split(".")
    return ".".join(parts[:2])


def existing(name: str) -> bool:
    base = ROOT.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def test_every_module_has_a_layer() -> None:
    unplaced = [module_name(path) for path in sources("app", "workers")
                if layer(module_name(path)) is None and module_name(path) != "app"]
    assert unplaced == []


def test_imports_never_run_upward() -> None:
    upward = []
    for path in sources("app", "workers"):
        importer = module_name(path)
        mine = layer(importer)
        for imported, line in imports(path):
            theirs = layer(imported)
            if existing(imported) and mine is not None and theirs is not None and theirs < mine:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({LAYERS[mine][0]}) imports "
                              f"{imported} ({LAYERS[theirs][0]})")
    assert upward == []


def test_routers_never_touch_repositories() -> None:
    found = [f"{path.relative_to(ROOT)}:{line} imports {name}"
             for path in sources("app") if path.name == "router.py"
             for name, line in imports(path) if name.startswith("app.store.repositories")]
    assert found == []


def test_app_never_imports_workers_and_the_sdk_never_imports_app() -> None:
    found = [f"{path.relative_to(ROOT)}:{line} imports {name}"
             for path in sources("app") for name, line in imports(path)
             if name.startswith("workers")]
    found += [f"{path.relative_to(ROOT)}:{line} imports {name}"
              for path in sources("clients/python") for name, line in imports(path)
              if name.split(".")[0] in ("app", "workers")]
    assert found == []


def test_no_package_cycle() -> None:
    graph: dict[str, set[str]] = {}
    for path in sources("app"):
        importer = package(module_name(path))
        for imported, _ in imports(path):
            if existing(imported) and package(imported) != importer:
                graph.setdefault(importer, set()).add(package(imported))

    def cycle_from(start: str) -> list[str] | None:
        stack: list[tuple[str, list[str]]] = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    return [*trail, start]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    cycles = [" → ".join(found) for node in sorted(graph) if (found := cycle_from(node))]
    assert cycles == []


@pytest.mark.parametrize("path", list(sources("app", "workers")),
                         ids=lambda path: str(path.relative_to(ROOT)))
def test_no_module_is_over_400_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_the_rules_catch_an_upward_import(tmp_path: Path) -> None:
    """The checks read what they should: a store module importing retrieve is upward."""
    assert layer("app.store.repositories.memories") == 6
    assert layer("app.retrieve.filters") == 2
    assert layer("app.memories.router") == 1
    assert layer("app.index.vectors") == 5
    probe = tmp_path / "probe.py"
    probe.write_text("from app.retrieve.filters import parse_filters\n"
                     "def f():\n    import app.jobs.runner\n")
    assert [name for name, _ in imports(probe)] == [
        "app.retrieve.filters", "app.retrieve.filters.parse_filters", "app.jobs.runner"]
