"""Request and response models.

Response models accept (and keep, as extra attributes) fields this SDK version does not know,
so a newer server does not break an older client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


class Message(BaseModel):
    """One conversation turn sent to ``add``."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant", "system"]
    content: str
    name: str | None = None


class AddedMemory(_Response):
    """One outcome of ``add``: ``event`` is ``"ADD"`` (stored) or ``"NOOP"`` (already stored)."""

    id: str
    memory: str
    event: str


class AddResult(_Response):
    """Answer to ``add``.

    A synchronous add (``infer=False``) fills ``results``; an accepted background job
    (``infer=True`` on servers that consolidate asynchronously) fills ``job_id`` and ``status``.
    """

    results: list[AddedMemory] = Field(default_factory=list)
    job_id: str | None = None
    status: str | None = None


class Memory(_Response):
    """A stored memory, scoped by whichever of ``user_id``/``agent_id``/``run_id`` were set."""

    id: str
    memory: str
    user_id: str | None = None
    agent_id: str | None = None
    run_id: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None = None


class SearchHit(Memory):
    """A memory returned by ``search`` with its relevance ``score`` (higher is closer)."""

    score: float


class HistoryEvent(_Response):
    """One change to a memory. ``event`` is ``"ADD"``, ``"UPDATE"`` or ``"DELETE"``."""

    id: str
    memory_id: str
    event: str
    old_memory: str | None = None
    new_memory: str | None = None
    old_metadata: dict[str, Any] | None = None
    new_metadata: dict[str, Any] | None = None
    request_id: str | None = None
    created_at: datetime


class Results(_Response, Generic[T]):
    """Envelope ``{"results": [...], "next_cursor"?: ...}`` shared by list-shaped answers."""

    results: list[T]
    next_cursor: str | None = None


class Deleted(_Response):
    """Answer to the bulk delete: how many memories were deleted."""

    deleted: int


class Health(_Response):
    status: str
