"""Reading a cohort's desired uids: SQL through SQLAlchemy, or a .txt/.csv file, optionally gzipped.

Sources yield normalised uids in chunks (lists), in whatever order they come; ordering.py makes
them a sorted, unique stream. Chunks keep the per-uid work in C: a block of a file is decoded,
split, stripped and checked for bad characters in a handful of calls. A source never writes: queries run in a read-only transaction with a timeout.
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
from typing import IO, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from reconciler.sources.cursors import streaming_cursor
from reconciler.common.errors import SourceError, short_message
from reconciler.common.quoting import shown, shown_all
from reconciler.common.urls import BadUrl, engine_for, parse_url
from reconciler.sources.ordering import gnu_sort_file
from reconciler.settings.model import ConnectionSettings
from reconciler.specs.cohorts import CohortSpec

_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_BAD_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f\ud800-\udfff]")
_PLAIN = bytes(range(0x20, 0x7F)) + b"\n"  # what a plain_ascii file holds
_BREAKS = (b"\n\n", b"\n ", b" \n")  # a blank line, a padded line
STREAM_ROWS = 20_000  # rows fetched per round trip from a server-side cursor
BLOCK = 1 << 20  # bytes of a UID file read at once


class Source(Protocol):
    def digest(self) -> str | None:
        """A fingerprint of the data when it can be known without reading it all; None for queries."""

    def chunks(self) -> Iterator[list[str]]:
        """Normalised uids in lists, in source order, duplicates possible."""


def normalize(value: Any) -> str | None:
    """The README's rule for uids (Cohort specs): strings stripped, empties skipped, numbers as decimal text."""
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
        return f"uid {shown(uid)} contains the character {bad.group()!r}, which a uid cannot hold"
    return None


def first_bad(uids: list[str]) -> int | None:
    """The index of the first uid that check_uid refuses, or None; one regex pass in the common case."""
    joined = "\n".join(uids)
    if not _BAD_BUT_NEWLINE.search(joined) and joined.count("\n") == max(len(uids) - 1, 0):
        return None
    return next(i for i, uid in enumerate(uids) if check_uid(uid))


def clean(values: list[Any]) -> list[str]:
    """normalize() over a list, fast when every value is already a string."""
    if set(map(type, values)) <= {str}:
        return list(filter(None, map(str.strip, values)))
    return [u for u in map(normalize, values) if u is not None]


class FileSource:
    """A .txt (one uid a line) or .csv (a column) file, optionally .gz."""

    def __init__(self, spec: CohortSpec) -> None:
        assert spec.source.path is not None
        self.cohort_id, self.path, self.column = spec.id, spec.source.path, spec.source.column
        self.csv = ".csv" in self.path.name.lower()
        self.gz = self.path.name.lower().endswith(".gz")
        self.plain_text = not (self.csv or self.gz)  # lines as they are on disk: what GNU tools can read

    def digest(self) -> str | None:
        h = hashlib.sha256(f"{self.column}\0".encode())
        try:
            with open(self.path, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        except OSError as exc:
            raise SourceError(self.cohort_id, f"cannot read {self.path}: {exc.strerror}") from exc
        return h.hexdigest()

    def chunks(self) -> Iterator[list[str]]:
        try:
            with self._open() as raw:
                yield from (self._csv(raw) if self.csv else self._blocks(raw))
        except OSError as exc:  # missing file, permission, corrupt gzip
            raise SourceError(self.cohort_id, f"cannot read {self.path}: {exc.strerror or exc}") from exc
        except EOFError as exc:
            raise SourceError(self.cohort_id, f"{self.path} is truncated: {exc}") from exc

    def sorted_by_tool(self) -> Iterator[list[str]]:
        """This .txt file sorted by GNU sort straight from disk (when: planning/paths.py decides).

        Its output is cleaned like any block; a uid that fails the checks, or lines whose
        stripping breaks the order, make the caller fall back to the careful path, which reports
        the real line numbers.
        """
        assert self.plain_text, "GNU sort reads the file as it is on disk: a .txt file, not gzipped"
        return self._sorted_blocks()

    def _sorted_blocks(self) -> Iterator[list[str]]:
        try:
            for block in gnu_sort_file(str(self.path)):
                yield self._block(block, 0)
        except OSError as exc:  # the caller sorts it another way
            raise SourceError(self.cohort_id, f"sorting {self.path.name} failed: {exc}") from exc

    def plain_ascii(self) -> bool:
        """Every line of this .txt file is already a uid as it would be read: printable ASCII,
        no padding, no blank line. Then GNU tools may read the file itself (textdiff.py)."""
        if not self.plain_text:
            return False
        previous = b"\n"  # as if a line had just ended: a blank or padded first line shows
        try:
            with open(self.path, "rb") as fh:
                for block in iter(lambda: fh.read(BLOCK), b""):
                    seam = previous + block[:1]
                    if block.translate(None, _PLAIN) or any(p in block or p == seam for p in _BREAKS):
                        return False
                    previous = block[-1:]
        except OSError:
            return False  # the careful path reports it
        return previous != b" "

    def _open(self) -> IO[bytes]:
        if self.gz:
            return gzip.open(self.path, "rb")
        return open(self.path, "rb")

    def _blocks(self, raw: IO[bytes]) -> Iterator[list[str]]:
        """Whole lines, a block at a time; `line` counts the lines before the block, for messages."""
        line, tail = 0, b""
        for block in iter(lambda: raw.read(BLOCK), b""):
            block = tail + block
            cut = block.rfind(b"\n")
            if cut < 0:
                tail = block
                continue
            tail, block = block[cut + 1:], block[:cut]
            yield self._block(block, line)
            line += block.count(b"\n") + 1
        if tail:
            yield self._block(tail, line)

    def _block(self, block: bytes, line: int) -> list[str]:
        try:
            text = block.decode("utf-8")
        except UnicodeDecodeError as exc:
            at = line + block.count(b"\n", 0, exc.start) + 1
            raise self._error(at, "not valid UTF-8") from exc
        uids = list(filter(None, map(str.strip, text.split("\n"))))
        bad = first_bad(uids)
        if bad is not None:
            for n, raw_line in enumerate(text.split("\n"), line + 1):
                if raw_line.strip() == uids[bad]:
                    raise self._error(n, check_uid(uids[bad]) or "bad uid")
        return uids

    def _csv(self, raw: IO[bytes]) -> Iterator[list[str]]:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="")
        try:
            reader = csv.DictReader(text)
            fields = reader.fieldnames or []
            column = self.column or ("uid" if "uid" in fields else (fields[0] if fields else None))
            if column not in fields:
                raise self._error(1, f"no column {shown(column)} in the header (columns: {shown_all(fields) or 'none'})")
            chunk: list[str] = []
            for row in reader:
                uid = (row.get(column) or "").strip()
                if uid:
                    self._check(reader.line_num, uid)
                    chunk.append(uid)
                    if len(chunk) >= STREAM_ROWS:
                        yield chunk
                        chunk = []
            if chunk:
                yield chunk
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


def source_engine(url: str) -> Engine:
    """An engine that sees each source as it is at the moment of every read.

    A SQLite or DuckDB file is opened anew for each read (no pool): a pooled connection would keep
    reading a file that an export replaced by rename, forever, and would keep a DuckDB file locked
    against every other process. Server databases keep their pool, checked
    before use so a restarted server costs one reconnect; each read is its own transaction.
    """
    parsed = parse_url(url)
    if parsed.get_backend_name() in ("sqlite", "duckdb"):  # DuckDB: a process holding a file shuts others out
        return engine_for(parsed, poolclass=sa.pool.NullPool)
    return engine_for(parsed, pool_pre_ping=True)


class Engines:
    """One SQLAlchemy engine per named connection, made on first use, disposed at the end."""

    def __init__(self, connections: dict[str, ConnectionSettings]) -> None:
        self.connections, self._engines = connections, {}  # type: dict[str, ConnectionSettings], dict[str, Engine]

    def get(self, name: str) -> Engine:
        if name not in self._engines:
            if name not in self.connections:
                raise KeyError(name)
            self._engines[name] = source_engine(self.connections[name].url.reveal())
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

    def chunks(self) -> Iterator[list[str]]:
        try:
            engine = self.engines.get(self.connection)
        except KeyError:
            raise SourceError(self.cohort_id, f"no connection named {self.connection!r} in the config") from None
        except BadUrl as exc:
            raise SourceError(self.cohort_id, f"connection {self.connection!r}: {exc}") from None
        driver_error = engine.dialect.loaded_dbapi.Error  # the driver's own base class
        try:
            with engine.connect() as conn:
                read_only(conn, self.timeout)
                cursor = streaming_cursor(conn.connection.driver_connection, conn.dialect.name, "cohortsync_source")
                try:
                    cursor.execute(self.sql)  # as written: the driver sees exactly the user's SQL
                    yield from self._rows(cursor)
                finally:  # also when the read is given up half-way: an unbuffered cursor is drained first
                    cursor.close()
                conn.rollback()
        except (SQLAlchemyError, driver_error) as exc:
            raise SourceError(self.cohort_id, f"query on {self.connection!r} failed: {short_message(exc)}") from exc

    def _rows(self, cursor: Any) -> Iterator[list[str]]:
        if cursor.description is None:
            raise SourceError(self.cohort_id, "the query returns no rows: it must be a SELECT whose first column is the uid")
        seen = 0
        while rows := cursor.fetchmany(STREAM_ROWS):
            try:
                uids = clean([row[0] for row in rows])
            except UnicodeDecodeError:
                raise SourceError(self.cohort_id, f"after row {seen}: a uid is bytes that are not UTF-8") from None
            bad = first_bad(uids)
            if bad is not None:
                row_no = seen + next(i for i, row in enumerate(rows, 1) if normalize(row[0]) == uids[bad])
                raise SourceError(self.cohort_id, f"row {row_no}: {check_uid(uids[bad])}")
            seen += len(rows)
            yield uids


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
        if getattr(conn.dialect, "is_mariadb", False):
            conn.exec_driver_sql(f"SET SESSION max_statement_time = {max(timeout, 0.001):.3f}")
        else:
            conn.exec_driver_sql(f"SET SESSION max_execution_time = {ms}")
        # the next transaction only (the one the query begins): a session setting would stay on the pooled
        # connection and refuse the writes of whoever takes it next (a warehouse snapshot's, say)
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")



def open_source(spec: CohortSpec, engines: Engines, timeout: float) -> Source:
    if spec.source.kind == "file":
        return FileSource(spec)
    return SqlSource(spec, engines, timeout)
