"""Python client for the Anamnesis memory service.

>>> from anamnesis import Anamnesis
>>> with Anamnesis(api_key="...") as client:
...     job = client.add("I prefer window seats", user_id="alice")
...     job = client.wait_for_job(job.id)
...     hits = client.search("seating preference", user_id="alice")
"""

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
    ServiceUnavailableError,
    ValidationError,
)
from anamnesis._models import (
    AddedMemory,
    AddResult,
    HistoryEvent,
    Job,
    JobError,
    JobResult,
    JobUsage,
    Memory,
    MemoryDetail,
    MemorySource,
    Message,
    Project,
    SearchHit,
    SourceMessage,
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
    "HistoryEvent",
    "IdempotencyKeyReusedError",
    "InternalServerError",
    "InvalidFilterError",
    "Job",
    "JobError",
    "JobResult",
    "JobTimeoutError",
    "JobUsage",
    "Memory",
    "MemoryDetail",
    "MemorySource",
    "Message",
    "MessageParam",
    "NotFoundError",
    "PayloadTooLargeError",
    "Project",
    "SearchHit",
    "ServiceUnavailableError",
    "SourceMessage",
    "ValidationError",
    "__version__",
]
