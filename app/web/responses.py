from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class JSON(Response):
    """orjson-rendered JSON: the hot endpoints build plain dicts and skip response models."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)
