"""Type aliases for arguments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, NotRequired, TypeAlias, TypedDict

from anamnesis._models import Message


class MessageParam(TypedDict):
    """A message given as a plain dict; same fields as :class:`~anamnesis.Message`."""

    role: Literal["user", "assistant", "system"]
    content: str
    name: NotRequired[str]


MessagesInput: TypeAlias = str | Sequence[Message | MessageParam | Mapping[str, Any]]
"""What ``add`` accepts: a bare string (one user message) or a sequence of messages."""

Metadata: TypeAlias = Mapping[str, Any]
Filters: TypeAlias = Mapping[str, Any]

Ranking = Literal["hybrid", "dense", "lexical"]
"""How ``search`` orders hits: meaning and words fused, cosine similarity, or BM25."""
