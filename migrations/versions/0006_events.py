"""the audit trail: one row per upload, alias move or delete, version delete and description change (API v1.1)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A snapshot of registry.models.EVENT_ACTIONS at this revision (a revision never imports live code).
ACTIONS = ("upload", "alias_set", "alias_delete", "version_delete", "model_update")


def upgrade() -> None:
    # No foreign key to the model: its events outlive a deleted model (they name it as text).
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("alias", sa.String(length=32), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.CheckConstraint(
            "action IN (" + ", ".join(f"'{a}'" for a in ACTIONS) + ")", name=op.f("ck_events_action_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index("ix_events_model_id", "events", ["model", "id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_events_model_id", table_name="events")
    op.drop_table("events")
