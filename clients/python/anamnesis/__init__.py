"""Python client for the Anamnesis memory service.

>>> from anamnesis import Anamnesis
>>> with Anamnesis(api_key="...") as client:
...     job = client.add("I prefer window seats", user_id="alice")
...     job = client.wait_for_job(job.id)
...     hits = client.search("seating preference", user_id="alice")
"""

from anamnesis._admin import KeyScope
from anamnesis._async_client import AsyncAnamnesis
from anamnesis._base import __version__
from anamnesis._client import Anamnesis
from anamnesis._exceptions import (
    AnamnesisConnectionError,
    AnamnesisError,
    AnamnesisTimeoutError,
    APIError,
    AuthenticationError,
    ConflictError,
    IdempotencyKeyReusedError,
    InternalServerError,
    InvalidFilterError,
    JobTimeoutError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServiceUnavailableError,
    ValidationError,
)
from anamnesis._models import (
    AddedMemory,
    AddResult,
    Entity,
    EntityAlias,
    EntityDetail,
    HistoryEvent,
    ImportReceipt,
    Job,
    JobError,
    JobResult,
    JobUsage,
    Key,
    KeyCreated,
    Memory,
    MemoryDetail,
    MemorySource,
    Message,
    Neighbor,
    Project,
    RecordCounts,
    Relation,
    SearchHit,
    SearchHits,
    SkippedLine,
    SourceMessage,
    Unmerged,
)
from anamnesis._types import MessageParam

__all__ = [
    "APIError",
    "AddResult",
    "AddedMemory",
    "Anamnesis",
    "AnamnesisConnectionError",
    "AnamnesisError",
    "AnamnesisTimeoutError",
    "AsyncAnamnesis",
    "AuthenticationError",
    "ConflictError",
    "Entity",
    "EntityAlias",
    "EntityDetail",
    "HistoryEvent",
    "IdempotencyKeyReusedError",
    "ImportReceipt",
    "InternalServerError",
    "InvalidFilterError",
    "Job",
    "JobError",
    "JobResult",
    "JobTimeoutError",
    "JobUsage",
    "Key",
    "KeyCreated",
    "KeyScope",
    "Memory",
    "MemoryDetail",
    "MemorySource",
    "Message",
    "MessageParam",
    "Neighbor",
    "NotFoundError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "Project",
    "RecordCounts",
    "Relation",
    "SearchHit",
    "SearchHits",
    "ServiceUnavailableError",
    "SkippedLine",
    "SourceMessage",
    "Unmerged",
    "ValidationError",
    "__version__",
]
