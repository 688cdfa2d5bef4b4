"""Python client for the Anamnesis memory service.

>>> from anamnesis import Anamnesis
>>> with Anamnesis(api_key="...") as client:
...     client.add("I prefer window seats", user_id="alice", infer=False)
...     hits = client.search("seating preference", user_id="alice")
"""

from anamnesis._base import __version__
from anamnesis._client import Anamnesis, AsyncAnamnesis
from anamnesis._exceptions import (
    AnamnesisConnectionError,
    AnamnesisError,
    AnamnesisTimeoutError,
    APIError,
    AuthenticationError,
    ConflictError,
    ConsolidationNotConfiguredError,
    IdempotencyKeyReusedError,
    InternalServerError,
    InvalidFilterError,
    NotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    ValidationError,
)
from anamnesis._models import AddedMemory, AddResult, HistoryEvent, Memory, Message, SearchHit
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
    "ConsolidationNotConfiguredError",
    "HistoryEvent",
    "IdempotencyKeyReusedError",
    "InternalServerError",
    "InvalidFilterError",
    "Memory",
    "Message",
    "MessageParam",
    "NotFoundError",
    "PayloadTooLargeError",
    "SearchHit",
    "ServiceUnavailableError",
    "ValidationError",
    "__version__",
]
