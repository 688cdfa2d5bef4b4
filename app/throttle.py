"""Rate limits and quotas, all off unless configured (``ANAMNESIS_LIMITS__*``).

* Requests per key and per project in any ``window_s`` seconds: a moving window kept by the
  ``limits`` library — in Redis when one is configured, so every API replica counts the
  same requests, else in the process. Checked at the HTTP edge right after the key, before
  the body is read.
* LLM tokens per day, per project: what the project's consolidation jobs of the last 24 hours
  spent (the jobs table records each call's usage), checked before a new ``infer=true``
  episode is accepted.

A refusal is a 429 with ``Retry-After``: when the window frees a request, or when the oldest
job still counting leaves the day.
"""

from __future__ import annotations

import math
import time
import uuid
from datetime import UTC, datetime, timedelta

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import LimitSettings
from app.errors import RateLimited
from app.store.repositories import jobs

DAY = timedelta(days=1)


class Throttle:
    def __init__(self, settings: LimitSettings, redis_url: str | None) -> None:
        """Builds the limiter; it connects on first use."""
        self.settings = settings
        self._rules: list[tuple[str, RateLimitItem]] = [
            (name, RateLimitItemPerSecond(amount, settings.window_s))
            for name, amount in (("key", settings.key_requests),
                                 ("project", settings.project_requests))
            if amount is not None]
        # Whether every replica counts together (the counts live in Redis).
        self.shared = redis_url is not None and bool(self._rules)
        if self.shared:  # over redis-py, which Celery brings already
            self._storage = storage_from_string(f"async+{redis_url}", implementation="redispy",
                                                key_prefix="anamnesis-limits")
        else:
            self._storage = storage_from_string("async+memory://")
        self._limiter = MovingWindowRateLimiter(self._storage)

    async def admit(self, project_id: uuid.UUID, key_id: uuid.UUID) -> None:
        """Counts the request against the key's and the project's rate; 429 when either is
        spent (a refused request counts against neither)."""
        for name, item in self._rules:
            subject = str(key_id if name == "key" else project_id)
            if not await self._limiter.test(item, name, subject):
                stats = await self._limiter.get_window_stats(item, name, subject)
                raise RateLimited(f"more than {item.amount} requests in {item.multiples} s for "
                                  f"this {name}", retry_after_s=max(stats.reset_time
                                                                    - time.time(), 0.0))
        for name, item in self._rules:
            await self._limiter.hit(item, name, str(key_id if name == "key" else project_id))

    async def spend_tokens(self, session: AsyncSession, project_id: uuid.UUID) -> None:
        """429 when the project's jobs of the last day spent its daily LLM tokens."""
        quota = self.settings.project_llm_tokens_per_day
        if quota is None:
            return
        spent, oldest = await jobs.tokens_since(session, project_id, DAY)
        if spent >= quota:
            free_at = (oldest or datetime.now(UTC)) + DAY
            raise RateLimited(
                f"this project's LLM tokens for the day are spent ({spent} of {quota})",
                retry_after_s=max((free_at - datetime.now(UTC)).total_seconds(), 1.0),
                code="quota_exceeded")

    async def aclose(self) -> None:
        # The in-process storage expires its windows on a task of its own.
        timer = getattr(self._storage, "timer", None)
        if timer is not None:
            timer.cancel()


def retry_after(seconds: float) -> str:
    """The ``Retry-After`` value: whole seconds, at least one."""
    return str(max(1, math.ceil(seconds)))
