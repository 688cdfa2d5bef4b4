from __future__ import annotations

from fastapi import APIRouter

from app.deps import CallerDep, SessionDep
from app.projects import service
from app.projects.schemas import ProjectRead, ProjectUpdate

router = APIRouter(prefix="/v1/project", tags=["project"])


@router.get("", response_model=ProjectRead)
async def get_project(session: SessionDep, caller: CallerDep) -> ProjectRead:
    """The project the API key belongs to."""
    return ProjectRead.of(await service.get(session, caller))


@router.patch("", response_model=ProjectRead)
async def update_project(body: ProjectUpdate, session: SessionDep,
                         caller: CallerDep) -> ProjectRead:
    """Set (or clear) the extraction instructions used for every episode of the project."""
    return ProjectRead.of(await service.update(session, caller, body))
