"""Warnings that could flood the log (every request while a dependency is down), rate-limited."""

from __future__ import annotations

import logging
import time

_INTERVAL_S = 10.0
_last: dict[str, float] = {}


def warn_limited(logger: logging.Logger, site: str, message: str, *args: object) -> None:
    """Log at warning at most once per ``_INTERVAL_S`` per ``site``."""
    now = time.monotonic()
    last = _last.get(site)
    if last is not None and now - last < _INTERVAL_S:
        return
    _last[site] = now
    logger.warning(message, *args)
