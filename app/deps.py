"""The API's resources and the annotated dependency aliases the routers use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, fields
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Caller, Gatekeeper
from app.config import Settings
from app.embeddings import Embedder
from app.index.memory_index import MemoryIndex
from app.jobs.queue import JobQueue
from app.resources import Resources
from app.retrieve.query_embeddings import QueryEmbeddings
from app.store.db import Database
from app.store.graph.base import GraphStore
from app.throttle import Throttle


@dataclass(kw_only=True)
class ApiResources(Resources):
    """What the lifespan opens (``open_resources``) and what only the API needs on top."""

    gate: Gatekeeper
    queue: JobQueue
    queries: QueryEmbeddings

    @classmethod
    def of(cls, core: Resources, *, gate: Gatekeeper, queue: JobQueue,
           queries: QueryEmbeddings) -> ApiResources:
        opened = {field.name: getattr(core, field.name) for field in fields(core)}
        return cls(**opened, gate=gate, queue=queue, queries=queries)


def get_resources(request: Request) -> ApiResources:
    resources: ApiResources = request.app.state.resources
    return resources


ResourcesDep = Annotated[ApiResources, Depends(get_resources)]


async def get_session(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    """The request's transaction: committed when the route returns, before the response."""
    async with resources.database.session_scope() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def get_embedder(resources: ResourcesDep) -> Embedder:
    return resources.embedder


EmbedderDep = Annotated[Embedder, Depends(get_embedder)]


def get_queue(resources: ResourcesDep) -> JobQueue:
    return resources.queue


QueueDep = Annotated[JobQueue, Depends(get_queue)]


def get_graph(resources: ResourcesDep) -> GraphStore:
    return resources.graph


GraphDep = Annotated[GraphStore, Depends(get_graph)]



def get_throttle(resources: ResourcesDep) -> Throttle:
    return resources.gate.throttle


ThrottleDep = Annotated[Throttle, Depends(get_throttle)]


def get_index(resources: ResourcesDep) -> MemoryIndex | None:
    return resources.search_index.current


IndexDep = Annotated[MemoryIndex | None, Depends(get_index)]


def get_queries(resources: ResourcesDep) -> QueryEmbeddings:
    return resources.queries


QueriesDep = Annotated[QueryEmbeddings, Depends(get_queries)]


def get_database(resources: ResourcesDep) -> Database:
    return resources.database


DatabaseDep = Annotated[Database, Depends(get_database)]


def get_settings(resources: ResourcesDep) -> Settings:
    return resources.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_request_id(request: Request) -> str:
    request_id: str = request.state.request_id
    return request_id


RequestIdDep = Annotated[str, Depends(get_request_id)]


def get_key(request: Request) -> Caller:
    """The caller the HTTP edge admitted (``Gatekeeper``, before the body was read)."""
    caller: Caller = request.state.caller
    return caller


def get_caller(caller: Annotated[Caller, Depends(get_key)]) -> Caller:
    """A key that may read."""
    caller.require("read")
    return caller


def get_writer(caller: Annotated[Caller, Depends(get_key)]) -> Caller:
    caller.require("write")
    return caller


def get_admin(caller: Annotated[Caller, Depends(get_key)]) -> Caller:
    caller.require("admin")
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
WriterDep = Annotated[Caller, Depends(get_writer)]
AdminDep = Annotated[Caller, Depends(get_admin)]
