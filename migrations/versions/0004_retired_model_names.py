"""retired model names: the version counter of a deleted model, so its numbers are never reused

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 07:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "retired_model_names",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("next_version", sa.Integer(), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("next_version >= 1", name=op.f("ck_retired_model_names_next_version_positive")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_retired_model_names")),
    )


def downgrade() -> None:
    op.drop_table("retired_model_names")
