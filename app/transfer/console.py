"""``anamnesis export`` and ``anamnesis import``: a project to and from an NDJSON file (gzip
when the name ends in ``.gz``), straight against the database, with progress bars on stderr
(counts, rate, time left).

An import reads its file twice: once to check every line (a bad line stops it before
anything is written), once to write. A large one sets the pgvector index aside while it
writes and builds it again at the end (``--vector-index``): inserting a million vectors into
an HNSW graph one by one takes far longer than building the graph over them once.
"""

from __future__ import annotations

import gzip
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Literal

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from app.resources import Resources
from app.store.repositories import keys as projects
from app.store.repositories import transfer as repository
from app.transfer import export
from app.transfer.import_ import Loader, Target, load, space_of
from app.transfer.schemas import ImportReceipt
from app.transfer.survey import Survey

VectorIndex = Literal["auto", "keep", "rebuild"]
# ``auto`` sets the index aside for at least this many new memories, when the table holds
# at most ``REBUILD_RATIO`` times as many (building over all rows costs about 1/7 of
# inserting each into the graph: bench.transfer).
REBUILD_MIN_MEMORIES = 10_000
REBUILD_RATIO = 4

PLURAL = {"episode": "episodes", "memory": "memories", "source": "sources",
          "event": "events", "extraction": "extractions", "entity": "entities",
          "merge": "merges", "relation": "relations"}

stderr = Console(stderr=True, soft_wrap=True)  # a summary line stays one line


class RateColumn(ProgressColumn):
    """Items per second so far."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f}/s" if speed else "-/s", style="progress.data.speed")


def _bar(*columns: ProgressColumn | str) -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), *columns,
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=stderr, transient=False)


@contextmanager
def _opened(path: Path, mode: Literal["rb", "wb"]) -> Iterator[IO[bytes]]:
    raw = path.open(mode)
    try:
        if path.suffix == ".gz":
            with gzip.GzipFile(fileobj=raw, mode=mode) as zipped:
                yield zipped  # type: ignore[misc]
        else:
            yield raw
    finally:
        raw.close()


async def _project_id(resources: Resources, name: str, *, create: bool) -> uuid.UUID | None:
    async with resources.database.session_scope() as session:
        if create:
            return (await projects.get_or_create_project(session, name)).id
        found = await projects.project_named(session, name)
    return None if found is None else found.id


async def export_project(resources: Resources, name: str, output: Path | None) -> int:
    project_id = await _project_id(resources, name, create=False)
    if project_id is None:
        stderr.print(f"no project named {name!r}")
        return 1
    async with resources.database.session_scope() as session:
        total = sum((await repository.counts(session, project_id)).values())
    written: dict[str, int] = {}
    with _bar(MofNCompleteColumn(), RateColumn()) as bar, \
            _opened(output, "wb") if output else _stdout() as out:
        total += 1  # the header
        task = bar.add_task(f"exporting {name}", total=total)
        async for kind, data in export.records(resources.database, resources.graph, project_id):
            out.write(data)
            written[kind] = written.get(kind, 0) + 1
            if kind in ("entity", "relation"):  # the graph store's, not counted ahead
                total += 1
                bar.update(task, total=total)
            bar.advance(task)
    listed = ", ".join(f"{count} {PLURAL[kind]}" for kind, count in written.items()
                       if kind != "header")
    stderr.print(f"exported {name!r}: {listed or 'nothing'}"
                 + (f" to {output}" if output else ""))
    return 0


@contextmanager
def _stdout() -> Iterator[IO[bytes]]:
    yield sys.stdout.buffer
    sys.stdout.buffer.flush()


def _survey(path: Path, found: Survey) -> Survey:
    size = path.stat().st_size
    with path.open("rb") as raw, _bar(DownloadColumn(), TransferSpeedColumn()) as bar:
        task = bar.add_task("checking every line", total=size)
        lines = gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else raw
        for number, line in enumerate(lines, 1):
            found.feed(number, line)
            if number % 2000 == 0:
                bar.update(task, completed=raw.tell())
        bar.update(task, completed=size)
    found.finish()
    return found


async def _lines(path: Path) -> AsyncIterator[bytes]:
    with _opened(path, "rb") as file:
        for line in file:
            yield line


async def _set_aside(resources: Resources, mode: VectorIndex, memories: int) -> bool:
    if mode == "keep" or memories == 0:
        return False
    if mode == "auto":
        async with resources.database.session_scope() as session:
            stored = await repository.memory_count(session)
        if memories < REBUILD_MIN_MEMORIES or stored > REBUILD_RATIO * memories:
            return False
    stderr.print(f"setting the pgvector index aside for {memories:,} memories (searches on "
                 "the Postgres path scan until it is built again at the end)")
    await repository.drop_vector_index(resources.database.engine)
    return True


def index_memory(rows: int, dimension: int, ceiling: int | None = None) -> str:
    """``maintenance_work_mem`` for building the HNSW graph over ``rows`` vectors in memory
    (pgvector writes it out far more slowly once it outgrows that): per row the vector,
    its level-0 neighbours (2·m of them, 16 bytes each) and the element's bookkeeping, a
    quarter more for the upper levels and slack; at least 64 MB, at most ``ceiling``
    bytes (a quarter of this machine's memory; the embedded Postgres shares it)."""
    if ceiling is None:
        ceiling = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    per_row = 4 * dimension + 2 * repository.VECTOR_INDEX_M * 16 + 160
    wanted = int(rows * per_row * 1.25)
    return f"{max(64 << 20, min(wanted, ceiling)) >> 20}MB"


async def _restore_vector_index(resources: Resources, memory: str, dimension: int) -> None:
    """Builds the pgvector index when it is not there (set aside by this import, or by one
    that was interrupted); ``memory`` ``auto``: sized by ``index_memory``."""
    async with resources.database.session_scope() as session:
        state = await repository.vector_index_state(session)
        if memory == "auto" and state != "valid":
            memory = index_memory(await repository.memory_count(session, exact=True),
                                  dimension)
    if state == "valid":
        return
    began = time.perf_counter()
    with stderr.status("building the pgvector index (interrupt to leave it to the next "
                       "import)"):
        await repository.build_vector_index(resources.database.engine, memory)
    stderr.print(f"pgvector index built in {time.perf_counter() - began:.1f}s")


async def import_file(resources: Resources, path: Path, name: str, *, batch: int,
                      vector_index: VectorIndex, index_memory: str,
                      as_json: bool) -> int:
    """Checks every line of ``path``, then writes it into the project ``name`` (made if
    new). 0 when done; 1 when the file has bad lines (nothing written)."""
    began = time.perf_counter()
    found = _survey(path, Survey(await space_of(resources.database)))
    checked = time.perf_counter()
    if not found.ok:
        for problem in found.problems:
            stderr.print(str(problem), markup=False, highlight=False)
        stderr.print(f"{found.bad} bad line(s): nothing was imported")
        return 1
    project_id = await _project_id(resources, name, create=True)
    assert project_id is not None
    target = Target(resources.database, resources.graph, resources.embedder, project_id)
    records = sum(found.records.values())
    aside = await _set_aside(resources, vector_index, found.records["memory"])
    try:
        with _bar(MofNCompleteColumn(), RateColumn()) as bar:
            task = bar.add_task(f"importing into {name}", total=records)
            done = 0

            async def advanced(line: int, loader: Loader) -> None:
                nonlocal done
                counts = loader.counts
                done = sum(c.inserted + c.present + c.skipped for c in counts.values())
                bar.update(task, completed=done, description=(
                    f"importing into {name}: {counts['memory'].inserted:,} memories new, "
                    f"{counts['memory'].present:,} there"))

            receipt = await load(target, found, _lines(path), batch=batch, on_batch=advanced)
        written = time.perf_counter()
    finally:
        if aside or vector_index != "keep":
            await _restore_vector_index(resources, index_memory, found.space.dimension)
    if as_json:  # the receipt, with the time of each pass
        print(json.dumps({**receipt.model_dump(mode="json"), "vector_index_set_aside": aside,
                          "check_s": round(checked - began, 3),
                          "write_s": round(written - checked, 3),
                          "index_s": round(time.perf_counter() - written, 3)}))
    _report(name, receipt, found)
    return 0


def _report(name: str, receipt: ImportReceipt, found: Survey) -> None:
    parts = [f"{kind} {c.inserted:,} new, {c.present:,} there, {c.skipped:,} skipped"
             for kind, c in receipt.records.items() if found.records[kind]]
    stderr.print(f"imported {receipt.lines:,} lines into {name!r} in {receipt.seconds:.1f}s: "
                 + "; ".join(parts))
    stderr.print(f"vectors: {receipt.vectors_given:,} as given, {receipt.vectors_embedded:,} "
                 f"embedded here ({found.space.model})")
    for skipped in receipt.skipped[:20]:
        stderr.print(f"line {skipped.line} ({skipped.record}) left out: {skipped.reason}",
                     markup=False, highlight=False)
    if receipt.unresolved_supersessions:
        stderr.print(f"{receipt.unresolved_supersessions} superseded memories name a "
                     "replacement that is not in the file or the project")
