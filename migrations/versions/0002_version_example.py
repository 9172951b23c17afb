"""a version's example: the upload's `example`, as given (API v1.1)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 06:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable with no default: versions recorded before this revision had no example kept, and
    # the contract answers null for them. Adding a nullable column rewrites no rows on either
    # database (SQLite's ALTER TABLE ADD COLUMN, PostgreSQL's catalog-only add).
    op.add_column("model_versions", sa.Column("example", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_column("example")
