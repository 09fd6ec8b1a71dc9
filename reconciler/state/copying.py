"""Moving the whole state to another database (SQLite to PostgreSQL for HA, and back).

Every table is streamed in pieces into one transaction on the target, so memory stays bounded
whatever the cohort sizes and a copy that fails half-way leaves the target as it was. Members
go by COPY on PostgreSQL (about ten times faster than inserts) and by the driver's executemany
elsewhere. The copy is verified at the end: row counts per table and, per cohort, the count and
a SHA-256 of the members in code-point order, read back from the target. Leases are not copied:
a lease belongs to a running process, not to the state.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import sqlalchemy as sa

from reconciler.common.errors import StateError
from reconciler.state.schema import batches, changelog, cohorts, members, meta, refused, runs
from reconciler.state.store import _PLACEHOLDERS, StateStore, synced_in_order

ROWS = 500  # rows of the smaller tables per piece (changelog and pending rows carry uid blobs)
TABLES = (cohorts, batches, runs, changelog, refused)  # copied row by row; members and meta have their own way
SERIAL = (batches, runs, changelog)  # tables whose ids are copied: PostgreSQL's sequences must follow


@dataclass
class CopyReport:
    """What was copied, and every difference the verification found (none: the copy is exact)."""

    rows: dict[str, int] = field(default_factory=dict)
    members: dict[str, tuple[int, str]] = field(default_factory=dict)  # cohort -> (count, digest)
    problems: list[str] = field(default_factory=list)


def copy_state(source: StateStore, target: StateStore, *, force: bool = False,
               progress: Callable[[str, int], None] = lambda what, n: None) -> CopyReport:
    """Copy every table of `source` into `target`; refuse a target that holds anything, unless forced."""
    held = _held(target)
    if held and not force:
        raise StateError(f"the target state is not empty ({held}): pass --force to replace it")
    report = CopyReport()
    with target.engine.begin() as conn:
        for table in (refused, changelog, runs, batches, members, cohorts):
            conn.execute(table.delete())
        for table in TABLES:
            report.rows[table.name] = _copy_rows(source, conn, table, progress)
            if table is cohorts:
                for cohort_id in _ids(source):
                    report.members[cohort_id] = _copy_members(source, conn, cohort_id, progress)
        for key, value in _meta(source):
            conn.execute(meta.delete().where(meta.c.key == key))
            conn.execute(meta.insert().values(key=key, value=value))
        if conn.dialect.name == "postgresql":
            for table in SERIAL:
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                     f"COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {table.name}")
    report.problems = verify(report, target)
    return report


def verify(report: CopyReport, target: StateStore) -> list[str]:
    """Counts per table and the members' count and digest per cohort, read back from the target."""
    problems = []
    with target.engine.connect() as conn:
        for name, count in report.rows.items():
            found = conn.execute(sa.select(sa.func.count()).select_from(sa.table(name))).scalar_one()
            if found != count:
                problems.append(f"{name}: {count:,} rows copied, {found:,} in the target")
    for cohort_id, expected in report.members.items():
        found = digest(synced_in_order(target, cohort_id))
        if found != expected:
            problems.append(f"members of {cohort_id}: {expected[0]:,} copied (sha256 {expected[1][:12]}), "
                            f"{found[0]:,} in the target (sha256 {found[1][:12]})")
    return problems


def digest(chunks: Iterator[list[str]]) -> tuple[int, str]:
    """(count, SHA-256 of the uids newline-terminated) of a sorted stream of chunks."""
    sha, count = hashlib.sha256(), 0
    for chunk in chunks:
        sha.update(("\n".join(chunk) + "\n").encode("utf-8"))
        count += len(chunk)
    return count, sha.hexdigest()


def _held(store: StateStore) -> str:
    """What a state already holds, as text ("" when empty)."""
    with store.engine.connect() as conn:
        counts = {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                  for t in (cohorts, members, batches, runs, changelog, refused)}
    return ", ".join(f"{n:,} rows in {name}" for name, n in counts.items() if n)


def _ids(store: StateStore) -> list[str]:
    """Every cohort with a record or members (members without a record are copied too: `state check` reports them)."""
    with store.engine.connect() as conn:
        return sorted(set(conn.execute(sa.select(cohorts.c.id)).scalars())
                      | set(conn.execute(sa.select(members.c.cohort_id).distinct()).scalars()))


def _meta(store: StateStore) -> list[tuple[str, str]]:
    with store.engine.connect() as conn:
        return [(k, v) for k, v in conn.execute(sa.select(meta.c.key, meta.c.value))]


def _copy_rows(source: StateStore, conn: sa.Connection, table: sa.Table,
               progress: Callable[[str, int], None]) -> int:
    copied = 0
    with source.engine.connect() as src:
        result = src.execution_options(stream_results=True, yield_per=ROWS).execute(sa.select(table))
        for rows in result.partitions():
            conn.execute(table.insert(), [dict(r._mapping) for r in rows])
            copied += len(rows)
            progress(table.name, len(rows))
    return copied


def _copy_members(source: StateStore, conn: sa.Connection, cohort_id: str,
                  progress: Callable[[str, int], None]) -> tuple[int, str]:
    """Stream one cohort's members into the target; returns (count, digest) of what was read."""
    sha, count = hashlib.sha256(), 0
    writer = _copy_writer(conn) if conn.dialect.name == "postgresql" else None
    for chunk in synced_in_order(source, cohort_id):
        sha.update(("\n".join(chunk) + "\n").encode("utf-8"))
        count += len(chunk)
        if writer is not None:
            writer(cohort_id, chunk)
        else:
            mark = _PLACEHOLDERS[conn.dialect.paramstyle]
            conn.exec_driver_sql(f"INSERT INTO cs_members (cohort_id, uid) VALUES ({mark}, {mark})",
                                 [(cohort_id, u) for u in chunk])
        progress("cs_members", len(chunk))
    return count, sha.hexdigest()


def _copy_writer(conn: sa.Connection) -> Callable[[str, list[str]], None]:
    """COPY rows into cs_members on the target's own PostgreSQL connection (same transaction)."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]

    def write(cohort_id: str, uids: list[str]) -> None:
        text = "".join(f"{cohort_id}\t{u}\n" for u in uids)
        if "\\" in text:  # COPY's text format escapes backslashes (uids hold no tab or newline: sources check)
            text = text.replace("\\", "\\\\")
        with cursor.copy("COPY cs_members (cohort_id, uid) FROM STDIN") as copy:
            copy.write(text)
    return write
