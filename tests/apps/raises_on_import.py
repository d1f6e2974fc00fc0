"""An extension module that fails while it is being imported."""

from __future__ import annotations

raise RuntimeError("REDIS_URL is not set\nsecond line of detail")
