"""a feature's accepts_unseen: its allowed values are the fitted categories, others are taken too (API v1.1)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NOT NULL with a constant default: every feature recorded before this revision keeps the
    # meaning it had (its `allowed` values are enforced). Both databases add such a column
    # without rewriting rows (SQLite's ALTER TABLE ADD COLUMN, PostgreSQL 11+'s fast default).
    op.add_column(
        "features",
        sa.Column("accepts_unseen", sa.Boolean(), server_default=sa.false(), nullable=False),
    )


def downgrade() -> None:
    with op.batch_alter_table("features", schema=None) as batch_op:
        batch_op.drop_column("accepts_unseen")
