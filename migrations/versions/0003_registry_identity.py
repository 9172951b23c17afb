"""the registry's identity: a random UUID made once per database

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 07:35:00.000000
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # One row (id = 1, checked by the database): the id the model store records as its owner,
    # so that a store is never collected against another registry's versions. Made here, by the
    # migration, so that every database at this revision has one, new or upgraded.
    identity = op.create_table(
        "registry_identity",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("registry_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_registry_identity_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registry_identity")),
    )
    op.bulk_insert(identity, [{"id": 1, "registry_id": str(uuid.uuid4()), "created_at": datetime.now(UTC)}])


def downgrade() -> None:
    op.drop_table("registry_identity")
