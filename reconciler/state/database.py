"""The state database's connection: an engine per URL, transactions whose errors leave as StateError.

Every module of the state (store, changelog, leases, budget) reaches the database through a
`Database`, so a SQLAlchemy exception never leaks past this folder and the one question "is the
state shared by several processes" has one answer.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from reconciler.common.errors import StateError, short_message
from reconciler.common.urls import BadUrl, engine_for, parse_url


def make_engine(url: str) -> Engine:
    """An engine for the state URL; SQLite gets WAL, a busy timeout and its folder created."""
    try:
        parsed = parse_url(url)
        if parsed.get_backend_name() != "sqlite":
            return engine_for(parsed, pool_pre_ping=True)
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = engine_for(parsed, connect_args={"timeout": 30})
    except BadUrl as exc:
        raise StateError(f"state_url: {exc}") from None
    except OSError as exc:
        raise StateError(f"state_url: cannot create the folder of the SQLite file: {exc.strerror}") from None
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class Database:
    """An engine with the two ways in: a connection to read, a transaction to write."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @property
    def shared(self) -> bool:
        """Whether several processes write this state at once (replicas, a shared rate budget):
        PostgreSQL; any other database has one writer at a time (the writer lease)."""
        return self.engine.dialect.name == "postgresql"

    def connection(self) -> "Wrapped":
        return Wrapped(self.engine.connect)

    def transaction(self) -> "Wrapped":
        return Wrapped(self.engine.begin)

    def stream(self, query: Any, rows: int = 200) -> Iterator[Any]:
        """Rows of a query fetched `rows` at a time (blobs can be large); consume or close it."""
        with self.connection() as conn:
            for partition in conn.execution_options(stream_results=True, yield_per=rows).execute(query).partitions():
                yield from partition

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.engine.url.render_as_string(hide_password=True)!r})"


class Wrapped:
    """A connection context whose SQLAlchemy errors leave as StateError."""

    def __init__(self, opener: Any) -> None:
        self._opener, self._ctx = opener, None

    def __enter__(self) -> sa.Connection:
        try:
            self._ctx = self._opener()
            return self._ctx.__enter__()
        except SQLAlchemyError as exc:
            raise StateError(f"state database: {short_message(exc)}") from exc

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        try:
            self._ctx.__exit__(exc_type, exc, tb)
        except SQLAlchemyError as err:
            raise StateError(f"state database: {short_message(err)}") from err
        if isinstance(exc, SQLAlchemyError):
            raise StateError(f"state database: {short_message(exc)}") from exc
        return False


def encode(uids: list[str]) -> bytes:
    """Uids as one blob (ascending, newline-joined UTF-8): a row per batch, not one per uid."""
    return "\n".join(uids).encode("utf-8")


def decode(blob: bytes | None) -> list[str]:
    return bytes(blob).decode("utf-8").split("\n") if blob else []
