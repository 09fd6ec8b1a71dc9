"""Reading a cohort's desired uids: SQL through SQLAlchemy, or a .txt/.csv file, optionally gzipped.

Sources yield normalised uids in whatever order they come; ordering.py makes them a sorted,
unique stream. A source never writes: queries run in a read-only transaction with a timeout.
Every failure becomes a SourceError, so one cohort fails and nothing is removed.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from reconciler.errors import SourceError, short_message
from reconciler.settings import Secret
from reconciler.specs import CohortSpec

_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
STREAM_ROWS = 10_000  # rows fetched per round trip from a server-side cursor


class Source(Protocol):
    def digest(self) -> str | None:
        """A fingerprint of the data when it can be known without reading it all; None for queries."""

    def uids(self) -> Iterator[str]:
        """Normalised uids, in source order, duplicates possible."""


def normalize(value: Any) -> str | None:
    """DESIGN.md's rule: strings stripped, empties skipped, numbers as decimal text."""
    if value is None:
        return None
    if isinstance(value, bool):
        text = str(int(value))
    elif isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, Decimal):
        text = str(int(value)) if value == value.to_integral_value() else format(value.normalize(), "f")
    elif isinstance(value, (bytes, memoryview)):
        text = bytes(value).decode("utf-8")  # UnicodeDecodeError is reported by the caller
    else:
        text = str(value)
    return text.strip() or None


def check_uid(uid: str) -> str | None:
    """Why a uid cannot be sent (control characters, a newline, NUL, a lone surrogate), or None."""
    bad = _BAD_CHARS.search(uid)
    if bad:
        return f"uid {uid[:60]!r} contains the character {bad.group()!r}, which a uid cannot hold"
    return None


class FileSource:
    """A .txt (one uid a line) or .csv (a column) file, optionally .gz."""

    def __init__(self, spec: CohortSpec) -> None:
        assert spec.source.path is not None
        self.cohort_id, self.path, self.column = spec.id, spec.source.path, spec.source.column
        self.csv = ".csv" in self.path.name.lower()

    def digest(self) -> str | None:
        h = hashlib.sha256(f"{self.column}\0".encode())
        try:
            with open(self.path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as exc:
            raise SourceError(self.cohort_id, f"cannot read {self.path}: {exc.strerror}") from exc
        return h.hexdigest()

    def uids(self) -> Iterator[str]:
        try:
            with self._open() as raw:
                yield from (self._csv(raw) if self.csv else self._lines(raw))
        except OSError as exc:  # missing file, permission, corrupt gzip
            raise SourceError(self.cohort_id, f"cannot read {self.path}: {exc.strerror or exc}") from exc
        except EOFError as exc:
            raise SourceError(self.cohort_id, f"{self.path} is truncated: {exc}") from exc

    def _open(self) -> IO[bytes]:
        if self.path.name.lower().endswith(".gz"):
            return gzip.open(self.path, "rb")
        return open(self.path, "rb")

    def _lines(self, raw: IO[bytes]) -> Iterator[str]:
        for n, line in enumerate(raw, 1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise self._error(n, f"not valid UTF-8 (byte {exc.start + 1} of the line)") from exc
            uid = text.strip()
            if uid:
                self._check(n, uid)
                yield uid

    def _csv(self, raw: IO[bytes]) -> Iterator[str]:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")
        try:
            reader = csv.DictReader(text)
            fields = reader.fieldnames or []
            column = self.column or ("uid" if "uid" in fields else (fields[0] if fields else None))
            if column not in fields:
                raise self._error(1, f"no column {column!r} in the header (columns: {', '.join(fields) or 'none'})")
            for row in reader:
                uid = (row.get(column) or "").strip()
                if uid:
                    self._check(reader.line_num, uid)
                    yield uid
        except UnicodeDecodeError as exc:
            raise self._error(None, f"not valid UTF-8: {exc.reason}") from exc
        except csv.Error as exc:
            raise self._error(None, f"malformed CSV: {exc}") from exc

    def _check(self, line: int, uid: str) -> None:
        problem = check_uid(uid)
        if problem:
            raise self._error(line, problem)

    def _error(self, line: int | None, message: str) -> SourceError:
        where = f"{self.path.name}:{line}" if line else self.path.name
        return SourceError(self.cohort_id, f"{where}: {message}")


class Engines:
    """One SQLAlchemy engine per named connection, made on first use, disposed at the end."""

    def __init__(self, urls: dict[str, Secret]) -> None:
        self._urls, self._engines = urls, {}  # type: dict[str, Secret], dict[str, Engine]

    def get(self, name: str) -> Engine:
        if name not in self._engines:
            if name not in self._urls:
                raise KeyError(name)
            self._engines[name] = sa.create_engine(self._urls[name].reveal(), pool_pre_ping=True)
        return self._engines[name]

    def close(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()


class SqlSource:
    """A query on a named connection; the first column of each row is the uid."""

    def __init__(self, spec: CohortSpec, engines: Engines, timeout: float) -> None:
        self.cohort_id, self.connection, self.sql = spec.id, spec.source.connection or "default", spec.source.sql or ""
        self.engines, self.timeout = engines, timeout

    def digest(self) -> str | None:
        return None  # the data behind a query can change at any time

    def uids(self) -> Iterator[str]:
        try:
            engine = self.engines.get(self.connection)
        except KeyError:
            raise SourceError(self.cohort_id, f"no connection named {self.connection!r} in the config") from None
        except (SQLAlchemyError, ValueError, ImportError) as exc:
            raise SourceError(self.cohort_id, f"connection {self.connection!r}: {short_message(exc)}") from exc
        try:
            with engine.connect() as conn:
                read_only(conn, self.timeout)
                result = conn.execution_options(stream_results=True, yield_per=STREAM_ROWS).execute(sa.text(self.sql))
                yield from self._rows(result)
                conn.rollback()
        except SQLAlchemyError as exc:
            raise SourceError(self.cohort_id, f"query on {self.connection!r} failed: {short_message(exc)}") from exc

    def _rows(self, result: sa.CursorResult) -> Iterator[str]:
        if not result.returns_rows:
            raise SourceError(self.cohort_id, "the query returns no rows: it must be a SELECT whose first column is the uid")
        for n, row in enumerate(result, 1):
            try:
                uid = normalize(row[0])
            except UnicodeDecodeError:
                raise SourceError(self.cohort_id, f"row {n}: the uid is bytes that are not UTF-8") from None
            if uid is not None:
                problem = check_uid(uid)
                if problem:
                    raise SourceError(self.cohort_id, f"row {n}: {problem}")
                yield uid


def read_only(conn: Connection, timeout: float) -> None:
    """Make this connection's transaction read-only and bounded in time, per dialect."""
    dialect = conn.dialect.name
    ms = max(1, int(timeout * 1000))
    if dialect == "postgresql":
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {ms}")
    elif dialect == "sqlite":
        conn.exec_driver_sql("PRAGMA query_only = ON")
        deadline = time.monotonic() + timeout
        raw = conn.connection.driver_connection
        raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    elif dialect in ("mysql", "mariadb"):
        conn.exec_driver_sql(f"SET SESSION max_execution_time = {ms}")
        conn.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")



def open_source(spec: CohortSpec, engines: Engines, timeout: float) -> Source:
    if spec.source.kind == "file":
        return FileSource(spec)
    return SqlSource(spec, engines, timeout)
