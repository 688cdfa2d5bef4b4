"""Upkeep of the search projection that no single API process owns: the change log is pruned
by the periodic sweep (whichever process runs it), whether or not any index reads it."""

from __future__ import annotations

import logging
from datetime import timedelta

from app.config import SearchSettings
from app.store.db import Database
from app.store.repositories import changes

logger = logging.getLogger(__name__)


async def prune_change_log(database: Database, settings: SearchSettings) -> int:
    """Forgets change-log rows older than ``change_log_days``; an index snapshot older than
    that is rebuilt from the memories instead of caught up. Returns how many went."""
    async with database.session_scope() as session:
        pruned = await changes.prune(session, timedelta(days=settings.change_log_days))
    if pruned:
        logger.info("pruned %d change-log rows older than %s days", pruned,
                    settings.change_log_days)
    return pruned
