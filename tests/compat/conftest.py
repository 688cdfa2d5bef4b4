"""The Mem0 clients read their telemetry switch and config folder when first imported: both
are set here, before any test module imports ``mem0``, so no test reaches the network
(PostHog) or writes to the user's home."""

from __future__ import annotations

import os
import tempfile

os.environ["MEM0_TELEMETRY"] = "False"
os.environ["MEM0_DIR"] = tempfile.mkdtemp(prefix="mem0-config-")
