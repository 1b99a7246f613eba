"""Engine and sessions. SQLite gets WAL, foreign keys and a busy timeout; PostgreSQL works unchanged."""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import fcntl
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, SQLModel, create_engine

from registry import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from registry.settings import DatabaseSettings


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK_ID = 0x68756267  # "hubg": PostgreSQL advisory lock key held while migrating


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """The newest migration's revision id (read once from registry/migrations)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision the database's schema is at (None: an empty database)."""
    from alembic.runtime.migration import MigrationContext

    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(max(level, logging.WARNING))  # "Context impl SQLiteImpl." on every look: not news
    try:
        return MigrationContext.configure(connection).get_current_revision()
    finally:
        alembic_log.setLevel(level)


def _migrate(connection: Connection) -> None:
    """Upgrade to the head only when the schema is behind it: alembic (and its log lines) runs only then."""
    current, head = current_revision(connection), head_revision()
    if current == head:
        return
    log.info("database schema: migrating from %s to %s", current or "an empty database", head)
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    alembic_log.setLevel(logging.NOTSET)  # a migration is news: alembic logs at the process's level
    try:
        command.upgrade(_alembic_config(connection), "head")
    finally:
        alembic_log.setLevel(level)


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (creates it on an empty database).

    Processes starting at once (API replicas and workers on a first install) take turns: on SQLite
    through a file lock beside the database, on PostgreSQL through a transaction-level advisory lock
    (else the second one fails on the tables the first is still creating).
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK_ID})")
            _migrate(connection)
        return
    with open(f"{database}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with engine.begin() as connection:
                _migrate(connection)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def make_engine(settings: DatabaseSettings) -> Engine:
    """Create the engine and upgrade the schema to the newest migration."""
    is_sqlite = settings.url.startswith("sqlite")
    kwargs = {"connect_args": {"check_same_thread": False, "timeout": 30}} if is_sqlite else {"pool_pre_ping": True}
    engine = create_engine(settings.url, echo=settings.echo, **kwargs)
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_pragmas)
    upgrade(engine)
    return engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session whose transaction commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def insert_ignore(session: Session, model: type[SQLModel], rows: Sequence[dict[str, Any]],
                  conflict: Sequence[str]) -> int:
    """``INSERT … ON CONFLICT (conflict) DO NOTHING`` of ``rows`` in one statement; returns how many were new.

    For rows a concurrent twin may insert at the same time (two workers storing the same blob, two
    publishes creating the same repo): the loser of the race inserts nothing instead of failing with
    a unique violation. On PostgreSQL a conflicting row that another transaction has not committed
    yet makes this statement wait for it, so a SELECT after it sees the row either way.
    """
    if not rows:
        return 0
    dialect = session.get_bind().dialect.name
    table = model.__table__  # type: ignore[attr-defined]
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=list(conflict))
    else:
        raise NotImplementedError(f"insert_ignore does not know the {dialect} dialect")
    # RETURNING counts the rows inserted on both dialects (rowcount does not, with executemany or psycopg).
    stmt = stmt.returning(*table.primary_key.columns)
    session.flush()  # what the session holds goes first, as Session.execute would (rows may refer to it)
    # On the connection: a Core statement, without the ORM's per-row bulk-insert bookkeeping.
    return len(session.connection().execute(stmt, list(rows)).all())


# Named locks taken by threads of one process: a fixed set of stripes (no state grows with the names).
_THREAD_LOCKS = tuple(threading.Lock() for _ in range(64))


@contextmanager
def named_lock(engine: Engine, name: str) -> Iterator[None]:
    """Hold an exclusive lock called ``name`` across every process and thread using this database.

    PostgreSQL: an advisory lock on a connection of its own (released by the server if the process
    dies). SQLite: a byte-range lock on a file beside the database (released by the kernel if the
    process dies), taken under a thread lock because POSIX record locks belong to the process. Two
    names may share a lock (a hash): that only serialises them. Blocks until the lock is free.
    """
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    with _THREAD_LOCKS[key % len(_THREAD_LOCKS)]:
        if engine.dialect.name == "postgresql":
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    connection.commit()
            return
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        if not database or database == ":memory:":
            yield
            return
        with open(f"{database}.locks", "a+b") as f:
            offset = key % (1 << 20)
            fcntl.lockf(f, fcntl.LOCK_EX, 1, offset)
            try:
                yield
            finally:
                fcntl.lockf(f, fcntl.LOCK_UN, 1, offset)
