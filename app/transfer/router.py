"""Streaming export and import of the caller's project as NDJSON (``app.transfer``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.deps import AdminDep, DatabaseDep, EmbedderDep, GraphDep
from app.transfer import export, import_
from app.transfer.import_ import Target
from app.transfer.schemas import ImportReceipt

router = APIRouter(prefix="/v1", tags=["transfer"])

_NDJSON: dict[str, Any] = {export.MEDIA_TYPE: {"schema": {"type": "string"}}}


@router.get("/export", response_class=StreamingResponse,
            responses={200: {"content": _NDJSON, "description": "One JSON object per line."}})
async def export_project(database: DatabaseDep, graph: GraphDep,
                         caller: AdminDep) -> StreamingResponse:
    """The key's whole project, streamed: a header line, then episodes, memories with their
    vectors, sources, history, the graph step's log, entities, merges and relations."""
    return StreamingResponse(
        export.stream(database, graph, caller.project_id), media_type=export.MEDIA_TYPE,
        headers={"Content-Disposition": 'attachment; filename="anamnesis-export.ndjson"'})


@router.post("/import", response_model=ImportReceipt,
             openapi_extra={"requestBody": {"required": True, "content": _NDJSON}})
async def import_project(request: Request, database: DatabaseDep, graph: GraphDep,
                         embedder: EmbedderDep, caller: AdminDep) -> ImportReceipt:
    """An export (of any project) into the key's project. Every line is checked first: a
    bad line → 422 naming every bad line, and nothing is written. Records keep their ids, so
    sending the file again (after an interruption) adds only what is missing."""
    return await import_.import_body(request.stream(),
                                     Target(database, graph, embedder, caller.project_id))
