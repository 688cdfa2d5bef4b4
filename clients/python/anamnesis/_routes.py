"""Every endpoint of the server's API, declared once, and the :class:`Call` that requests one.

A :class:`Route` is a method and a path template exactly as the server's OpenAPI schema names
them, so a test can hold the set of routes here against the server's (every endpoint has a
method in this SDK). Builders turn a route into a :class:`Call` with its path filled in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Generic, TypeVar
from urllib.parse import quote

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request to send and how to read its answer.

    ``parse`` gets the decoded JSON body. With ``check=False`` error statuses are not raised and
    ``parse`` gets ``None`` for them (used by the health probe). ``holds`` marks a request the
    server may hold open while it waits for a job, so its read timeout is extended.
    ``content`` is a raw request body (NDJSON for an import) sent with ``content_type``.
    """

    method: str
    path: str
    parse: Callable[[Any], T]
    params: dict[str, str | int] | None = None
    json: dict[str, Any] | None = None
    check: bool = True
    holds: bool = False
    content: bytes | IO[bytes] | None = None
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """An endpoint: HTTP method and path template (``{name}`` marks a path parameter)."""

    method: str
    template: str

    def path(self, **values: str) -> str:
        """The template filled with ``values``, each percent-encoded.

        Raises ``ValueError`` for an empty or non-string value: an empty id would silently
        address another endpoint (``DELETE /v1/memories/`` is not ``DELETE /v1/memories``).
        """
        for name, value in values.items():
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string")
        return self.template.format(**{name: quote(value, safe="")
                                       for name, value in values.items()})

    def call(self, parse: Callable[[Any], T], **values: str) -> Call[T]:
        """A :class:`Call` of this route with no query or body (see :meth:`path`)."""
        return Call(self.method, self.path(**values), parse)


ADD = Route("POST", "/v1/memories")
LIST_MEMORIES = Route("GET", "/v1/memories")
DELETE_SCOPE = Route("DELETE", "/v1/memories")
SEARCH = Route("POST", "/v1/memories/search")
GET_MEMORY = Route("GET", "/v1/memories/{memory_id}")
UPDATE_MEMORY = Route("PATCH", "/v1/memories/{memory_id}")
DELETE_MEMORY = Route("DELETE", "/v1/memories/{memory_id}")
HISTORY = Route("GET", "/v1/memories/{memory_id}/history")
DELETE_USER = Route("DELETE", "/v1/users/{user_id}")
LIST_SCOPES = Route("GET", "/v1/scopes")

LIST_JOBS = Route("GET", "/v1/jobs")
GET_JOB = Route("GET", "/v1/jobs/{job_id}")
RETRY_JOB = Route("POST", "/v1/jobs/{job_id}/retry")

GET_PROJECT = Route("GET", "/v1/project")
UPDATE_PROJECT = Route("PATCH", "/v1/project")
LIST_KEYS = Route("GET", "/v1/keys")
CREATE_KEY = Route("POST", "/v1/keys")
REVOKE_KEY = Route("DELETE", "/v1/keys/{prefix}")

LIST_ENTITIES = Route("GET", "/v1/entities")
GET_ENTITY = Route("GET", "/v1/entities/{entity_id}")
DELETE_ENTITY = Route("DELETE", "/v1/entities/{entity_id}")
NEIGHBORS = Route("GET", "/v1/entities/{entity_id}/neighbors")
UNMERGE = Route("POST", "/v1/entities/{entity_id}/unmerge")
LIST_RELATIONS = Route("GET", "/v1/relations")

EXPORT = Route("GET", "/v1/export")
IMPORT = Route("POST", "/v1/import")

HEALTH = Route("GET", "/health")
