"""The schema. Migrations in ``migrations/versions`` must build exactly this."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    false,
    text,
)

metadata = MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    }
)

scores = Table(
    "scores",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("score_id", String(32), nullable=False, unique=True),
    Column("entity_id", String(256), nullable=False),
    Column("event_id", String(256), nullable=False),
    Column("step", Integer, nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("scored_at", DateTime(timezone=True), nullable=False),
    Column(
        "logged_at",
        DateTime(timezone=True),
        nullable=False,
        server_default=text("CURRENT_TIMESTAMP"),
    ),
    Column("model_name", String, nullable=False),
    Column("model_version", String, nullable=False),
    Column("risk", JSON, nullable=False),
    Column("key_name", String(64), nullable=True),  # the API key that posted the event
    Index(None, "entity_id", "step"),
    Index(None, "entity_id", "event_time"),
    Index(None, "entity_id", "event_id"),
)

events = Table(
    "events",
    metadata,
    Column("score_id", String(32), primary_key=True),
    Column("entity_id", String(256), nullable=False),
    Column("event_id", String(256), nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("values", JSON, nullable=False),
    Column("key_name", String(64), nullable=True),
    Index(None, "entity_id", "event_time"),
)

# API keys (issue 12): never the secret, only its salted hash (``riskstream.core.keys``).
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("scopes", JSON, nullable=False),
    Column("secret_hash", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("revoked", Boolean, nullable=False, server_default=false()),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

# Audit of DELETE /v1/entities/{id} (issue 12): who forgot which entity, when. Written before
# the state is forgotten, so no forgetting goes unrecorded.
deletions = Table(
    "deletions",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("key_name", String(64), nullable=True),
    Column("entity_id", String(256), nullable=False),
    Column("deleted_at", DateTime(timezone=True), nullable=False),
    Index(None, "entity_id"),
)
