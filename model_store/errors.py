"""Errors raised by the model store; serving/ maps each to an HTTP answer."""


class ModelStoreError(Exception):
    """Base of every model store error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArtifact(ModelStoreError):
    """The uploaded bytes are not a usable model (unreadable, no predict, bad schema...)."""


class UnsafeArtifact(InvalidArtifact):
    """The artifact references code outside the trusted allow-list; it was never unpickled."""

    def __init__(self, offending: list[str], message: str | None = None) -> None:
        self.offending = sorted(set(offending))
        super().__init__(
            message
            or "Artifact refused: it references globals outside the trusted allow-list: " + ", ".join(self.offending)
        )


class ArtifactTooLarge(ModelStoreError):
    """The upload is larger than the configured limit."""


class ArtifactUnavailable(ModelStoreError):
    """A stored artifact is missing, damaged (sha256 mismatch) or cannot be loaded."""


class StoreWriteFailed(ModelStoreError):
    """The store's file system refused an upload's bytes (no space left, I/O error, too many
    open files, a directory of the store gone wrong): nothing was stored, nothing is wrong
    with the upload."""


class PredictionFailed(ModelStoreError):
    """The model raised while predicting on input that passed the schema checks."""


class RunnerFailed(ModelStoreError):
    """The process running a model died, ran out of memory or broke the protocol (a 503); the next
    request gets a fresh one."""


class RunnerTimedOut(ModelStoreError):
    """A model call took longer than MAAS_PREDICT_TIMEOUT; its runner was killed (a 504)."""


class StoreClaimed(ModelStoreError):
    """The store records another registry as its owner (its `registry-id` file): this registry
    must not serve from it or collect it."""

    def __init__(self, root: str, owner: str, registry_id: str) -> None:
        self.owner = owner
        self.registry_id = registry_id
        super().__init__(
            f"the model store at {root} belongs to registry {owner}, not to this registry ({registry_id}): "
            "give each registry a store of its own (MAAS_STORE_DIR or --store-dir, or MAAS_STORE_URL)"
        )
