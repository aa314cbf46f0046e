from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from riskstream.core.errors import UnsupportedMediaType
from riskstream.core.service import RiskService
from riskstream.services import Services
from riskstream.settings import Settings


async def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def _risk(request: Request) -> RiskService:
    risk: RiskService = request.app.state.services.risk
    return risk


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.services.settings
    return settings


ServicesDep = Annotated[Services, Depends(_services)]
RiskDep = Annotated[RiskService, Depends(_risk)]
SettingsDep = Annotated[Settings, Depends(_settings)]

JSON_MEDIA = (b"application/json",)
BULK_MEDIA = (b"application/json", b"application/x-ndjson")


def media_type(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The request's media type, lower case and without parameters; None if it declares none."""
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower()
    return None


def unsupported(media: bytes | None, accepted: tuple[bytes, ...]) -> UnsupportedMediaType | None:
    if media in accepted:
        return None
    names = " or ".join(m.decode() for m in accepted)
    said = f"Content-Type {media.decode(errors='replace')!r}" if media else "no Content-Type"
    return UnsupportedMediaType(
        f"the body must be sent as {names}; got {said}", field="content-type"
    )


async def json_write(request: Request) -> None:
    """A write takes a body declared as JSON: also what keeps a cross-site text/plain form post
    (which browsers send without asking) from scoring anything."""
    if (error := unsupported(media_type(request.scope["headers"]), JSON_MEDIA)) is not None:
        raise error
