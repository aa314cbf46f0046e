"""Responses rendered from the route's declared model by pydantic's Rust serializer."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import JSONResponse


class JSON(JSONResponse):
    """orjson-rendered JSON, for the few bodies that are documents rather than models (the
    model's manifest, readiness)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ModelJSON(JSON):
    """A response model as JSON: the bytes sent are the model the route declares. (A ``JSON``
    so that code handing on an error response needs to know no more than before.)"""

    media_type = "application/json"

    def render(self, content: BaseModel) -> bytes:
        return content.__pydantic_serializer__.to_json(content)
