"""The operations on the registry. Each takes the session first and never commits.

Every operation that changes the registry takes the `actor` who asked for it and writes its
Event (the audit trail) in the same session: the caller's commit records both or neither.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import Select, delete, func, inspect, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from model_store.features import FeatureSpec
from registry.errors import Conflict, InvalidInput, NotFound
from registry.models import (
    Alias,
    Event,
    Feature,
    ModelVersion,
    RegisteredModel,
    RegistryIdentity,
    RetiredModelName,
    utcnow,
)
from registry.names import (
    LATEST,
    is_alias_name,
    is_model_name,
    parse_selector,
    text_problem,
)


@dataclass(frozen=True)
class ModelSummary:
    """A model as listed: its latest version number and its aliases."""

    name: str
    description: str | None
    latest_version: int | None
    aliases: dict[str, int]
    created_at: datetime
    updated_at: datetime


class VersionRef(NamedTuple):
    """Just enough of a version to serve it: the prediction path reads only this from the database."""

    id: int
    model: str
    version: int
    sha256: str
    format: str
    onnx_sha256: str | None = None  # the version's verified ONNX graph, when it was compiled


@dataclass(frozen=True)
class ArtifactFacts:
    """What the model store learnt of an artifact; recorded with the version."""

    format: str
    sha256: str
    size_bytes: int
    estimator: str
    has_predict_proba: bool
    classes: list[Any] | None
    library_versions: dict[str, str]
    # The version compiled to ONNX at upload (a derived artifact in the store), or why not.
    onnx_sha256: str | None = None
    engine_detail: str | None = None


T = TypeVar("T")

MAX_FEATURE_NAME_LENGTH = Feature.__table__.c.name.type.length  # type: ignore[attr-defined]


def _model_not_found(name: str) -> NotFound:
    return NotFound(f"Model '{name}' not found.")


def record_event(
    session: Session,
    actor: str,
    action: str,
    model: str,
    *,
    version: int | None = None,
    alias: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> Event:
    """Add one audit event to the session (the caller's transaction, as the change it records)."""
    event = Event(actor=actor, action=action, model=model, version=version, alias=alias, detail=dict(detail or {}))
    session.add(event)
    return event


def list_events(session: Session, model: str | None, *, offset: int, limit: int | None) -> tuple[list[Event], int]:
    """One page of the audit trail (of one model's name, or all), newest first, and how many in all."""
    where = [] if model is None else [Event.model == model]
    total = session.scalar(select(func.count()).select_from(Event).where(*where)) or 0
    if offset >= total:
        return [], total
    events = session.scalars(select(Event).where(*where).order_by(Event.id.desc()).offset(offset).limit(limit)).all()
    return list(events), total


def get_model(session: Session, name: str) -> RegisteredModel:
    """The model called `name`; raises NotFound (also for names that can never exist)."""
    model = None
    if is_model_name(name):
        model = session.scalar(select(RegisteredModel).where(RegisteredModel.name == name))
    if model is None:
        raise _model_not_found(name)
    return model


def _summaries(session: Session, models: Sequence[RegisteredModel]) -> list[ModelSummary]:
    ids = [m.id for m in models]
    if not ids:
        return []
    latest = dict(
        session.execute(
            select(ModelVersion.model_id, func.max(ModelVersion.version))
            .where(ModelVersion.model_id.in_(ids))
            .group_by(ModelVersion.model_id)
        ).all()
    )
    aliases: dict[int, dict[str, int]] = {i: {} for i in ids}
    for model_id, alias, version in session.execute(
        select(Alias.model_id, Alias.name, ModelVersion.version)
        .join(ModelVersion, Alias.version_id == ModelVersion.id)
        .where(Alias.model_id.in_(ids))
        .order_by(Alias.name)
    ):
        aliases[model_id][alias] = version
    return [
        ModelSummary(
            name=m.name,
            description=m.description,
            latest_version=latest.get(m.id),
            aliases=aliases[m.id],
            created_at=m.created_at,
            updated_at=m.updated_at,
        )
        for m in models
    ]


def summarize_model(session: Session, model: RegisteredModel) -> ModelSummary:
    return _summaries(session, [model])[0]


def count_models(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(RegisteredModel)) or 0


def list_models(session: Session, *, offset: int, limit: int) -> tuple[list[ModelSummary], int]:
    """One page of models by name, and how many there are in all."""
    total = count_models(session)
    if offset >= total:  # also keeps a huge page number from overflowing the database's OFFSET
        return [], total
    models = session.scalars(select(RegisteredModel).order_by(RegisteredModel.name).offset(offset).limit(limit)).all()
    return _summaries(session, models), total


def _versions_of(model: RegisteredModel) -> Select[Any]:
    return (
        select(ModelVersion)
        .where(ModelVersion.model_id == model.id)
        .options(selectinload(ModelVersion.aliases), selectinload(ModelVersion.model))
        .order_by(ModelVersion.version.desc())
    )


def versions_of(session: Session, model: RegisteredModel) -> list[ModelVersion]:
    """All of a model's versions, newest first."""
    return list(session.scalars(_versions_of(model)))


def list_versions(session: Session, name: str, *, offset: int, limit: int | None) -> tuple[list[ModelVersion], int]:
    """One page of a model's versions, newest first, and how many it has; raises NotFound."""
    model = get_model(session, name)
    total = session.scalar(select(func.count()).select_from(ModelVersion).where(ModelVersion.model_id == model.id)) or 0
    if offset >= total:
        return [], total
    versions = session.scalars(_versions_of(model).offset(offset).limit(limit)).all()
    return list(versions), total


def _selector_filter(stmt: Any, selector: int | str) -> Any:
    if isinstance(selector, int):
        return stmt.where(ModelVersion.version == selector)
    if selector == LATEST:
        return stmt.order_by(ModelVersion.version.desc()).limit(1)
    return stmt.join(Alias, Alias.version_id == ModelVersion.id).where(Alias.name == selector)


def _version_not_found(session: Session, name: str, selector: object) -> NotFound:
    if (
        not is_model_name(name)
        or session.scalar(select(RegisteredModel.id).where(RegisteredModel.name == name)) is None
    ):
        return _model_not_found(name)
    if selector is None or selector == LATEST:
        return NotFound(f"Model '{name}' has no versions.")
    return NotFound(f"Model '{name}' has no version or alias {selector!r}.")


def resolve_version_ref(session: Session, name: str, selector: object) -> VersionRef:
    """The version that `selector` (number, alias, 'latest' or None) names now; raises NotFound.

    One query: this is on every prediction.
    """
    parsed = parse_selector(selector)
    if parsed is not None and is_model_name(name):
        stmt = (
            select(
                ModelVersion.id,
                RegisteredModel.name,
                ModelVersion.version,
                ModelVersion.sha256,
                ModelVersion.format,
                ModelVersion.onnx_sha256,
            )
            .join(RegisteredModel, ModelVersion.model_id == RegisteredModel.id)
            .where(RegisteredModel.name == name)
        )
        row = session.execute(_selector_filter(stmt, parsed)).first()
        if row is not None:
            return VersionRef(*row)
    raise _version_not_found(session, name, selector)


def get_version(session: Session, name: str, selector: object) -> ModelVersion:
    """The full version (features and aliases loaded) that `selector` names; raises NotFound."""
    ref = resolve_version_ref(session, name, selector)
    version = session.scalar(
        select(ModelVersion)
        .where(ModelVersion.id == ref.id)
        .options(
            selectinload(ModelVersion.aliases),
            selectinload(ModelVersion.model),
            selectinload(ModelVersion.features),
        )
    )
    if version is None:  # deleted between the two reads
        raise _version_not_found(session, name, selector)
    return version


def get_features(session: Session, version_id: int) -> list[FeatureSpec]:
    """The feature schema of a version, in order."""
    rows = session.scalars(select(Feature).where(Feature.version_id == version_id).order_by(Feature.position))
    return [row.to_spec() for row in rows]


def _get_or_insert(
    session: Session, existing: Select[Any], new: Callable[[], T], inserted: Callable[[T], None] | None = None
) -> T:
    """The row `existing` selects, or `new()` inserted (then `inserted(row)`, in the same
    savepoint); when a concurrent transaction inserts the same unique row first, its row (the
    insert ran in a savepoint: only it is undone)."""
    row = session.scalar(existing)
    if row is not None:
        return row
    try:
        with session.begin_nested():
            row = new()
            session.add(row)
            if inserted is not None:
                session.flush()
                inserted(row)
    except IntegrityError:
        row = session.scalar(existing)
        if row is None:
            raise
    return row


def _get_or_create_model(session: Session, name: str, description: str | None = None) -> RegisteredModel:
    return _get_or_insert(
        session,
        select(RegisteredModel).where(RegisteredModel.name == name),
        lambda: RegisteredModel(name=name, description=description, next_version=1),
        _take_back_retired_counter,
    )


def _take_back_retired_counter(model: RegisteredModel) -> None:
    """A model created under the name of a deleted one goes on numbering where it stopped.

    Run once the new row is inserted: on PostgreSQL that insert waits for any transaction
    still deleting a model of this name, so the DELETE ... RETURNING (a statement of its own,
    seeing what is committed now) reads the counter that delete left, never an older one.
    """
    session = Session.object_session(model)
    assert session is not None
    retired = session.execute(
        delete(RetiredModelName).where(RetiredModelName.name == model.name).returning(RetiredModelName.next_version)
    ).scalar_one_or_none()
    if retired is not None:
        model.next_version = retired
        session.flush()


def _allocate_version_number(session: Session, model: RegisteredModel) -> int | None:
    """The model's next number, counted up; None when the model was deleted meanwhile."""
    # UPDATE ... RETURNING takes the row lock (PostgreSQL) or the write lock (SQLite) and
    # increments in one statement: concurrent uploads queue here and get distinct numbers.
    number = session.execute(
        update(RegisteredModel)
        .where(RegisteredModel.id == model.id)
        .values(next_version=RegisteredModel.next_version + 1, updated_at=utcnow())
        .returning(RegisteredModel.next_version)
        .execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    return None if number is None else int(number) - 1


def register_version(
    session: Session,
    name: str,
    artifact: ArtifactFacts,
    features: Sequence[FeatureSpec],
    *,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
    aliases: Iterable[str] = (),
    example: Any = None,
    actor: str,
) -> ModelVersion:
    """Record the next version of `name` (creating the model), its features and aliases, and
    their events (an `upload`, then an `alias_set` per alias).

    Raises InvalidInput for a bad model or alias name, Conflict for the reserved alias.
    The artifact must already be stored: once the caller commits, the version exists.
    """
    if not is_model_name(name):
        raise InvalidInput(f"Invalid model name {name!r}: it must match ^[a-z0-9][a-z0-9._-]{{0,63}}$.")
    alias_names = list(dict.fromkeys(aliases))
    for alias in alias_names:
        _check_alias_name(alias)
    for f in features:  # inferred names come from the artifact: nothing has checked them yet
        _check_feature_name(f.name)
    # The first version's description also describes a new model (PATCH changes it later).
    model = _get_or_create_model(session, name, description)
    number = _allocate_version_number(session, model)
    if number is None:
        # A delete of the model committed while this waited for its row (PostgreSQL): create
        # it again, from the counter that delete retired.
        model = _get_or_create_model(session, name, description)
        number = _allocate_version_number(session, model)
        if number is None:
            raise Conflict(f"Model '{name}' was deleted while this version was being recorded: try again.")
    version = ModelVersion(
        model_id=model.id,
        version=number,
        description=description,
        format=artifact.format,
        sha256=artifact.sha256,
        size_bytes=artifact.size_bytes,
        estimator=artifact.estimator,
        has_predict_proba=artifact.has_predict_proba,
        classes=artifact.classes,
        library_versions=dict(artifact.library_versions),
        onnx_sha256=artifact.onnx_sha256,
        engine_detail=artifact.engine_detail,
        tags=dict(tags or {}),
        example=example,
        features=[Feature.from_spec(i, f) for i, f in enumerate(features)],
    )
    session.add(version)
    session.flush()
    record_event(
        session,
        actor,
        "upload",
        name,
        version=number,
        detail={"sha256": artifact.sha256, "size_bytes": artifact.size_bytes, "format": artifact.format},
    )
    for alias in alias_names:
        previous = _point_alias(session, model, alias, version)
        _record_alias_set(session, actor, name, alias, previous, number)
    session.flush()
    session.refresh(version, ["aliases", "model"])
    return version


def _check_feature_name(name: str) -> None:
    problem = text_problem(name)
    if problem is None and len(name) > MAX_FEATURE_NAME_LENGTH:
        problem = f"Longer than {MAX_FEATURE_NAME_LENGTH} characters."
    if problem:
        raise InvalidInput(
            f"Feature name {name[:80]!r} cannot be recorded: {problem}",
            errors={"features": {name[:80]: [problem]}},
        )


def _check_alias_name(alias: str) -> None:
    if alias == LATEST:
        raise Conflict("The alias 'latest' is reserved: it always means the highest version.")
    if not is_alias_name(alias):
        raise InvalidInput(f"Invalid alias {alias!r}: it must match ^[a-z][a-z0-9_-]{{0,31}}$.")


def _point_alias(session: Session, model: RegisteredModel, alias: str, version: ModelVersion) -> int | None:
    """Create or move the alias (its row locked); the number it pointed to before, None if new."""
    created: list[Alias] = []

    def new() -> Alias:
        created.append(Alias(model_id=model.id, name=alias, version_id=version.id))
        return created[0]

    # When another transaction creates the same alias first, that alias is moved instead.
    row = _get_or_insert(
        session, select(Alias).where(Alias.model_id == model.id, Alias.name == alias).with_for_update(), new
    )
    previous = None if created and row is created[0] else row.version_id
    if row.version_id != version.id:
        row.version_id = version.id
        row.updated_at = utcnow()
    model.updated_at = utcnow()
    if previous is None:
        return None
    if previous == version.id:
        return version.version
    return session.scalar(select(ModelVersion.version).where(ModelVersion.id == previous))


def _record_alias_set(session: Session, actor: str, model: str, alias: str, previous: int | None, new: int) -> None:
    detail = {"previous_version": previous, "version": new}
    record_event(session, actor, "alias_set", model, version=new, alias=alias, detail=detail)


def set_alias(session: Session, name: str, alias: str, selector: object, *, actor: str) -> ModelVersion:
    """Create or move `alias` of model `name` to the version `selector` names, and record its
    `alias_set` event (even when it already pointed there); returns the version.

    Raises NotFound, Conflict (reserved alias) or InvalidInput (bad alias name).
    """
    model = get_model(session, name)
    _check_alias_name(alias)
    ref = resolve_version_ref(session, name, selector)
    # A share lock: the version cannot be deleted under the alias until this commits.
    version = session.get(ModelVersion, ref.id, with_for_update={"read": True}, populate_existing=True)
    if version is None:  # deleted between the resolve and the lock
        raise NotFound(f"Model '{name}' has no version {ref.version}.")
    previous = _point_alias(session, model, alias, version)
    _record_alias_set(session, actor, model.name, alias, previous, version.version)
    try:
        session.flush()
    except IntegrityError:
        # The version was deleted under us.
        raise NotFound(f"Model '{name}' has no version {ref.version}.") from None
    session.refresh(version, ["aliases", "model", "features"])
    return version


def delete_alias(session: Session, name: str, alias: str, *, actor: str) -> None:
    """Remove an alias and record its `alias_delete`; raises NotFound when the model or alias
    does not exist."""
    model = get_model(session, name)
    row = None
    if is_alias_name(alias):  # a name that can never exist is not even asked for
        row = session.scalar(select(Alias).where(Alias.model_id == model.id, Alias.name == alias))
    if row is None:
        raise NotFound(f"Model '{name}' has no alias {alias!r}.")
    previous = session.scalar(select(ModelVersion.version).where(ModelVersion.id == row.version_id))
    session.delete(row)
    model.updated_at = utcnow()
    record_event(
        session, actor, "alias_delete", model.name, version=previous, alias=alias, detail={"previous_version": previous}
    )


def delete_version(session: Session, name: str, selector: object, *, actor: str) -> int:
    """Delete a version for good (its number is never reused) and record its `version_delete`;
    returns the number.

    Raises NotFound, or Conflict while an alias points to it.
    """
    ref = resolve_version_ref(session, name, selector)
    version = session.get(ModelVersion, ref.id, with_for_update=True, populate_existing=True)
    if version is None:  # a concurrent delete won the race for it
        raise NotFound(f"Model '{name}' has no version or alias {selector!r}.")
    blocking = session.scalars(select(Alias.name).where(Alias.version_id == version.id).order_by(Alias.name)).all()
    if blocking:
        raise Conflict(
            f"Version {ref.version} of '{name}' is the target of alias(es) "
            f"{', '.join(blocking)}: move or delete them first.",
            errors={"aliases": list(blocking)},
        )
    session.delete(version)
    try:
        session.flush()
    except IntegrityError:
        # An alias was pointed at it concurrently; the foreign key refused the delete.
        raise Conflict(f"Version {ref.version} of '{name}' became the target of an alias: try again.") from None
    session.execute(update(RegisteredModel).where(RegisteredModel.id == version.model_id).values(updated_at=utcnow()))
    record_event(
        session,
        actor,
        "version_delete",
        ref.model,
        version=ref.version,
        detail={"sha256": version.sha256, "size_bytes": version.size_bytes},
    )
    return ref.version


def delete_model(session: Session, name: str, *, force: bool = False, actor: str) -> list[int]:
    """Delete a model (with `force`, its versions and aliases too); returns the deleted numbers.

    Records an `alias_delete` per alias, then a `version_delete` per version (each with
    `"model_deleted": true` in its detail); deleting a model that has no versions records
    nothing (the contract's actions do not include it: no version, alias or description changes).

    Raises NotFound, or Conflict while it has versions and `force` is not set. The model's
    counter is kept (RetiredModelName): the name may be used again, its numbers never.
    The versions' artifacts stay in the store until `maas store gc`.
    """
    model = _model_id_of(session, name)
    # Locks in the order the other writers take them, versions first, then the model row
    # (delete_version and set_alias lock a version, then update its model): no deadlock.
    locked = _lock_versions(session, model)
    row = session.scalar(
        select(RegisteredModel)
        .where(RegisteredModel.id == model)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if row is None:  # a concurrent delete won the race for it
        raise _model_not_found(name)
    # With the model row held, no upload can add a version (it must count the row up first);
    # one that committed before it is seen now (and was not locked above: try again).
    versions = list(
        session.scalars(select(ModelVersion.version).where(ModelVersion.model_id == model).order_by(ModelVersion.id))
    )
    if versions and not force:
        raise Conflict(
            f"Model '{name}' still has {len(versions)} version(s): delete them first, or delete the model with"
            " ?force=true to delete its versions and aliases too.",
            errors={"versions": sorted(versions)},
        )
    if versions != locked:
        raise Conflict(f"A version of '{name}' was uploaded while the model was being deleted: try again.")
    for alias, number in session.execute(
        select(Alias.name, ModelVersion.version)
        .join(ModelVersion, Alias.version_id == ModelVersion.id)
        .where(Alias.model_id == model)
        .order_by(Alias.name)
    ):
        gone = {"previous_version": number, "model_deleted": True}
        record_event(session, actor, "alias_delete", row.name, version=number, alias=alias, detail=gone)
    for number, sha256, size in session.execute(
        select(ModelVersion.version, ModelVersion.sha256, ModelVersion.size_bytes)
        .where(ModelVersion.model_id == model)
        .order_by(ModelVersion.version)
    ):
        deleted = {"sha256": sha256, "size_bytes": size, "model_deleted": True}
        record_event(session, actor, "version_delete", row.name, version=number, detail=deleted)
    session.execute(delete(Alias).where(Alias.model_id == model).execution_options(synchronize_session=False))
    session.execute(
        delete(ModelVersion).where(ModelVersion.model_id == model).execution_options(synchronize_session=False)
    )
    if row.next_version > 1:
        session.add(RetiredModelName(name=row.name, next_version=row.next_version))
    session.delete(row)
    session.flush()
    return sorted(versions)


def _model_id_of(session: Session, name: str) -> int:
    model = (
        session.scalar(select(RegisteredModel.id).where(RegisteredModel.name == name)) if is_model_name(name) else None
    )
    if model is None:
        raise _model_not_found(name)
    return model


def _lock_versions(session: Session, model_id: int) -> list[int]:
    return list(
        session.scalars(
            select(ModelVersion.version)
            .where(ModelVersion.model_id == model_id)
            .order_by(ModelVersion.id)
            .with_for_update()
        )
    )


KEEP: Any = object()  # update_version: leave this field as it is


def update_version(
    session: Session,
    name: str,
    selector: object,
    *,
    description: str | None = KEEP,
    tags: Mapping[str, str] = KEEP,
    actor: str,
) -> ModelVersion:
    """Change a version's description and/or replace its tags (fields left KEEP stay) and record
    a `model_update` whose detail has each given field's `old` and `new` value; returns the
    version in full. Raises NotFound. Its artifact, schema and number never change."""
    ref = resolve_version_ref(session, name, selector)
    version = session.get(ModelVersion, ref.id, with_for_update=True, populate_existing=True)
    if version is None:  # deleted between the resolve and the lock
        raise NotFound(f"Model '{name}' has no version {ref.version}.")
    detail: dict[str, Any] = {}
    if description is not KEEP:
        detail["description"] = {"old": version.description, "new": description}
        version.description = description
    if tags is not KEEP:
        detail["tags"] = {"old": version.tags, "new": dict(tags)}
        version.tags = dict(tags)
    record_event(session, actor, "model_update", ref.model, version=ref.version, detail=detail)
    session.flush()
    session.execute(update(RegisteredModel).where(RegisteredModel.id == version.model_id).values(updated_at=utcnow()))
    session.refresh(version, ["aliases", "model", "features"])
    return version


def update_model(session: Session, name: str, *, description: str | None, actor: str) -> RegisteredModel:
    """Change a model's description and record a `model_update` (no version; the detail has the
    description's `old` and `new`); raises NotFound."""
    model = get_model(session, name)
    detail = {"description": {"old": model.description, "new": description}}
    record_event(session, actor, "model_update", model.name, detail=detail)
    model.description = description
    model.updated_at = utcnow()
    session.flush()
    return model


def sha256_in_use(session: Session, sha256: str, *, hold_writers: bool = False) -> bool:
    """Whether any version references this artifact (the store keeps it while so).

    `hold_writers` as for referenced_sha256s; one indexed lookup instead of a scan of every
    version, for the cleanup after each refused upload.
    """
    if hold_writers:
        _hold_version_writers(session)
    found = session.scalar(
        select(ModelVersion.id).where(or_(ModelVersion.sha256 == sha256, ModelVersion.onnx_sha256 == sha256)).limit(1)
    )
    return found is not None


def referenced_sha256s(session: Session, *, hold_writers: bool = False) -> set[str]:
    """The sha256 of every version's artifact and of its ONNX graph: the files the model store must keep.

    With `hold_writers`, no transaction can add or delete a version until this session ends,
    so an artifact found unreferenced stays so while the caller removes its file. The caller
    must then be in a write transaction (`Database.write()`): on SQLite that transaction
    already holds the database's write lock; on PostgreSQL a SHARE lock on the versions table
    waits for every uncommitted insert or delete of a version and blocks new ones (reads and
    predictions are not blocked). An upload checks its file once its row is written, inside
    its transaction, so it either commits before this (and is seen here) or finds the file
    gone and fails.
    """
    if hold_writers:
        _hold_version_writers(session)
    graphs = session.scalars(select(ModelVersion.onnx_sha256).where(ModelVersion.onnx_sha256.is_not(None)).distinct())
    return set(session.scalars(select(ModelVersion.sha256).distinct())) | {g for g in graphs if g is not None}


def registry_id(session: Session) -> str | None:
    """This registry's id (a UUID made by the migrations, once per database); None when the
    database is not yet at the revision that makes it (`maas db upgrade` first)."""
    if not inspect(session.connection()).has_table(RegistryIdentity.__tablename__):
        return None
    return session.scalar(select(RegistryIdentity.registry_id))


def _hold_version_writers(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.connection().exec_driver_sql(f"LOCK TABLE {ModelVersion.__tablename__} IN SHARE MODE")
