"""Progress bars of the long commands (``bench``, ``demo``; ``evaluate`` does the same).

One library, tqdm, and one rule: a bar is drawn on stderr, and only when stderr is a terminal
and the command was not given ``--quiet``. Whatever a command prints on stdout (the bench's
JSON, the demo's summary) stays as it was, so a script reading stdout, or a log collecting
stderr, never sees a bar.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def enabled(quiet: bool = False) -> bool:
    """Whether a bar would be drawn: not ``quiet``, and stderr a terminal."""
    return not quiet and sys.stderr.isatty()


def bar(
    description: str, *, total: float | None = None, unit: str = "it", quiet: bool = False
) -> tqdm[Any]:
    """A bar on stderr, or (see ``enabled``) one that draws nothing and costs nothing."""
    return tqdm(
        total=total,
        desc=description,
        unit=unit,
        file=sys.stderr,
        disable=not enabled(quiet),
        leave=False,
        dynamic_ncols=True,
        mininterval=0.25,
    )
