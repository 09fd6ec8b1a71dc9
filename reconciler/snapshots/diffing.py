"""The diff inside the warehouse: the cohort's query joined with its snapshot, only the changes come back.

The query is run as written, inside `SELECT ... FROM (<query>) AS cs_q`, so anything the
warehouse runs as a subquery works; its first column is the uid. The warehouse compares the
uid cast to text with the snapshot's rows (a FULL OUTER JOIN where the dialect has one, else
two anti-joins, MariaDB and MySQL) and sends back the rows on one side only: candidate adds with
the value as the query returned it, candidate removes with their row's hash.

A candidate add is then normalised here by the same rule as every source (sources/reading.py:
stripped, numbers as their decimal text, empty ones skipped). Almost always the warehouse's text
is already that uid, and it is an add. When it is not (a padded value, `42.0`), the uid it
stands for is looked up in the snapshot: a member is neither added nor removed, anything else
is an add. So the two paths agree uid for uid, and a query whose rows need no normalising sends
back exactly the changes. Both sides come out sorted and unique, as the planner's spills expect.
"""
from __future__ import annotations

import logging
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from reconciler.common.errors import SnapshotError, SnapshotMoved, SourceError, short_message
from reconciler.common.threads import starting_quiet_threads
from reconciler.snapshots.snapshot import EMPTY, Snapshot, Trusted
from reconciler.snapshots.tables import uid_hash
from reconciler.sources.cursors import streaming_cursor
from reconciler.sources.ordering import Spool
from reconciler.sources.reading import check_uid, normalize
from reconciler.state.records import SnapshotMark

log = logging.getLogger(__name__)
PLACEHOLDER = "cohortsync_desired_query"  # where the query goes, once the statement around it is compiled
FETCH = 20_000  # rows per round trip
MAX_STAND_INS = 250_000  # values the warehouse writes otherwise than their uid, held here to be looked up
_TRAILING = re.compile(r"(?:\s|;|^[ \t]*--[^\n]*$|;[ \t]*--[^\n'\"]*$)+\Z", re.MULTILINE)  # ; and comments at the end


def full_join(dialect: sa.engine.Dialect) -> bool:
    """Whether the dialect runs FULL OUTER JOIN (not MariaDB nor MySQL; SQLite from 3.39)."""
    if dialect.name in ("mysql", "mariadb"):
        return False
    return dialect.name != "sqlite" or sqlite3.sqlite_version_info >= (3, 39)


@dataclass
class Changes:
    """What a warehouse diff found: adds and removes, and how many rows left the warehouse."""

    adds: Spool = field(default_factory=Spool)
    removes: Spool = field(default_factory=Spool)
    stand_ins: set[str] = field(default_factory=set)  # uids of rows whose text was not yet the uid (normalised here)
    members_among: set[str] = field(default_factory=set)  # those of them the snapshot holds: never removed
    rows: int = 0  # rows that came back from the warehouse

    def added(self) -> Iterator[list[str]]:
        return self.adds.sorted()

    def removed(self) -> Iterator[list[str]]:
        for chunk in self.removes.sorted():
            kept = [u for u in chunk if u not in self.stand_ins]
            if kept:
                yield kept

    def close(self) -> None:
        self.adds.close()
        self.removes.close()


def checked_diff(snapshot: Snapshot, known: SnapshotMark | None, pending: Callable[[], set[str]], cohort_id: str,
                 sql: str) -> tuple[Trusted, Changes]:
    """The diff, and the check of the snapshot it is made against (snapshot.py: `trusted`), at the same
    time on two connections: the check's full scan costs no wall time beside the join.

    Both read the mark: every write moves its generation, so the same generation on both sides
    means both saw the same rows (an edit by hand that moves none is what the check finds). The
    check's error, when there is one, is the one raised: it says more than the join's.
    """
    against = known is not None
    with ThreadPoolExecutor(1, thread_name_prefix="snapshot-check") as pool:
        with starting_quiet_threads():  # Ctrl-C wakes the main thread, blocked on the join's rows
            checking = pool.submit(_check, snapshot, known, pending)
        changes: Changes | None = None
        try:
            with snapshot.reading() as conn:
                seen = snapshot.found(conn) if against else None
                changes = WarehouseDiff(snapshot, cohort_id, sql).run(conn, against_table=against)
                if against and snapshot.found(conn) != seen:  # a dialect that reads each statement anew
                    seen = None
        except Exception:
            checking.result()  # its error first, when it has one
            raise
        try:
            trust = checking.result()
        except BaseException:
            changes.close()
            raise
    if against and (seen is None or seen.mark.generation != trust.mark.generation):
        changes.close()
        raise SnapshotMoved(f"{snapshot.location.shown} was written while it was diffed: plan again")
    return trust, changes


def _check(snapshot: Snapshot, known: SnapshotMark | None, pending: Callable[[], set[str]]) -> Trusted:
    if known is None:  # the state keeps no members there yet: nothing in it counts
        return Trusted(EMPTY)
    with snapshot.reading() as conn:
        return snapshot.trusted(conn, known, pending)


class WarehouseDiff:
    """One cohort's diff against its snapshot, on a connection that `Snapshot.reading` opened."""

    def __init__(self, snapshot: Snapshot, cohort_id: str, sql: str) -> None:
        self.snapshot, self.cohort_id = snapshot, cohort_id
        self.sql = _TRAILING.sub("", sql)
        self.connection = snapshot.location.connection

    def run(self, conn: sa.Connection, against_table: bool) -> Changes:
        """The changes; `against_table` False: the cohort has no snapshot yet, every desired uid is an add."""
        changes = Changes()
        try:
            first = self._first_column(conn)
            desired = self._desired(conn, first)
            table = self.snapshot.table.alias("cs_s")
            if not against_table:
                self._collect(conn, sa.select(desired.c.raw, desired.c.uid), changes)
            elif full_join(conn.dialect):
                joined = desired.join(table, desired.c.uid == table.c.uid, full=True)
                self._collect(conn, sa.select(desired.c.raw, desired.c.uid, table.c.uid, table.c.h)
                              .select_from(joined).where(sa.or_(desired.c.uid.is_(None), table.c.uid.is_(None))), changes)
            else:
                self._collect(conn, sa.select(desired.c.raw, desired.c.uid).select_from(
                    desired.outerjoin(table, desired.c.uid == table.c.uid)).where(table.c.uid.is_(None)), changes)
                self._collect(conn, sa.select(sa.null(), sa.null(), table.c.uid, table.c.h).select_from(
                    table.outerjoin(desired, desired.c.uid == table.c.uid)).where(desired.c.uid.is_(None)), changes)
            if changes.stand_ins and against_table:
                changes.members_among = self.snapshot.present_among(sorted(changes.stand_ins), conn)
            changes.adds.add(sorted(changes.stand_ins - changes.members_among))
        except BaseException:
            changes.close()
            raise
        log.debug("cohort %s: diffed in the warehouse: %d rows came back (%d adds, %d removes before normalising)",
                  self.cohort_id, changes.rows, changes.adds.count, changes.removes.count)
        return changes

    def _first_column(self, conn: sa.Connection) -> str:
        """The name of the query's first column, from a run that returns no row."""
        probe = sa.select(sa.literal_column("*")).select_from(sa.text(PLACEHOLDER).columns().subquery("cs_q")).limit(0)
        cursor = self._execute(conn, probe)
        try:
            names = [column[0] for column in cursor.description or ()]
            cursor.fetchall()
        finally:
            cursor.close()
        if not names:
            raise SourceError(self.cohort_id, "the query returns no columns: it must be a SELECT whose first column is the uid")
        return names[0]

    def _desired(self, conn: sa.Connection, first: str) -> sa.Subquery:
        query = sa.text(PLACEHOLDER).columns(sa.column(first)).subquery("cs_q")
        raw = query.c[first]
        uid = sa.cast(raw, sa.String())
        if conn.dialect.name in ("mysql", "mariadb"):
            uid = uid.collate("utf8mb4_bin")  # compare byte by byte, as the snapshot's column does
        return sa.select(raw.label("raw"), uid.label("uid")).where(raw.is_not(None)).subquery("cs_d")

    def _execute(self, conn: sa.Connection, statement: Any) -> Any:
        """The statement compiled for this dialect, the query put in its place as written, run as is on the
        driver's own cursor (server-side where the driver has one: the rows stream, FETCH at a time)."""
        text = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        text = text.replace(PLACEHOLDER, f"\n{self.sql}\n", 1)
        cursor = streaming_cursor(conn.connection.driver_connection, conn.dialect.name, f"cs_diff_{uuid.uuid4().hex[:8]}")
        try:
            with self._query_errors(conn):
                cursor.execute(text)
        except BaseException:
            cursor.close()
            raise
        return cursor

    def _collect(self, conn: sa.Connection, statement: Any, changes: Changes) -> None:
        cursor = self._execute(conn, statement)
        try:
            with self._query_errors(conn):
                while rows := cursor.fetchmany(FETCH):
                    self._take(rows, changes)
        finally:
            cursor.close()

    @contextmanager
    def _query_errors(self, conn: sa.Connection) -> Iterator[None]:
        """The query's own failures (a typo, a table it may not read, a timeout) as the source's, like any
        query's: the snapshot's are told by the check that runs beside it (checked_diff)."""
        try:
            yield
        except conn.dialect.loaded_dbapi.Error as exc:
            raise SourceError(self.cohort_id, f"query on {self.connection!r} failed: {short_message(exc)}") from exc

    def _take(self, rows: list[Any], changes: Changes) -> None:
        """One fetch's rows: (raw, text) of the query alone, (raw, text, None, None) for a desired uid not
        in the snapshot, (None, None, uid, h) for a member not desired."""
        changes.rows += len(rows)
        adds: list[str] = []
        removes: list[str] = []
        for row in rows:
            if len(row) == 2 or row[2] is None:
                self._desired_row(row[0], row[1], adds, changes)
            elif row[1] is None:
                removes.append(self._member_row(row[2], row[3]))
        changes.adds.add(adds)
        changes.removes.add(removes)

    def _desired_row(self, raw: Any, text: str, adds: list[str], changes: Changes) -> None:
        try:
            uid = normalize(raw)
        except UnicodeDecodeError:
            raise SourceError(self.cohort_id, "a uid is bytes that are not UTF-8") from None
        if uid is None:
            return
        problem = check_uid(uid)
        if problem:
            raise SourceError(self.cohort_id, f"a row of the query: {problem}")
        if uid == text:
            adds.append(uid)
            return
        changes.stand_ins.add(uid)
        if len(changes.stand_ins) > MAX_STAND_INS:
            raise SourceError(self.cohort_id, f"over {MAX_STAND_INS:,} of the query's values are not their uid as the "
                              "warehouse writes them (padded with spaces, or numbers with decimals): trim or cast the "
                              "uid in the query, or diff this cohort here (a connection without `snapshots`)")

    def _member_row(self, uid: str, h: int) -> str:
        if "\n" in uid or uid_hash(uid) != h:
            raise SnapshotError(f"{self.snapshot.location.shown}: the row of {uid[:40]!r} does not carry its uid's "
                                "hash: the table was edited by hand, so no diff is made against it")
        return uid
