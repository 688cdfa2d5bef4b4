"""The graph endpoints (entities, relations, neighbours, unmerge): their requests, built once,
and the methods :class:`~anamnesis.Anamnesis` (``GraphMethods``) and
:class:`~anamnesis.AsyncAnamnesis` (``AsyncGraphMethods``) send them with."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import datetime
from typing import Protocol, TypeVar

from anamnesis import _routes as routes
from anamnesis._base import _iso, _page_size, _scope
from anamnesis._models import Entity, EntityDetail, Neighbor, Relation, Results, Unmerged
from anamnesis._routes import Call

T = TypeVar("T")


def list_entities_call(user_id: str | None, agent_id: str | None, run_id: str | None,
                       name: str | None, page_size: int) -> Call[Results[Entity]]:
    params: dict[str, str | int] = {**_scope(user_id, agent_id, run_id),
                                    "limit": _page_size(page_size)}
    if name is not None:
        params["name"] = name
    return Call("GET", routes.LIST_ENTITIES.path(), Results[Entity].model_validate,
                params=params)


def get_entity_call(entity_id: str) -> Call[EntityDetail]:
    return routes.GET_ENTITY.call(EntityDetail.model_validate, entity_id=entity_id)


def neighbors_call(entity_id: str, depth: int, as_of: datetime | None) -> Call[list[Neighbor]]:
    params: dict[str, str | int] = {"depth": depth}
    if as_of is not None:
        params["as_of"] = _iso(as_of, "as_of")
    parse = Results[Neighbor].model_validate
    return Call("GET", routes.NEIGHBORS.path(entity_id=entity_id), lambda b: parse(b).results,
                params=params)


def delete_entity_call(entity_id: str) -> Call[None]:
    return routes.DELETE_ENTITY.call(lambda _body: None, entity_id=entity_id)


def unmerge_call(entity_id: str, alias: str) -> Call[Unmerged]:
    return Call("POST", routes.UNMERGE.path(entity_id=entity_id), Unmerged.model_validate,
                json={"alias": alias})


def relations_call(user_id: str | None, agent_id: str | None, run_id: str | None,
                   source: str | None, target: str | None, type: str | None,
                   as_of: datetime | None, include_invalid: bool,
                   limit: int) -> Call[list[Relation]]:
    params: dict[str, str | int] = {**_scope(user_id, agent_id, run_id), "limit": limit}
    given = {"source": source, "target": target, "type": type}
    params.update({name: value for name, value in given.items() if value is not None})
    if as_of is not None:
        params["as_of"] = _iso(as_of, "as_of")
    if include_invalid:
        params["include_invalid"] = "true"
    parse = Results[Relation].model_validate
    return Call("GET", routes.LIST_RELATIONS.path(), lambda b: parse(b).results, params=params)


class _Sends(Protocol):
    """What the graph methods need of the blocking client they are mixed into."""

    def _send(self, call: Call[T]) -> T: ...

    def _pages(self, call: Call[Results[T]]) -> Iterator[T]: ...


class _SendsAsync(Protocol):
    """What the graph methods need of the async client they are mixed into."""

    def _send(self, call: Call[T]) -> Awaitable[T]: ...

    def _pages(self, call: Call[Results[T]]) -> AsyncIterator[T]: ...


class GraphMethods:
    """The graph methods of the blocking client."""

    def entities(
        self: _Sends, *, user_id: str | None = None, agent_id: str | None = None,
        run_id: str | None = None, name: str | None = None, page_size: int = 100,
    ) -> Iterator[Entity]:
        """Iterate over the scope's entities, oldest first, ``page_size`` at a time; ``name``
        keeps those whose name contains it (case-insensitive). Arguments are checked now;
        pages are requested as the iterator is consumed."""
        return self._pages(list_entities_call(user_id, agent_id, run_id, name, page_size))

    def get_entity(self: _Sends, entity_id: str) -> EntityDetail:
        """The entity with its current relations, the memories that mention it and the names
        merged into it; :class:`NotFoundError` if absent or another project's."""
        return self._send(get_entity_call(entity_id))

    def neighbors(
        self: _Sends, entity_id: str, *, depth: int = 1, as_of: datetime | None = None
    ) -> list[Neighbor]:
        """Entities at most ``depth`` (1 to 3) relations away, nearest first; ``as_of``
        follows the relations that held then instead of the current ones."""
        return self._send(neighbors_call(entity_id, depth, as_of))

    def delete_entity(self: _Sends, entity_id: str) -> None:
        """Remove the entity and its relations from the graph (the memories stay);
        :class:`NotFoundError` if absent."""
        self._send(delete_entity_call(entity_id))

    def unmerge_entity(self: _Sends, entity_id: str, alias: str) -> Unmerged:
        """Undo the merge of ``alias`` (one of the entity's ``aliases``) into the entity: the
        alias becomes an entity of its own, with what named it, and is not merged back later.
        :class:`NotFoundError` if the entity has no such alias."""
        return self._send(unmerge_call(entity_id, alias))

    def relations(
        self: _Sends, *, user_id: str | None = None, agent_id: str | None = None,
        run_id: str | None = None, source: str | None = None, target: str | None = None,
        type: str | None = None, as_of: datetime | None = None,
        include_invalid: bool = False, limit: int = 100,
    ) -> list[Relation]:
        """Up to ``limit`` relations of the scope: current ones, or those that held at
        ``as_of``, or every one ever stated with ``include_invalid=True`` (the server refuses
        both with :class:`ValidationError`); ``source``/``target`` are entity ids, ``type`` a
        relation type such as ``"lives_in"``."""
        return self._send(relations_call(user_id, agent_id, run_id, source, target, type,
                                         as_of, include_invalid, limit))


class AsyncGraphMethods:
    """The graph methods of the async client (contracts: :class:`GraphMethods`)."""

    def entities(
        self: _SendsAsync, *, user_id: str | None = None, agent_id: str | None = None,
        run_id: str | None = None, name: str | None = None, page_size: int = 100,
    ) -> AsyncIterator[Entity]:
        """See :meth:`Anamnesis.entities`; iterate with ``async for``."""
        return self._pages(list_entities_call(user_id, agent_id, run_id, name, page_size))

    async def get_entity(self: _SendsAsync, entity_id: str) -> EntityDetail:
        """See :meth:`Anamnesis.get_entity`."""
        return await self._send(get_entity_call(entity_id))

    async def neighbors(
        self: _SendsAsync, entity_id: str, *, depth: int = 1, as_of: datetime | None = None
    ) -> list[Neighbor]:
        """See :meth:`Anamnesis.neighbors`."""
        return await self._send(neighbors_call(entity_id, depth, as_of))

    async def delete_entity(self: _SendsAsync, entity_id: str) -> None:
        """See :meth:`Anamnesis.delete_entity`."""
        await self._send(delete_entity_call(entity_id))

    async def unmerge_entity(self: _SendsAsync, entity_id: str, alias: str) -> Unmerged:
        """See :meth:`Anamnesis.unmerge_entity`."""
        return await self._send(unmerge_call(entity_id, alias))

    async def relations(
        self: _SendsAsync, *, user_id: str | None = None, agent_id: str | None = None,
        run_id: str | None = None, source: str | None = None, target: str | None = None,
        type: str | None = None, as_of: datetime | None = None,
        include_invalid: bool = False, limit: int = 100,
    ) -> list[Relation]:
        """See :meth:`Anamnesis.relations`."""
        return await self._send(relations_call(user_id, agent_id, run_id, source, target, type,
                                               as_of, include_invalid, limit))
