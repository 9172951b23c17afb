"""Engine and sessions for the registry database."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from registry.errors import DatabaseDriverMissing, DatabaseUnavailable

SQLITE_BUSY_TIMEOUT_S = 30
# libpq rounds a connect timeout below 2 s up to 2 s. Keepalives and TCP_USER_TIMEOUT let a
# connection to a host that vanished (no FIN, no RST) fail within seconds instead of hanging a
# worker until gunicorn kills it.
POSTGRES_CONNECT_ARGS = {
    "connect_timeout": 2,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
PING_TIMEOUT_S = 0.8
PROBE_INTERVAL_S = 0.25


def is_unreachable(error: BaseException) -> bool:
    """Whether a database error means "it cannot answer now" (down, unreachable, locked past the
    busy timeout, pool exhausted, an operational failure): a 503 to try again, not a bug."""
    if isinstance(error, (DatabaseUnavailable, PoolTimeout, OperationalError)):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


# PostgreSQL's SQLSTATEs for "no connection": class 08, and the server shutting down or starting.
_DISCONNECT_SQLSTATES = ("08", "57P01", "57P02", "57P03")
_SQLITE_GONE = ("unable to open database file", "disk i/o error", "database is locked")


def is_disconnect(error: BaseException) -> bool:
    """Whether the database could not be reached at all (refused, lost, timed out, shutting
    down), as opposed to a statement that failed on a database that answers (a deadlock, a
    serialization failure, a missing table): only then may callers serve from what they knew."""
    if isinstance(error, (DatabaseUnavailable, PoolTimeout)):
        return True
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    orig = error.orig
    if isinstance(orig, sqlite3.OperationalError):
        return any(text in str(orig).lower() for text in _SQLITE_GONE)
    if not isinstance(error, OperationalError):
        return False
    sqlstate = getattr(orig, "sqlstate", None)
    # psycopg raises a failed connect (refused, timed out, unknown host) with no SQLSTATE.
    return sqlstate is None or sqlstate.startswith(_DISCONNECT_SQLSTATES)


def make_engine(url: str) -> Engine:
    """Build an engine for `url`; SQLite gets WAL, foreign keys and immediate write transactions.

    The directory of a SQLite file is created if it does not exist.
    Raises DatabaseDriverMissing when a PostgreSQL URL's driver, psycopg, is not installed (it is
    the `postgres` extra).
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        try:
            return create_engine(
                url, pool_pre_ping=True, pool_size=5, max_overflow=10, connect_args=POSTGRES_CONNECT_ARGS
            )
        except ImportError as exc:
            if parsed.get_backend_name() != "postgresql" or not (exc.name or "").startswith("psycopg"):
                raise
            raise DatabaseDriverMissing(
                f"The registry database URL ({parsed.render_as_string(hide_password=True)}) is a PostgreSQL "
                f"URL but {exc.name} is not installed: pip install 'maas[postgres]'"
            ) from None

    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
        # pysqlite's own transaction handling breaks SAVEPOINT and cannot BEGIN IMMEDIATE:
        # switch it off and emit BEGIN ourselves (SQLAlchemy's documented recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        # A write transaction takes the write lock up front, so two writers queue on the
        # busy timeout instead of failing when a reader upgrades to a writer.
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


class Database:
    """One engine and its session factories; `read()` and `write()` are units of work."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        writer = self.engine.execution_options(sqlite_begin="IMMEDIATE") if self.is_sqlite else self.engine
        self._write_sessions = sessionmaker(writer, expire_on_commit=False)
        self._probe: _Probe | None = None
        self._probe_lock = threading.Lock()

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads; rolled back at the end."""
        with self._sessions() as session:
            yield session

    @contextlib.contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose work is committed at the end, or rolled back on any exception."""
        with self._write_sessions.begin() as session:
            yield session

    def ping(self, timeout_s: float = PING_TIMEOUT_S) -> None:
        """Raise DatabaseUnavailable unless `SELECT 1` answers within `timeout_s`.

        The query runs in a probe thread of its own, one at a time: a database that hangs costs
        the caller `timeout_s`, never a stuck request, and never a pile of waiting threads.
        """
        probe = self._start_probe(min_interval_s=0.0)
        if not probe.finished.wait(timeout_s):
            raise DatabaseUnavailable(f"The registry database did not answer within {timeout_s} s.")
        if probe.error is not None:
            raise DatabaseUnavailable(f"The registry database does not answer ({probe.error}).")

    def probe(self) -> None:
        """Try `SELECT 1` in the background, without waiting: at most one probe at a time, and
        at most one every PROBE_INTERVAL_S. A probe that gets a connection fires the engine's
        "checkout" event, as every successful use of the database does."""
        self._start_probe(min_interval_s=PROBE_INTERVAL_S)

    def _start_probe(self, *, min_interval_s: float) -> _Probe:
        with self._probe_lock:
            probe = self._probe
            if probe is None or (probe.finished.is_set() and time.monotonic() - probe.started >= min_interval_s):
                probe = self._probe = _Probe(self._select_one)
            return probe

    def _select_one(self) -> None:
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()


class _Probe:
    """`check()` run once in a daemon thread; `finished` is set when it returns or raises."""

    def __init__(self, check: Callable[[], None]) -> None:
        self.finished = threading.Event()
        self.started = time.monotonic()
        self.error: str | None = None
        self._check = check
        threading.Thread(target=self._run, name="maas-db-probe", daemon=True).start()

    def _run(self) -> None:
        try:
            self._check()
        except Exception as exc:  # noqa: BLE001 - any failure means "not answering"
            self.error = type(exc).__name__
        finally:
            self.finished.set()
