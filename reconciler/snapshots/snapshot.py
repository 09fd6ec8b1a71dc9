"""One cohort's snapshot table on its warehouse: checked before a diff, written with each settled batch.

A write is one warehouse transaction: the mark moves from the generation the writer expects to the
next (the statement matches no row once anyone else wrote: SnapshotMoved, and nothing changes),
and the batch's rows go in or out. The local state records the new mark right after, in the
transaction that settles the batch (state/store.py). A writer that dies, or loses its lease,
between the two commits leaves the warehouse exactly one write ahead, with that write's uids still
pending in the state: `trusted` takes such a mark, and the plan re-sends those uids as it does
any uncertain ones. Anything else that disagrees (a generation behind or further ahead, a mark of
another state, rows that do not count or sum up to the mark) fails the cohort: no diff is made
against a snapshot that cannot be trusted.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from reconciler.common.actions import Action
from reconciler.common.errors import SnapshotError, SnapshotMoved, short_message
from reconciler.common.urls import BadUrl
from reconciler.settings.model import DEFAULT_WORKSPACE
from reconciler.snapshots.tables import grant_hint, marks_table, snapshot_table, table_name, uid_hash
from reconciler.sources.reading import read_only
from reconciler.state.database import decode, encode
from reconciler.state.keys import split_key
from reconciler.state.records import SnapshotMark

EMPTY = SnapshotMark(0, 0, 0)  # a snapshot this state has not made yet: nothing in it counts
IN_LIST = 1000  # uids per IN (...) of a delete or a look-up
LOAD_ROWS = 10_000  # rows per insert of a load
LOAD, CLAIM = "load", "claim"  # the mark's last action after a move in, and after a writer claimed it


# dialects whose DB-API runs each statement by itself: a write's rows and its mark could not change together
WITHOUT_TRANSACTIONS = {"bigquery": "BigQuery's DB-API commits each statement by itself",
                        "databricks": "Databricks' DB-API runs each statement by itself"}


def first_generation() -> int:
    """Where a new snapshot's generations start: the time of its load in milliseconds, shifted 20 bits,
    so that a snapshot made again never reuses one of an earlier one's (a writer paused since then
    expects one of those, and its write must match nothing)."""
    return int(time.time() * 1000) << 20


@dataclass(frozen=True)
class Location:
    """Where one cohort's snapshot lives: a connection of the config, a schema, a table."""

    connection: str
    schema: str
    table: str

    @classmethod
    def of(cls, connection: str, schema: str, key: str) -> "Location":
        return cls(connection, schema, table_name(key))

    @classmethod
    def parse(cls, text: str) -> "Location":
        connection, schema, table = text.rsplit("/", 2)  # a connection's name may hold a slash; the rest never
        return cls(connection, schema, table)

    def __str__(self) -> str:
        return f"{self.connection}/{self.schema}/{self.table}"

    @property
    def shown(self) -> str:
        """As messages name it: the table, and the connection it is reached through."""
        return f"{self.schema}.{self.table} on connection {self.connection!r}"


@dataclass(frozen=True)
class Found:
    """A snapshot's mark as the warehouse holds it."""

    state_id: str
    mark: SnapshotMark
    last_action: str | None
    last_uids: list[str]


@dataclass(frozen=True)
class Trusted:
    """The mark a diff may rely on, and the write the state has not recorded yet (when the warehouse is
    one write ahead of it): apply records that write (its mark and its changelog entry) before its own."""

    mark: SnapshotMark
    unrecorded: Found | None = None


class Snapshot:
    """A cohort's snapshot (`key` is its state key) as one state database (`state_id`) keeps it."""

    def __init__(self, engine: Engine, location: Location, key: str, state_id: str, timeout: float = 300.0) -> None:
        self.engine, self.location, self.key, self.state_id, self.timeout = engine, location, key, state_id, timeout
        self.dialect = engine.dialect.name
        if self.dialect in WITHOUT_TRANSACTIONS:
            raise SnapshotError(f"connection {location.connection!r}: {WITHOUT_TRANSACTIONS[self.dialect]}, so a "
                                "snapshot's rows and its mark could not be written together: keep `snapshots` off "
                                "this connection (its cohorts are then diffed here)")
        self.table = snapshot_table(location.schema, location.table, self.dialect)
        self.marks = marks_table(location.schema)

    # --- reading ------------------------------------------------------------------------
    @contextmanager
    def reading(self) -> Iterator[sa.Connection]:
        """A read-only transaction that sees one state of the warehouse: repeatable read on PostgreSQL,
        MariaDB and MySQL; DuckDB and SQLite give one per transaction already."""
        with self._errors("read"), self.engine.connect() as conn:
            if self.dialect in ("postgresql", "mysql", "mariadb"):  # one state of the data for the whole reading
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
            trans = conn.begin()
            try:
                read_only(conn, self.timeout)
                yield conn
            finally:
                trans.rollback()

    def found(self, conn: sa.Connection) -> Found | None:
        """The warehouse's mark of this snapshot, or None when there is none (or no marks table)."""
        if not sa.inspect(conn).has_table(self.marks.name, schema=self.location.schema):
            return None
        row = conn.execute(sa.select(self.marks).where(self.marks.c.key == self.key)).first()
        if row is None or row.table_name != self.location.table:
            return None
        mark = SnapshotMark(int(row.generation), int(row.row_count), int(row.checksum))
        return Found(row.state_id, mark, row.last_action, decode(row.last_uids))

    def trusted(self, conn: sa.Connection, known: SnapshotMark | None,
                pending: Callable[[], set[str]]) -> Trusted:
        """The mark a diff may rely on, its rows counted and summed; SnapshotError when there is none.

        `known` is this state's mark (None: the state keeps no members there yet, so nothing there
        counts); `pending` gives the cohort's uncertain uids, asked for only when the warehouse is
        one write ahead.
        """
        if known is None:
            return Trusted(EMPTY)
        found = self.found(conn)
        if found is None:
            raise SnapshotError(f"{self.location.shown}: its mark is missing from {self.location.schema}.{self.marks.name} "
                                "(dropped, or the connection now reaches another database); the members cannot be "
                                f"told: put the snapshot back (then `{self.command('state adopt')}`)")
        if found.state_id != self.state_id:
            raise SnapshotError(f"{self.location.shown} is written by another cohortsync state database "
                                f"({found.state_id[:8]}…), not this one ({self.state_id[:8]}…): two states must "
                                "never write one snapshot")
        mark = _expected(found, known, pending, self.location, self.command("state adopt"))
        if not self.exists(conn):
            raise SnapshotError(f"{self.location.shown} is gone while its mark is still there (the table was dropped): "
                                f"no diff is made without it; `{self.command('state adopt')}` starts it again empty, "
                                f"then `{self.command('apply --resync')}` sends every member again")
        rows, total = self.measure(conn)
        if (rows, total) != (mark.count, mark.checksum):
            raise SnapshotError(f"{self.location.shown} holds {rows:,} rows (checksum {total}) where its mark says "
                                f"{mark.count:,} (checksum {mark.checksum}): it was edited by hand or half-written, so "
                                f"no diff is made against it; if the table is as it should be, `{self.command('state adopt')}` "
                                "takes it, then `apply --resync`")
        return Trusted(mark, found if mark != known else None)

    def command(self, action: str) -> str:
        """A cohortsync command on this snapshot's cohort (`state adopt`, `apply --resync`), as a message
        tells it: its --cohort, and its --workspace outside the default one."""
        workspace, cohort_id = split_key(self.key)
        return f"cohortsync {action} --cohort {cohort_id}" + ("" if workspace == DEFAULT_WORKSPACE
                                                               else f" --workspace {workspace}")

    def exists(self, conn: sa.Connection) -> bool:
        """Whether the snapshot's table is there (its mark may outlive it: a table dropped by hand)."""
        return sa.inspect(conn).has_table(self.location.table, schema=self.location.schema)

    def present(self) -> bool:
        """`exists`, on a connection of its own."""
        with self._errors("read"), self.engine.connect() as conn:
            return self.exists(conn)

    def measure(self, conn: sa.Connection) -> tuple[int, int]:
        """(rows, SUM(h)) of the snapshot table: plain SQL on any dialect."""
        row = conn.execute(sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(self.table.c.h), 0))
                           .select_from(self.table)).one()
        return int(row[0]), int(row[1])

    def present_among(self, uids: list[str], conn: sa.Connection | None = None) -> set[str]:
        """Which of these uids the snapshot holds (on `conn`, a reading's connection, when given)."""
        if conn is None:
            with self._errors("read"), self.engine.connect() as own:
                return self.present_among(uids, own)
        found: set[str] = set()
        for i in range(0, len(uids), IN_LIST):
            found.update(conn.execute(sa.select(self.table.c.uid).where(
                self.table.c.uid.in_(uids[i:i + IN_LIST]))).scalars())
        return found

    def chunks(self, rows: int = 20_000, *, checked: bool = True) -> Iterator[list[str]]:
        """Every member, in the warehouse's order (the caller sorts), each row's `h` checked against its uid
        (unless `checked` is False: a snapshot being adopted as it stands)."""
        with self._errors("read"), self.engine.connect() as conn:
            query = sa.select(self.table.c.uid, self.table.c.h)
            for part in conn.execution_options(stream_results=True, yield_per=rows).execute(query).partitions():
                bad = next((uid for uid, h in part if uid_hash(uid) != h), None) if checked else None
                if bad is not None:
                    raise SnapshotError(f"{self.location.shown}: the row of {bad[:40]!r} does not carry its uid's "
                                        "hash: the table was edited by hand")
                yield [uid for uid, _ in part]

    # --- writing ------------------------------------------------------------------------
    def write(self, action: Action, uids: list[str], expect: SnapshotMark) -> SnapshotMark:
        """Add or remove these members, moving the mark from `expect` to the next generation."""
        sign = Action(action).delta(1)
        new = expect.moved(sign * len(uids), sign * sum(map(uid_hash, uids)))
        with self._errors("write"), self.engine.begin() as conn:
            self._advance(conn, expect, new, str(action), uids)
            if action == Action.ADD:
                try:
                    conn.execute(self.table.insert(), [{"uid": u, "h": uid_hash(u)} for u in uids])
                except IntegrityError as exc:
                    raise SnapshotError(f"{self.location.shown} already holds a uid this batch adds: it was edited "
                                        f"by hand ({short_message(exc)})") from exc
            else:
                gone = sum(conn.execute(self.table.delete().where(self.table.c.uid.in_(uids[i:i + IN_LIST]))).rowcount
                           for i in range(0, len(uids), IN_LIST))
                if gone != len(uids):
                    raise SnapshotError(f"{self.location.shown} lacks {len(uids) - gone} of the {len(uids)} uids this "
                                        "batch removes: it was edited by hand")
        return new

    def claim(self, expect: SnapshotMark) -> SnapshotMark:
        """Move the mark one generation on, rows unchanged, before a writer sends anything: a writer
        that saw an earlier generation (paused past its lease, say) then writes nothing, even where
        this one settles uids by re-sending them, which writes no rows."""
        new = expect.moved(0, 0)
        with self._errors("write"), self.engine.begin() as conn:
            self._advance(conn, expect, new, CLAIM, [])
        return new

    def _advance(self, conn: sa.Connection, expect: SnapshotMark, new: SnapshotMark, action: str,
                 uids: list[str]) -> None:
        moved = conn.execute(self.marks.update().where(
            self.marks.c.key == self.key, self.marks.c.generation == expect.generation,
            self.marks.c.state_id == self.state_id,
        ).values(generation=new.generation, row_count=new.count, checksum=new.checksum, last_action=action,
                 last_uids=encode(uids), updated_at=time.time()))
        if moved.rowcount != 1:
            raise SnapshotMoved(f"{self.location.shown} was written by someone else since generation "
                                f"{expect.generation}: this batch stays unconfirmed, the next plan settles it")

    def load(self, chunks: Iterable[list[str]]) -> SnapshotMark:
        """Make the snapshot anew from these members (a move in): the table replaced, its generations new.

        The local state still keeps the members until it records the mark this returns, so a load
        that stops half-way is simply made again.
        """
        self.prepare()
        count = total = 0
        with self._errors("write"), self.engine.begin() as conn:
            self._owned(conn)
            conn.execute(self.marks.delete().where(self.marks.c.key == self.key))
            conn.execute(self.table.delete())
            insert = self._copier(conn) or self._inserter(conn)
            for chunk in chunks:
                hashes = list(map(uid_hash, chunk))
                for i in range(0, len(chunk), LOAD_ROWS):
                    insert(chunk[i:i + LOAD_ROWS], hashes[i:i + LOAD_ROWS])
                count, total = count + len(chunk), total + sum(hashes)
            mark = SnapshotMark(first_generation(), count, total)
            conn.execute(self.marks.insert().values(
                key=self.key, table_name=self.location.table, state_id=self.state_id, generation=mark.generation,
                row_count=count, checksum=total, last_action=LOAD, last_uids=None, updated_at=time.time()))
        with self.reading() as conn:
            if self.measure(conn) != (count, total):
                raise SnapshotError(f"{self.location.shown}: {count:,} members loaded but the table does not count "
                                    "and sum up to them")
        if self.dialect == "postgresql":  # statistics and the visibility map now, not when autovacuum gets to it
            with self._errors("vacuum"), self.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    f"VACUUM (ANALYZE) {self.location.schema}.{self.location.table}")
        return mark

    def _inserter(self, conn: sa.Connection) -> Callable[[list[str], list[int]], None]:
        def insert(uids: list[str], hashes: list[int]) -> None:
            conn.execute(self.table.insert(), [{"uid": u, "h": h} for u, h in zip(uids, hashes)])
        return insert

    def _copier(self, conn: sa.Connection) -> Callable[[list[str], list[int]], None] | None:
        """COPY on PostgreSQL through psycopg (several times faster than inserts), in the same transaction."""
        if self.dialect != "postgresql" or conn.dialect.driver != "psycopg":
            return None
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        statement = f"COPY {self.location.schema}.{self.location.table} (uid, h) FROM STDIN"

        def copy(uids: list[str], hashes: list[int]) -> None:
            text = "".join(f"{u}\t{h}\n" for u, h in zip(uids, hashes))
            if "\\" in text:  # COPY's text format escapes backslashes (uids hold no tab or newline: sources check)
                text = text.replace("\\", "\\\\")
            with cursor.copy(statement) as writer:
                writer.write(text)
        return copy

    def prepare(self) -> None:
        """The schema, the marks table and this cohort's table, made where missing (DDL, outside any write)."""
        with self._errors("create"), self.engine.begin() as conn:
            inspector = sa.inspect(conn)
            if self.dialect != "sqlite" and not inspector.has_schema(self.location.schema):
                conn.execute(sa.schema.CreateSchema(self.location.schema, if_not_exists=True))
            self.marks.create(conn, checkfirst=True)
            self.table.create(conn, checkfirst=True)

    def _owned(self, conn: sa.Connection) -> None:
        found = conn.execute(sa.select(self.marks.c.state_id).where(self.marks.c.key == self.key)).scalar()
        if found is not None and found != self.state_id:
            raise SnapshotError(f"{self.location.shown} belongs to another cohortsync state database "
                                f"({found[:8]}…): it is not replaced")

    def drop(self) -> None:
        """The snapshot and its mark, gone (its members are kept elsewhere now, or nowhere)."""
        with self._errors("drop"), self.engine.begin() as conn:
            if sa.inspect(conn).has_table(self.marks.name, schema=self.location.schema):
                conn.execute(self.marks.delete().where(self.marks.c.key == self.key,
                                                       self.marks.c.state_id == self.state_id))
            self.table.drop(conn, checkfirst=True)

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """The driver's and SQLAlchemy's errors as SnapshotError, with the grant a refusal asks for."""
        try:
            yield
        except SnapshotError:
            raise
        except (SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error) as exc:
            message = short_message(exc)
            hint = ""
            if _denied(message):
                hint = f"; cohortsync needs to create and write tables in one schema: {grant_hint(self.dialect, self.location.schema)}"
            raise SnapshotError(f"cannot {doing} the snapshot {self.location.shown}: {message}{hint}") from exc


def _expected(found: Found, known: SnapshotMark, pending: Callable[[], set[str]], location: Location,
              adopt: str) -> SnapshotMark:
    """Which mark the rows must match: this state's, or the warehouse's when it is one write ahead of it
    and every uid of that write is still pending here."""
    if found.mark.generation == known.generation:
        if found.mark != known:
            raise SnapshotError(f"{location.shown}: its mark ({found.mark.count:,} rows, checksum {found.mark.checksum}) "
                                f"differs from this state's ({known.count:,}, {known.checksum}) at the same generation "
                                f"{known.generation}: the marks table was edited")
        return known
    ahead = found.mark.generation == known.generation + 1 and found.last_action in (Action.ADD, Action.REMOVE, CLAIM)
    if ahead and set(found.last_uids) <= pending():
        return found.mark
    raise SnapshotError(f"{location.shown} is at generation {found.mark.generation}, this state expects "
                        f"{known.generation}: restored from a backup, or written past this state; no diff is made "
                        f"against it (`{adopt}` takes it as it stands, then `apply --resync`)")


def _denied(message: str) -> bool:
    text = message.lower()
    return any(word in text for word in ("permission denied", "access denied", "insufficient privilege",
                                         "not authorized", "command denied"))


def engine_of(engines: Any, location: Location) -> Engine:
    """The engine of the connection a snapshot lives on, or a SnapshotError naming the missing connection."""
    try:
        return engines.get(location.connection)
    except BadUrl as exc:
        raise SnapshotError(f"connection {location.connection!r}: {exc}") from None
    except KeyError:
        raise SnapshotError(f"its members are kept in the snapshot {location.shown}, and the config no longer "
                            f"names the connection {location.connection!r}: put it back to read or move them") from None
