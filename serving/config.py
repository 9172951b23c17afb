"""Settings from MAAS_* environment variables, with the contract's defaults."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model_store.store import ModelStore


class ConfigError(ValueError):
    """A MAAS_* variable has a value that cannot be used."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, not {value}")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, *, zero: bool = False) -> float:
    """A number of seconds, more than 0 (or 0 itself when `zero`) and at most a day."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, not {raw!r}") from None
    if zero and value == 0:
        return value
    if not 0 < value <= 86_400:
        lowest = "at least 0" if zero else "more than 0"
        raise ConfigError(f"{name} must be {lowest} and at most 86400 seconds, not {raw}")
    return value


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("on", "1", "true", "yes"):
        return True
    if raw in ("off", "0", "false", "no"):
        return False
    raise ConfigError(f"{name} must be 'on' or 'off', not {env.get(name)!r}")


# A named admin token's label: it names who acted in the audit trail (API v1.1).
ADMIN_LABEL = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
# The label MAAS_ADMIN_TOKEN's token acts under.
SINGLE_ADMIN_LABEL = "admin"


def _admin_tokens(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """MAAS_ADMIN_TOKENS (`label:token,...`) plus MAAS_ADMIN_TOKEN as `admin`: (label, token) pairs.

    The messages name labels and positions, never a token.
    """
    pairs: list[tuple[str, str]] = []
    raw = env.get("MAAS_ADMIN_TOKENS") or ""
    for position, item in enumerate(raw.split(","), start=1):
        if not item.strip():
            if raw.strip():
                raise ConfigError(f"MAAS_ADMIN_TOKENS: entry {position} is empty (use label:token,label:token)")
            continue
        label, colon, token = item.strip().partition(":")
        if not colon or not token:
            raise ConfigError(f"MAAS_ADMIN_TOKENS: entry {position} must be label:token with a non-empty token")
        if not ADMIN_LABEL.fullmatch(label):
            raise ConfigError(
                f"MAAS_ADMIN_TOKENS: entry {position} has the label {label[:70]!r}, which must match "
                "^[a-z0-9][a-z0-9._-]{0,63}$"
            )
        pairs.append((label, token))
    single = env.get("MAAS_ADMIN_TOKEN") or None
    if single is not None:
        pairs.append((SINGLE_ADMIN_LABEL, single))
    labels = [label for label, _ in pairs]
    for label in labels:
        if labels.count(label) > 1:
            also = " (MAAS_ADMIN_TOKEN has the label 'admin')" if label == SINGLE_ADMIN_LABEL and single else ""
            raise ConfigError(f"MAAS_ADMIN_TOKENS: the label {label!r} is given more than once{also}")
    tokens = [token for _, token in pairs]
    for label, token in pairs:
        if tokens.count(token) > 1:
            raise ConfigError(f"MAAS_ADMIN_TOKENS: the token of {label!r} is also another label's: each needs its own")
    return tuple(pairs)


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///maas-data/registry.db"
    store_dir: str = "maas-data/models"
    admin_token: str | None = None
    # Named admin tokens, (label, token) pairs, MAAS_ADMIN_TOKEN's among them as 'admin'.
    admin_tokens: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    api_token: str | None = None
    max_batch_rows: int = 10_000
    max_upload_bytes: int = 1_073_741_824
    cache_models: int = 32
    max_request_bytes: int = 10_485_760
    default_model: str | None = None
    trusted_modules: tuple[str, ...] = field(default_factory=tuple)
    predict_timeout: float = 10.0
    runner_memory: int = 2_147_483_648
    max_model_bytes: int | None = None  # None: 4 x max_upload_bytes
    sandbox: bool = True
    # gunicorn: a worker silent for longer is killed and replaced (its `timeout`), and whether the
    # app is built once in the master before the workers fork (its `preload_app`).
    worker_timeout: int = 120
    preload: bool = False
    # How long a worker answers "damaged or missing" for an artifact from memory before it opens
    # and hashes the file again (0: every request does).
    artifact_retry_seconds: float = 2.0
    # How long a worker resolves a (model, selector) from memory before asking the database again:
    # an alias move or a delete made elsewhere (another worker, another replica) is followed within
    # it; this worker's own writes at once (0: every prediction asks the database).
    alias_ttl_seconds: float = 1.0
    # The largest artifact compiled to ONNX at upload (0: none is): compiling and verifying costs
    # time and runner memory in proportion to the model (a 200 MB forest: a minute and over a GB),
    # all inside the upload request. A larger one serves with scikit-learn, and says so.
    compile_max_bytes: int = 64 << 20
    # S3-compatible object storage instead of store_dir (s3://bucket/prefix), its endpoint for
    # non-AWS services (credentials: the standard AWS variables), the local cache of the artifacts a
    # replica opened (bounded, keyed by sha256, hashed again when opened), and the multipart part size.
    store_url: str | None = None
    s3_endpoint_url: str | None = None
    store_cache_dir: str = "maas-data/cache"
    store_cache_bytes: int = 4 << 30
    s3_part_bytes: int = 8 << 20

    @property
    def admin_credentials(self) -> tuple[tuple[str, str], ...]:
        """Every admin token with its label: `admin_tokens`, and `admin_token` as 'admin' when it is
        not among them (settings built in code, as the tests do, give only `admin_token`)."""
        if self.admin_token and (SINGLE_ADMIN_LABEL, self.admin_token) not in self.admin_tokens:
            return (*self.admin_tokens, (SINGLE_ADMIN_LABEL, self.admin_token))
        return self.admin_tokens

    @property
    def model_bytes_limit(self) -> int:
        return self.max_model_bytes if self.max_model_bytes is not None else 4 * self.max_upload_bytes

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read MAAS_* variables; `overrides` (e.g. from CLI flags) win. Raises ConfigError."""
        env = os.environ if env is None else env
        trusted = tuple(m.strip() for m in env.get("MAAS_TRUSTED_MODULES", "").split(",") if m.strip())
        settings = cls(
            database_url=env.get("MAAS_DATABASE_URL") or cls.database_url,
            store_dir=env.get("MAAS_STORE_DIR") or cls.store_dir,
            admin_token=env.get("MAAS_ADMIN_TOKEN") or None,
            admin_tokens=_admin_tokens(env),
            api_token=env.get("MAAS_API_TOKEN") or None,
            max_batch_rows=_int(env, "MAAS_MAX_BATCH_ROWS", cls.max_batch_rows),
            max_upload_bytes=_int(env, "MAAS_MAX_UPLOAD_BYTES", cls.max_upload_bytes),
            cache_models=_int(env, "MAAS_CACHE_MODELS", cls.cache_models),
            max_request_bytes=_int(env, "MAAS_MAX_REQUEST_BYTES", cls.max_request_bytes),
            default_model=env.get("MAAS_DEFAULT_MODEL") or None,
            trusted_modules=trusted,
            predict_timeout=_seconds(env, "MAAS_PREDICT_TIMEOUT", cls.predict_timeout),
            runner_memory=_int(env, "MAAS_RUNNER_MEMORY", cls.runner_memory, minimum=64 << 20),
            max_model_bytes=_int(env, "MAAS_MAX_MODEL_BYTES", 0) or None,
            sandbox=_switch(env, "MAAS_SANDBOX", cls.sandbox),
            worker_timeout=_int(env, "MAAS_WORKER_TIMEOUT", cls.worker_timeout),
            preload=_switch(env, "MAAS_PRELOAD", cls.preload),
            artifact_retry_seconds=_seconds(env, "MAAS_ARTIFACT_RETRY", cls.artifact_retry_seconds, zero=True),
            alias_ttl_seconds=_seconds(env, "MAAS_ALIAS_TTL", cls.alias_ttl_seconds, zero=True),
            compile_max_bytes=_int(env, "MAAS_COMPILE_MAX_BYTES", cls.compile_max_bytes, minimum=0),
            store_url=env.get("MAAS_STORE_URL") or None,
            s3_endpoint_url=env.get("MAAS_S3_ENDPOINT_URL") or None,
            store_cache_dir=env.get("MAAS_STORE_CACHE_DIR") or cls.store_cache_dir,
            store_cache_bytes=_int(env, "MAAS_STORE_CACHE_BYTES", cls.store_cache_bytes, minimum=0),
            s3_part_bytes=_int(env, "MAAS_S3_PART_BYTES", cls.s3_part_bytes, minimum=5 << 20),
        )
        known = {f.name for f in fields(cls)}
        settings = replace(settings, **{k: v for k, v in overrides.items() if k in known and v is not None})
        if settings.worker_timeout <= settings.predict_timeout:
            # gunicorn would kill the worker in the middle of a model call it is still allowed.
            raise ConfigError(
                f"MAAS_WORKER_TIMEOUT ({settings.worker_timeout} s) must be longer than "
                f"MAAS_PREDICT_TIMEOUT ({settings.predict_timeout:g} s)"
            )
        if settings.store_url is not None:
            from model_store.s3 import parse_store_url

            try:
                parse_store_url(settings.store_url)
            except ValueError:
                raise ConfigError(
                    f"MAAS_STORE_URL must be s3://bucket or s3://bucket/prefix, not {settings.store_url!r}"
                ) from None
        return settings

    def open_store(self) -> ModelStore:
        """The model store these settings name: object storage when store_url is set, else the
        directory store_dir. Raises ConfigError when S3 is asked for and boto3 is not installed."""
        if self.store_url is None:
            from model_store.store import ArtifactStore

            return ArtifactStore(self.store_dir)
        try:
            import boto3  # noqa: F401
        except ImportError:
            raise ConfigError("MAAS_STORE_URL needs boto3: pip install 'maas[s3]'") from None
        from model_store.s3 import S3Store

        return S3Store(
            self.store_url,
            cache_dir=self.store_cache_dir,
            cache_bytes=self.store_cache_bytes,
            endpoint_url=self.s3_endpoint_url,
            part_bytes=self.s3_part_bytes,
        )
