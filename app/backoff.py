"""The one backoff formula, for LLM requests and for job re-runs alike.

Written out rather than taken from tenacity: the job queue needs the delay as a number (to
schedule a re-delivery, not to sleep on it), and the LLM client honours ``Retry-After`` on
top of it.
"""

from __future__ import annotations

import random


def backoff_delay(attempt: int, base_s: float, cap_s: float) -> float:
    """Exponential in ``attempt`` (1 for the first retry) up to ``cap_s``, with jitter: a
    uniform draw from the upper half, so retries spread out but never come at once."""
    ceiling = min(cap_s, base_s * 2.0 ** max(0, attempt - 1))
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # noqa: S311 - jitter, not secrets
