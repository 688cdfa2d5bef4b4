"""What makes two memory texts "the same": Unicode NFC and collapsed whitespace."""

from __future__ import annotations

import hashlib
import unicodedata


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).split())


def content_hash(text: str) -> str:
    """SHA-256 of the normalised text; backs the (project, scope, hash) unique index."""
    return hashlib.sha256(normalise(text).encode()).hexdigest()


def embedding_text(text: str, metadata: dict[str, object] | None) -> str:
    """What a memory's vector is made from: its text, said by its speaker when one is known
    (a message's ``name``): "Caroline: I went to the support group" is found by a question
    about Caroline, the bare text is not (LoCoMo dev: dense recall@10 0.25 → 0.53)."""
    name = (metadata or {}).get("name")
    return f"{name}: {text}" if isinstance(name, str) and name.strip() else text
