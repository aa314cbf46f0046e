"""Audit: the posting key's name on scores and events, and a table of deletions.

Revision ID: 0003
Revises: 0002
Created: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # nullable, no default: adding the column rewrites no row (rows before keys have none)
    op.add_column("scores", sa.Column("key_name", sa.String(64), nullable=True))
    op.add_column("events", sa.Column("key_name", sa.String(64), nullable=True))
    op.create_table(
        "deletions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("key_name", sa.String(64), nullable=True),
        sa.Column("entity_id", sa.String(256), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_deletions"),
    )
    op.create_index("ix_deletions_entity_id", "deletions", ["entity_id"])


def downgrade() -> None:
    op.drop_index("ix_deletions_entity_id", table_name="deletions")
    op.drop_table("deletions")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("key_name")
    with op.batch_alter_table("scores") as batch:
        batch.drop_column("key_name")
