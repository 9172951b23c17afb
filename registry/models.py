"""ORM classes of the registry: model names, their versions, feature schemas, aliases, and the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from model_store.features import FeatureSpec, FeatureType

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class RegisteredModel(Base):
    """A model name; its versions are numbered 1, 2, 3... from `next_version`, never reused."""

    __tablename__ = "registered_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    # The per-model counter row: bumping it in the upload's transaction serialises concurrent
    # uploads to one model, so two can never be given the same number.
    next_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    versions: Mapped[list[ModelVersion]] = relationship(
        back_populates="model", order_by="desc(ModelVersion.version)", passive_deletes=True
    )
    aliases: Mapped[list[Alias]] = relationship(back_populates="model", order_by="Alias.name", passive_deletes=True)

    __table_args__ = (CheckConstraint("next_version >= 1", name="next_version_positive"),)


class RetiredModelName(Base):
    """A deleted model's name and the number its next version would have had: uploading to the
    name again creates the model anew from that number (a name's numbers are never reused, even
    once its model row is gone: caches and audits key versions by model and number).

    A name is in this table or in registered_models, never both: deleting a model moves its
    counter here, and creating the model again moves it back, each in one transaction.
    """

    __tablename__ = "retired_model_names"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_version: Mapped[int] = mapped_column(Integer)
    retired_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (CheckConstraint("next_version >= 1", name="next_version_positive"),)


class ModelVersion(Base):
    """One immutable version: its artifact (by sha256) and what was learnt of it at upload."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    estimator: Mapped[str] = mapped_column(String(255))
    has_predict_proba: Mapped[bool] = mapped_column(Boolean)
    classes: Mapped[list[Any] | None] = mapped_column(JSON)
    library_versions: Mapped[dict[str, str]] = mapped_column(JSON)
    tags: Mapped[dict[str, str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The upload's `example`: a prediction's `data` value exactly as given (pages pre-fill their
    # forms from it); None when there was none. Stored as SQL NULL, never as JSON 'null'.
    example: Mapped[Any] = mapped_column(JSON(none_as_null=True), nullable=True)
    # The version compiled to ONNX at upload and verified against the model: a derived artifact
    # in the model store (kept by `maas store gc` like the version's own); None when it was not
    # compiled, and then engine_detail says why (None too for versions recorded before 0007).
    onnx_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    engine_detail: Mapped[str | None] = mapped_column(Text)

    @property
    def engines(self) -> list[str]:
        """The engines this version predicts with (API v1.1, "The backend engine")."""
        return ["sklearn", "onnx"] if self.onnx_sha256 is not None else ["sklearn"]

    model: Mapped[RegisteredModel] = relationship(back_populates="versions")
    features: Mapped[list[Feature]] = relationship(
        back_populates="model_version",
        order_by="Feature.position",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="raise",  # loaded only where shown: get_version, set_alias, register_version
    )
    aliases: Mapped[list[Alias]] = relationship(back_populates="model_version", order_by="Alias.name", viewonly=True)

    __table_args__ = (
        UniqueConstraint("model_id", "version", name="uq_model_versions_model_id_version"),
        CheckConstraint("version >= 1", name="version_positive"),
        CheckConstraint("size_bytes >= 0", name="size_not_negative"),
    )


class Feature(Base):
    """One input column of a version, in the order the model expects it."""

    __tablename__ = "features"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(16))
    required: Mapped[bool] = mapped_column(Boolean, default=True)
    allowed: Mapped[list[Any] | None] = mapped_column(JSON)
    minimum: Mapped[float | None] = mapped_column(Float)
    maximum: Mapped[float | None] = mapped_column(Float)
    # `allowed` lists the fitted categories, and others are accepted too (API v1.1).
    accepts_unseen: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())

    model_version: Mapped[ModelVersion] = relationship(back_populates="features")

    __table_args__ = (
        UniqueConstraint("version_id", "position", name="uq_features_version_id_position"),
        UniqueConstraint("version_id", "name", name="uq_features_version_id_name"),
        # The migrations keep their own copy of this list (a revision is a snapshot):
        # tests/test_feature_types.py fails when the two disagree.
        CheckConstraint("type IN (" + ", ".join(f"'{t.value}'" for t in FeatureType) + ")", name="type_known"),
    )

    @classmethod
    def from_spec(cls, position: int, spec: FeatureSpec) -> Feature:
        """The row of a version's feature at `position` (0 first)."""
        return cls(
            position=position,
            name=spec.name,
            type=spec.type.value,
            required=spec.required,
            allowed=list(spec.allowed) if spec.allowed is not None else None,
            minimum=spec.minimum,
            maximum=spec.maximum,
            accepts_unseen=spec.accepts_unseen,
        )

    def to_spec(self) -> FeatureSpec:
        return FeatureSpec(
            name=self.name,
            type=FeatureType(self.type),
            required=self.required,
            allowed=tuple(self.allowed) if self.allowed is not None else None,
            minimum=self.minimum,
            maximum=self.maximum,
            accepts_unseen=self.accepts_unseen,
        )


class Alias(Base):
    """A movable name for one version of a model; the version cannot be deleted under it."""

    __tablename__ = "aliases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(32))
    # RESTRICT: the database itself refuses to delete a version an alias points to.
    version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id", ondelete="RESTRICT"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    model: Mapped[RegisteredModel] = relationship(back_populates="aliases")
    model_version: Mapped[ModelVersion] = relationship(back_populates="aliases")

    __table_args__ = (UniqueConstraint("model_id", "name", name="uq_aliases_model_id_name"),)


class RegistryIdentity(Base):
    """The registry's id, one row made by the migrations: the model store records it as its owner."""

    __tablename__ = "registry_identity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # A UUID in its 36-character text form, exactly as the store's claim file holds it.
    registry_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


# What an Event records; the migrations keep their own copy (0006_events.py).
EVENT_ACTIONS = ("upload", "alias_set", "alias_delete", "version_delete", "model_update")


class Event(Base):
    """One change to the registry, who made it and what changed (API v1.1's audit trail).

    Written by the registry operation that makes the change, in its transaction: a change and
    its event are committed together or not at all. Keyed by the model's name, not its row, so
    that events outlive the model; `actor` is the admin token's label at the time, kept as text
    when the token is later revoked.
    """

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(64))
    version: Mapped[int | None] = mapped_column(Integer)
    alias: Mapped[str | None] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (
        CheckConstraint("action IN (" + ", ".join(f"'{a}'" for a in EVENT_ACTIONS) + ")", name="action_known"),
        # GET /api/admin/events?model=NAME, newest first.
        Index("ix_events_model_id", "model", "id"),
    )
