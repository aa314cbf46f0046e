"""One exception hierarchy; the web layer maps it to one JSON error shape in one place."""

from __future__ import annotations


class RiskstreamError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(RiskstreamError):
    status = 422
    code = "invalid_input"


class PayloadTooLarge(RiskstreamError):
    status = 413
    code = "payload_too_large"


class UnknownEntity(RiskstreamError):
    status = 404
    code = "unknown_entity"


class UnsupportedMediaType(RiskstreamError):
    """A write whose body is not declared as JSON (or, for bulk, NDJSON): also what keeps a
    cross-site "simple" text/plain form post from scoring anything."""

    status = 415
    code = "unsupported_media_type"


class UnreadableRecord(RiskstreamError):
    """A stored record this server cannot read (corrupt, or out of any renderable range): the
    request about it fails alone, with this error, and every other reader skips it."""

    status = 409
    code = "unreadable_record"


class NotFound(RiskstreamError):
    status = 404
    code = "not_found"


class OutOfOrder(RiskstreamError):
    status = 409
    code = "out_of_order"


class Unavailable(RiskstreamError):
    """A backing service (Redis, the database, the model) cannot be used right now."""

    status = 503
    code = "unavailable"


class Contention(Unavailable):
    code = "contention"


class ModelContractError(Exception):
    """The artifact does not follow the model contract: the service refuses to load it."""


class CursorExpired(RiskstreamError):
    """The feed no longer holds scores that old: start again from the watchlist."""

    status = 410
    code = "cursor_expired"


class Unauthenticated(RiskstreamError):
    """No API key, or one that is unknown or revoked. The web layer adds
    ``WWW-Authenticate: Bearer``."""

    status = 401
    code = "unauthenticated"


class Forbidden(RiskstreamError):
    """A valid key without the scope the operation needs; the message names that scope."""

    status = 403
    code = "forbidden"


class RateLimited(RiskstreamError):
    """The key's token bucket is empty; ``retry_after`` (whole seconds) goes to ``Retry-After``."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after


class AlreadyExists(RiskstreamError):
    """A name that must be unique is taken (an API key's name)."""

    status = 409
    code = "already_exists"


class ModelMismatch(RiskstreamError):
    """A logged score made by another model version than this server runs: it cannot be
    explained (recomputed) here."""

    status = 409
    code = "model_mismatch"
