"""Domain errors of the registry; serving/ maps each to an HTTP answer once."""


class RegistryError(Exception):
    """Base of every registry error; `message` is safe to show to a client."""

    def __init__(self, message: str, errors: dict | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


class NotFound(RegistryError):
    """An unknown model, version or alias (or a name that can never exist)."""


class Conflict(RegistryError):
    """The change would break an invariant: an alias on a deleted version, a reserved name..."""


class InvalidInput(RegistryError):
    """Understood but invalid: a bad name, a bad feature schema."""


class DatabaseUnavailable(RegistryError):
    """The registry database does not answer (down, unreachable, or too slow to answer)."""


class DatabaseDriverMissing(RegistryError):
    """The database URL names a driver that is not installed (an extra of the package)."""
