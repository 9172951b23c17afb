"""a version's ONNX graph (compiled and verified at upload) and why it has none (API v1.1, the backend engine)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 10:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default: a version recorded before this revision was never compiled and serves
    # with scikit-learn, as it did. Both databases add such columns without rewriting rows.
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("onnx_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("engine_detail", sa.Text(), nullable=True))
        # `maas store gc` and a failed upload's cleanup look a graph's file up by it.
        batch_op.create_index(batch_op.f("ix_model_versions_onnx_sha256"), ["onnx_sha256"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("model_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_versions_onnx_sha256"))
        batch_op.drop_column("engine_detail")
        batch_op.drop_column("onnx_sha256")
