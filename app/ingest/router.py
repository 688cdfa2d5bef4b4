from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse

from app.deps import CallerDep, EmbedderDep, SessionDep
from app.ingest import service
from app.ingest.schemas import AddResponse, MemoryCreate
from app.validation import OptionalStorableStr

router = APIRouter(prefix="/v1/memories", tags=["memories"])


@router.post("", status_code=201, response_model=AddResponse,
             responses={201: {"model": AddResponse}})
async def add_memories(
    body: MemoryCreate, session: SessionDep, embedder: EmbedderDep, caller: CallerDep,
    idempotency_key: Annotated[OptionalStorableStr, Header(max_length=255)] = None,
) -> Any:
    """Store messages. ``infer=false`` keeps each non-empty message as one memory (201)."""
    status, payload = await service.add(session, embedder, caller, body, idempotency_key)
    return JSONResponse(payload, status_code=status)
