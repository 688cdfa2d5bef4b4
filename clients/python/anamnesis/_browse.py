"""Listing what a project holds besides memories: its consolidation jobs, newest first, and
the user, agent and run ids its memories are stored under. Requests built once; the methods
:class:`~anamnesis.Anamnesis` (``BrowseMethods``) and :class:`~anamnesis.AsyncAnamnesis`
(``AsyncBrowseMethods``) send them with, following the cursors page by page."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Literal, Protocol, TypeVar

from anamnesis import _routes as routes
from anamnesis._base import _page_size
from anamnesis._models import Job, Results, ScopeCount
from anamnesis._routes import Call

T = TypeVar("T")
JobStatus = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED"]
ScopeKind = Literal["user", "agent", "run"]


def list_jobs_call(status: JobStatus | None, page_size: int) -> Call[Results[Job]]:
    params: dict[str, str | int] = {"limit": _page_size(page_size)}
    if status is not None:
        params["status"] = status
    return Call("GET", routes.LIST_JOBS.path(), Results[Job].model_validate, params=params)


def list_scopes_call(kind: ScopeKind, prefix: str | None,
                     page_size: int) -> Call[Results[ScopeCount]]:
    params: dict[str, str | int] = {"kind": kind, "limit": _page_size(page_size)}
    if prefix is not None:
        params["prefix"] = prefix
    return Call("GET", routes.LIST_SCOPES.path(), Results[ScopeCount].model_validate,
                params=params)


class _Pages(Protocol):
    def _pages(self, call: Call[Results[T]]) -> Iterator[T]: ...


class _AsyncPages(Protocol):
    def _pages(self, call: Call[Results[T]]) -> AsyncIterator[T]: ...


class BrowseMethods:
    """The listing methods of the blocking client."""

    def jobs(self: _Pages, *, status: JobStatus | None = None,
             page_size: int = 50) -> Iterator[Job]:
        """Iterate over the project's consolidation jobs, newest first (only those in
        ``status`` when given), ``page_size`` at a time. Arguments are checked now; pages are
        requested as the iterator is consumed."""
        return self._pages(list_jobs_call(status, page_size))

    def scopes(self: _Pages, kind: ScopeKind, *, prefix: str | None = None,
               page_size: int = 100) -> Iterator[ScopeCount]:
        """Iterate over the user (``kind="user"``), agent or run ids the project's memories
        are stored under, in id order, each with its number of memories in every state;
        ``prefix`` keeps the ids starting with it."""
        return self._pages(list_scopes_call(kind, prefix, page_size))


class AsyncBrowseMethods:
    """The listing methods of the async client (contracts: :class:`BrowseMethods`)."""

    def jobs(self: _AsyncPages, *, status: JobStatus | None = None,
             page_size: int = 50) -> AsyncIterator[Job]:
        """See :meth:`Anamnesis.jobs`; iterate with ``async for``."""
        return self._pages(list_jobs_call(status, page_size))

    def scopes(self: _AsyncPages, kind: ScopeKind, *, prefix: str | None = None,
               page_size: int = 100) -> AsyncIterator[ScopeCount]:
        """See :meth:`Anamnesis.scopes`; iterate with ``async for``."""
        return self._pages(list_scopes_call(kind, prefix, page_size))
