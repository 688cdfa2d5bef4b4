"""What makes two memory texts "the same": Unicode NFC and collapsed whitespace."""

from __future__ import annotations

import hashlib
import unicodedata


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def content_hash(text: str) -> str:
    """SHA-256 of the normalised text; backs the (project, scope, hash) unique index."""
    return hashlib.sha256(normalise(text).encode()).hexdigest()
