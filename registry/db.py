"""Engine and sessions. SQLite gets WAL, foreign keys and a busy timeout; PostgreSQL works unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import fcntl
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, create_engine

from registry import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from registry.settings import DatabaseSettings


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


MIGRATIONS = Path(__file__).parent / "migrations"


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest migration (creates it on an empty database).

    On SQLite a file lock beside the database serialises processes starting at once
    (PostgreSQL migrations run inside one transaction each).
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        with engine.begin() as connection:
            command.upgrade(_alembic_config(connection), "head")
        return
    with open(f"{database}.migrate.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with engine.begin() as connection:
                command.upgrade(_alembic_config(connection), "head")
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
