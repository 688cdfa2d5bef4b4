"""API keys: how they look, how they are stored (SHA-256 only), how a request proves one.

A key is ``anm_<prefix>_<secret>``: the prefix (shown in listings, used to revoke) and a
256-bit secret. Only the hash of the whole key is stored; the key is printed once.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from app.errors import Forbidden, Unauthorized
from app.store.db import Database
from app.store.repositories import keys as key_repository
from app.throttle import Throttle

KEY_PREFIX = "anm"
# What a key may do. read: list, get, search; write: add, change and erase memories, retry
# jobs, change the graph; admin: the project's extraction instructions, and its keys.
SCOPES = ("read", "write", "admin")


@dataclass(frozen=True)
class Caller:
    """Who is calling, in which request: every query is filtered by ``project_id``."""

    project_id: uuid.UUID
    key_id: uuid.UUID
    request_id: str
    scopes: frozenset[str] = frozenset(SCOPES)

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            held = ", ".join(sorted(self.scopes))
            raise Forbidden(f"this API key may not {scope} (its scopes: {held})")


@dataclass(frozen=True)
class NewKey:
    plaintext: str
    prefix: str
    key_hash: bytes


def generate_key() -> NewKey:
    prefix = secrets.token_hex(4)
    plaintext = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(plaintext, prefix, hash_key(plaintext))


def hash_key(plaintext: str) -> bytes:
    return hashlib.sha256(plaintext.encode()).digest()


def key_from_headers(authorization: str | None, x_api_key: str | None) -> str:
    """The key from ``Authorization: Bearer|Token <key>`` or ``X-API-Key: <key>``."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() in ("bearer", "token") and value.strip():
            return value.strip()
        raise Unauthorized("Authorization header must be 'Bearer <api key>' or 'Token <api key>'")
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    raise Unauthorized("missing API key: send 'Authorization: Bearer <api key>'")


class KeyTouches:
    """Throttles ``last_used_at`` writes to one per key per interval, per process."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[uuid.UUID, float] = {}

    def due(self, key_id: uuid.UUID, *, peek: bool = False) -> bool:
        """Whether the key's write is due; unless ``peek``, it counts as written now."""
        now = time.monotonic()
        last = self._last.get(key_id)
        if last is not None and now - last < self.interval_s:
            return False
        if not peek:
            self._last[key_id] = now
        return True


@dataclass(frozen=True)
class _Checked:
    caller: Caller
    prefix: str
    until: float


class KeyCache:
    """Keys found active in the database, by hash, for ``ttl_s`` seconds: most requests then
    learn their caller without a transaction of their own. A key revoked through this
    process is forgotten at once; revoked elsewhere (another API process, the CLI), it
    stops working here within ``ttl_s``. Unknown keys are never kept: each is looked up."""

    def __init__(self, ttl_s: float, max_keys: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._keys: dict[bytes, _Checked] = {}

    def get(self, key_hash: bytes, request_id: str) -> Caller | None:
        checked = self._keys.get(key_hash)
        if checked is None:
            return None
        if checked.until <= time.monotonic():
            del self._keys[key_hash]
            return None
        return replace(checked.caller, request_id=request_id)

    def put(self, key_hash: bytes, caller: Caller, prefix: str) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._keys) >= self.max_keys:  # the oldest entry goes (dicts keep order)
            del self._keys[next(iter(self._keys))]
        self._keys[key_hash] = _Checked(caller, prefix, time.monotonic() + self.ttl_s)

    def forget(self, prefix: str) -> None:
        for key_hash in [h for h, checked in self._keys.items() if checked.prefix == prefix]:
            del self._keys[key_hash]


class ProjectSlots:
    """At most ``limit`` requests of one project are served at once by this process; the
    others wait their turn holding nothing (no database connection, no core), so one busy
    project cannot take every connection of the pool, or every core, from the others."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots: dict[uuid.UUID, asyncio.Semaphore] = {}
        self._users: dict[uuid.UUID, int] = {}

    @asynccontextmanager
    async def held(self, project_id: uuid.UUID) -> AsyncIterator[None]:
        semaphore = self._slots.setdefault(project_id, asyncio.Semaphore(self.limit))
        self._users[project_id] = self._users.get(project_id, 0) + 1
        try:
            async with semaphore:
                yield
        finally:
            self._users[project_id] -= 1
            if not self._users[project_id]:  # no one holds or waits: forget the project
                del self._users[project_id], self._slots[project_id]

    def busy(self, project_id: uuid.UUID) -> int:
        """The project's requests being served or waiting."""
        return self._users.get(project_id, 0)


class Gatekeeper:
    """Checks a request's key in a short transaction of its own (so the request's body is
    not read for a caller who may not send one, and no connection is held across it), then
    counts the request against the key's and the project's rates."""

    def __init__(self, database: Database, touches: KeyTouches, throttle: Throttle,
                 slots: ProjectSlots, keys: KeyCache | None = None) -> None:
        self.database = database
        self.touches = touches
        self.throttle = throttle
        self.slots = slots
        self.keys = keys or KeyCache(0)

    async def admit(self, plaintext: str, request_id: str) -> Caller:
        key_hash = hash_key(plaintext)
        caller = self.keys.get(key_hash, request_id)
        if caller is None or self.touches.due(caller.key_id, peek=True):
            async with self.database.session_scope() as session:
                key = await key_repository.find_active_key(session, key_hash)
                if key is None:
                    raise Unauthorized("invalid or revoked API key")
                if self.touches.due(key.id):
                    await key_repository.touch_key(session, key.id)
            caller = Caller(project_id=key.project_id, key_id=key.id, request_id=request_id,
                            scopes=frozenset(key.scopes))
            self.keys.put(key_hash, caller, key.prefix)
        await self.throttle.admit(caller.project_id, caller.key_id)
        return caller
