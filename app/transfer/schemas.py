"""API shapes of an import's answer."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RecordCounts(BaseModel):
    inserted: int = Field(default=0, description="Written by this import (graph records: "
                          "written or rewritten by id, as the graph store keeps them).")
    present: int = Field(default=0, description="Already in the project with this id: "
                         "imported before (an import run again or resumed).")
    skipped: int = Field(default=0, description="Left out: see `skipped`.")


class SkippedLine(BaseModel):
    line: int
    record: str
    reason: str


class ImportReceipt(BaseModel):
    """What an import did, per record type of the file."""

    lines: int = Field(description="Lines read, the header and blank lines included.")
    records: dict[str, RecordCounts] = Field(
        description="Per record type: episode, memory, source, event, extraction, entity, "
        "merge, relation.")
    vectors_given: int = Field(description="Memories stored with the vector the file gave "
                               "(of the database's embedding model).")
    vectors_embedded: int = Field(description="Memories (and entities) embedded here: no "
                                  "vector given, or one of another model.")
    unresolved_supersessions: int = Field(
        description="Superseded memories whose replacement is neither in the file nor in the "
        "project: kept superseded (invalid_at) without a superseded_by.")
    skipped: list[SkippedLine] = Field(description="The first 100 lines left out, and why.")
    seconds: float
