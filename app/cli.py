"""``anamnesis`` command line: serve, worker, migrate, graph rebuild, reindex, keys, export,
import, mcp."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from app.auth import SCOPES
from app.bundled import offline_model_environment
from app.config import Settings
from app.logs import configure_logging

WORKER_APP = "workers.celery_app"
logger = logging.getLogger(__name__)


def serve(settings: Settings, host: str | None, port: int | None) -> int:
    import uvicorn

    from app.main import create_app

    host = host or settings.api.host
    port = settings.api.port if port is None else port
    display_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    where = "console: /ui, API docs: /docs, MCP: /mcp"
    for line in (f"Anamnesis on http://{display_host}:{port}  ({where})",
                 "Create an API key:  anamnesis keys create --project <name>"):
        if settings.log_format == "json":  # a log pipeline reads every line as JSON
            logger.info("%s", line)
        else:
            print(line, flush=True)
    # log_config=None: uvicorn's lines go through the service's handler (its format, the
    # request ids); its own access log is off, it writes the raw path and query string
    # (the app's ``app.access`` lines name the route template instead).
    uvicorn.run(create_app(settings), host=host, port=port, log_level=settings.log_level.lower(),
                proxy_headers=True, log_config=None, access_log=False)
    return 0


def worker(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.redis.url:
        print("anamnesis worker needs a broker: set ANAMNESIS_REDIS__URL=redis://host:6379/0 "
              "(without it, `anamnesis serve` consolidates in-process)", file=sys.stderr)
        return 2
    # Imported once here, before the prefork pool forks: each pool process then starts in
    # about a second instead of re-importing torch (12-25 s on a busy 2-core machine).
    offline_model_environment()
    import sentence_transformers  # noqa: F401
    from celery.bin.celery import celery
    from click.exceptions import Exit

    from app.jobs.celery import QUEUES

    # The worker's Celery app is named, not imported: ``workers`` imports ``app``, never the
    # reverse (``celery -A workers.celery_app worker`` is the same command).
    argv = ["-A", WORKER_APP, "worker", "--loglevel", settings.log_level.upper(),
            "--queues", ",".join(QUEUES), "--pool", args.pool,
            "--concurrency", str(args.concurrency)]
    if settings.log_format == "json":
        argv.insert(2, "--quiet")  # no plain-text banner among the JSON lines
    if args.beat:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", "--schedule", str(settings.data_dir / "celerybeat-schedule")]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    try:
        celery.main(args=argv, prog_name="anamnesis worker", standalone_mode=False)
    except Exit as exit_:
        return int(exit_.exit_code)
    return 0


def migrate_command(settings: Settings, revision: str, down: bool) -> int:
    from app.embeddings import model_identity
    from app.store.db import downgrade, migrate, resolve_url

    url, embedded = resolve_url(settings)
    try:
        if down:
            downgrade(url, settings.embedding.dimension, revision)
        else:
            migrate(url, settings.embedding.dimension, revision,
                    model_identity(settings.embedding.model))
    finally:
        if embedded is not None:
            embedded.stop()
    print(f"database {'downgraded' if down else 'migrated'} to {revision}")
    return 0


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from app.auth import generate_key
    from app.store.db import open_database
    from app.store.repositories import keys as repository

    database = await open_database(settings, migrate_schema=True)
    try:
        async with database.session_scope() as session:
            if args.keys_command == "create":
                project = await repository.get_or_create_project(session, args.project)
                new = generate_key()
                await repository.add_key(session, project_id=project.id, prefix=new.prefix,
                                         key_hash=new.key_hash, name=args.name,
                                         scopes=args.scopes)
                print(new.plaintext)
                print(f"key {new.prefix} for project {project.name!r}; it is shown only once",
                      file=sys.stderr)
            elif args.keys_command == "list":
                for key, project_name in await repository.list_keys(session, args.project):
                    state = "revoked" if key.revoked_at else "active"
                    used = key.last_used_at.isoformat() if key.last_used_at else "never"
                    print(f"{key.prefix}\t{project_name}\t{key.name or '-'}\t{state}\t"
                          f"{','.join(key.scopes)}\t"
                          f"created {key.created_at.isoformat()}\tlast used {used}")
            elif args.keys_command == "revoke":
                if not await repository.revoke_key(session, args.prefix):
                    print(f"no active key with prefix {args.prefix!r}", file=sys.stderr)
                    return 1
                print(f"revoked {args.prefix}")
    finally:
        await database.aclose()
    return 0


async def _graph(settings: Settings, args: argparse.Namespace) -> int:
    from app.consolidate.replay import rebuild_graph
    from app.resources import open_resources
    from app.store.repositories import keys as repository

    async with open_resources(settings, migrate=True) as resources:
        async with resources.database.session_scope() as session:
            project = await repository.project_named(session, args.project)
        if project is None:
            print(f"no project named {args.project!r}", file=sys.stderr)
            return 1
        counts = await rebuild_graph(resources.database, resources.graph, resources.embedder,
                                     project.id)
    print(f"graph of {args.project!r} rebuilt: " + ", ".join(f"{v} {k.replace('_', ' ')}"
                                                           for k, v in counts.items()))
    return 0


async def _reindex(settings: Settings) -> int:
    """The search index made again from Postgres and saved as the snapshot API processes
    start from (running ones keep theirs until they restart)."""
    from app.resources import open_resources

    if settings.search.index != "memory":
        print("search.index is 'postgres': there is no in-process index to rebuild",
              file=sys.stderr)
        return 1
    began = time.perf_counter()
    async with open_resources(settings, migrate=True, index="rebuild",
                              follow=False) as resources:
        index = resources.index
        assert index is not None
    print(f"search index rebuilt: {index.live} memories, {index.vectors.kind} index, change "
          f"log position {index.position}, {time.perf_counter() - began:.1f}s; snapshot in "
          f"{index.snapshot_dir}")
    return 0


async def _switch_model(settings: Settings, model: str) -> int:
    """Every stored vector made again by ``model``, while the service runs on the old ones
    (``app.index.reembed``); running processes follow."""
    from app.embeddings import model_identity
    from app.index.reembed import reembed
    from app.resources import load_embedder
    from app.store.db import open_database
    from app.store.graph import open_graph_store

    target = settings.model_copy(update={
        "embedding": settings.embedding.model_copy(update={"model": model})})
    embedder = await load_embedder(target, None)
    database = await open_database(target, migrate_schema=True)
    try:
        graph = await open_graph_store(target, database)
        try:
            receipt = await reembed(database, graph, embedder, model,
                                    hnsw_m=settings.search.hnsw_m,
                                    hnsw_ef_construction=settings.search.hnsw_ef_construction)
        finally:
            await graph.aclose()
    finally:
        await database.aclose()
        await embedder.aclose()
    if receipt is None:
        print(f"the stored vectors are already {model_identity(model)}'s")
        return 0
    print(f"switched from {receipt.from_model} to {receipt.to_model}: {receipt.memories} "
          f"memories ({receipt.embedded} vectors made), {receipt.entities} entities, "
          f"{receipt.seconds:.1f}s. Running processes have moved to it; start new ones with "
          f"ANAMNESIS_EMBEDDING__MODEL={model}")
    return 0


async def _transfer(settings: Settings, args: argparse.Namespace) -> int:
    """A project to or from an NDJSON file (``app.transfer.console``)."""
    from app.resources import open_resources
    from app.transfer import console

    async with open_resources(settings, migrate=True, follow=False) as resources:
        if args.command == "export":
            return await console.export_project(resources, args.project, args.output)
        return await console.import_file(resources, args.file, args.project, batch=args.batch,
                                         vector_index=args.vector_index,
                                         index_memory=args.index_memory, as_json=args.json)


def mcp_command(settings: Settings, url: str | None, api_key: str | None) -> int:
    """The MCP server on stdio, calling the running server (``app.mcp.stdio``)."""
    from app.mcp.stdio import serve_stdio

    key = api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    if not key:
        print("anamnesis mcp needs an API key: --api-key or ANAMNESIS_API_KEY (create one with "
              "`anamnesis keys create --project <name>`)", file=sys.stderr)
        return 2
    asyncio.run(serve_stdio(url or settings.server_url(), key))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anamnesis", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="run the API server")
    serve_parser.add_argument("--host")
    serve_parser.add_argument("--port", type=int)

    worker_parser = commands.add_parser(
        "worker", help="run a Celery consolidation worker (needs ANAMNESIS_REDIS__URL)")
    worker_parser.add_argument("--concurrency", type=int, default=1,
                               help="jobs at once (processes with the prefork pool)")
    worker_parser.add_argument("--pool", choices=["prefork", "solo"],
                               default="prefork")
    worker_parser.add_argument("--no-beat", dest="beat", action="store_false",
                               help="do not run the periodic job sweep in this worker")
    worker_parser.add_argument("--hostname", help="Celery node name (unique per worker)")

    migrate_parser = commands.add_parser("migrate", help="upgrade (or downgrade) the schema")
    migrate_parser.add_argument("revision", nargs="?", default="head")
    migrate_parser.add_argument("--down", action="store_true",
                                help="downgrade to REVISION instead (e.g. base)")

    graph_parser = commands.add_parser("graph", help="the graph projection")
    graph_commands = graph_parser.add_subparsers(dest="graph_command", required=True)
    rebuild = graph_commands.add_parser(
        "rebuild", help="rebuild a project's graph from Postgres into the configured store")
    rebuild.add_argument("--project", required=True, help="project name")

    reindex = commands.add_parser(
        "reindex", help="rebuild the search index snapshot from Postgres, or with --model "
        "switch every stored vector to another embedding model while the service runs")
    reindex.add_argument("--model", help="all-MiniLM-L6-v2, all-mpnet-base-v2 or a "
                         "sentence-transformers folder")

    exporting = commands.add_parser(
        "export", help="write a project (memories with vectors, history, episodes, graph) as "
        "NDJSON")
    exporting.add_argument("--project", required=True, help="project name")
    exporting.add_argument("--output", "-o", type=Path,
                           help="file to write (gzip if it ends in .gz); default: stdout")
    importing = commands.add_parser(
        "import", help="read an export into a project: every line checked first; run it "
        "again to resume")
    importing.add_argument("file", type=Path, help="an export (gzip if it ends in .gz)")
    importing.add_argument("--project", required=True, help="project name (created if new)")
    importing.add_argument("--batch", type=int, default=1000, help="lines per transaction")
    importing.add_argument("--vector-index", choices=["auto", "keep", "rebuild"],
                           default="auto", help="set the pgvector index aside while writing "
                           "and build it again at the end (auto: for 10,000 memories or more, "
                           "when the table is not much larger)")
    importing.add_argument("--index-memory", default="auto",
                           help="maintenance_work_mem of that build, e.g. 2GB (auto: enough "
                           "for the graph of every stored vector, at most a quarter of this "
                           "machine's memory)")
    importing.add_argument("--json", action="store_true",
                           help="print the receipt as JSON on stdout")

    mcp = commands.add_parser(
        "mcp", help="serve the memory tools over MCP on stdio, calling a running server (the "
        "API serves the same tools over HTTP at /mcp)")
    mcp.add_argument("--url", help="the server (default: ANAMNESIS_URL, else this "
                     "configuration's api.host and api.port)")
    mcp.add_argument("--api-key", help="the key its calls are made with (default: "
                     "ANAMNESIS_API_KEY)")

    keys_parser = commands.add_parser("keys", help="manage API keys")
    keys_commands = keys_parser.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser("create", help="create a key (printed once, on stdout)")
    create.add_argument("--project", required=True, help="project name (created if new)")
    create.add_argument("--name", help="a label for the key")
    create.add_argument("--scopes", type=_scopes, default=list(SCOPES),
                        help="what the key may do, comma-separated: read, write, admin "
                        "(default: all three)")
    listing = keys_commands.add_parser("list", help="list keys (prefixes only)")
    listing.add_argument("--project")
    revoke = keys_commands.add_parser("revoke", help="revoke a key by its prefix")
    revoke.add_argument("prefix")
    return parser


def _scopes(value: str) -> list[str]:
    scopes = sorted({part.strip() for part in value.split(",") if part.strip()})
    if not scopes or set(scopes) - set(SCOPES):
        raise argparse.ArgumentTypeError(f"scopes are some of {', '.join(SCOPES)}")
    return scopes


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings)
    if args.command == "serve":
        return serve(settings, args.host, args.port)
    if args.command == "worker":
        return worker(settings, args)
    if args.command == "migrate":
        return migrate_command(settings, args.revision, args.down)
    if args.command == "graph":
        return asyncio.run(_graph(settings, args))
    if args.command in ("export", "import"):
        return asyncio.run(_transfer(settings, args))
    if args.command == "mcp":
        return mcp_command(settings, args.url, args.api_key)
    if args.command == "reindex":
        if args.model:
            return asyncio.run(_switch_model(settings, args.model))
        return asyncio.run(_reindex(settings))
    return asyncio.run(_keys(settings, args))


if __name__ == "__main__":
    sys.exit(main())
