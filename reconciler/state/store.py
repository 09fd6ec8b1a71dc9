"""The state database: per cohort, what MoEngage has, lacks or might have; and the runs.

SQLAlchemy Core on any URL; SQLite (WAL) by default, PostgreSQL for HA. `cs_members` holds the
members MoEngage confirmed. Every batch is written to `cs_batches` as pending before it is sent
and settled when its answer comes (one transaction each): a 200 moves its uids into or out of
`cs_members`, a definite refusal drops it, and a batch whose answer never came (a timeout, a
dropped connection, a crash or SIGKILL mid-flight) stays, so its uids are known to be uncertain
and the next plan re-sends them. Each uid is pending in at most one batch of its cohort: a new
batch takes over the uids it re-sends from older ones in the same transaction. Member uids sort
in code-point order on every backend (binary collation), as the merge diff needs.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from reconciler.sources.cursors import streaming_cursor
from reconciler.common.errors import StateError, short_message
from reconciler.state import fencing
from reconciler.state.fencing import Fence
from reconciler.settings.model import DEFAULT_WORKSPACE
from reconciler.sources.ordering import OutOfOrder, checked

SCHEMA_VERSION = 4
READ_ROWS = 20_000  # members fetched per round trip
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}  # DBAPI paramstyle -> positional mark

KEY_LENGTH = 200  # a workspace name, ":" and a cohort id
WORKSPACE_SEPARATOR = ":"  # in neither a workspace name nor a cohort id


def sync_key(workspace: str, cohort_id: str) -> str:
    """The state's name for one cohort in one workspace: two workspaces are two independent syncs.

    In the workspace `default` it is the cohort id itself, so a state written before workspaces
    existed (10M members, say) needs no rewrite; elsewhere `workspace:cohort_id`.
    """
    return cohort_id if workspace == DEFAULT_WORKSPACE else f"{workspace}{WORKSPACE_SEPARATOR}{cohort_id}"


def split_key(key: str) -> tuple[str, str]:
    """(workspace, cohort id) of a sync_key."""
    workspace, sep, cohort_id = key.partition(WORKSPACE_SEPARATOR)
    return (workspace, cohort_id) if sep else (DEFAULT_WORKSPACE, key)


metadata = sa.MetaData()
_uid = sa.String(512).with_variant(sa.String(512, collation="C"), "postgresql")

meta = sa.Table("cs_meta", metadata, sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text))
cohorts = sa.Table(
    "cs_cohorts", metadata,
    sa.Column("id", sa.String(KEY_LENGTH), primary_key=True),  # sync_key(workspace, cohort id)
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("description", sa.Text),
    sa.Column("spec_digest", sa.String(64)),
    sa.Column("source_digest", sa.String(64)),
    sa.Column("synced_count", sa.BigInteger, nullable=False, default=0),
    sa.Column("converged", sa.Boolean, nullable=False, default=False),
    sa.Column("last_run_at", sa.Float),
    sa.Column("last_success_at", sa.Float),
    sa.Column("last_status", sa.String(32)),
    sa.Column("last_error", sa.Text),
)
members = sa.Table(
    "cs_members", metadata,
    sa.Column("cohort_id", sa.String(KEY_LENGTH), primary_key=True),
    sa.Column("uid", _uid, primary_key=True),
)
runs = sa.Table(
    "cs_runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), nullable=False, index=True),
    sa.Column("cohort_id", sa.String(KEY_LENGTH), nullable=False, index=True),
    sa.Column("trigger", sa.String(32), nullable=False, default="cli"),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("planned_adds", sa.BigInteger, nullable=False, default=0),
    sa.Column("planned_removes", sa.BigInteger, nullable=False, default=0),
    sa.Column("sent_adds", sa.BigInteger, nullable=False, default=0),
    sa.Column("sent_removes", sa.BigInteger, nullable=False, default=0),
    sa.Column("failed", sa.BigInteger, nullable=False, default=0),
    sa.Column("requests", sa.Integer, nullable=False, default=0),
    sa.Column("bytes", sa.BigInteger, nullable=False, default=0),
    sa.Column("retries", sa.Integer, nullable=False, default=0),
    sa.Column("throttled", sa.Integer, nullable=False, default=0),
    sa.Column("unconfirmed", sa.BigInteger, nullable=False, default=0),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Column("error", sa.Text),
)
batches = sa.Table(  # pending: sent (or about to be) with no answer yet; see the module docstring
    "cs_batches", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("cohort_id", sa.String(KEY_LENGTH), nullable=False, index=True),
    sa.Column("action", sa.String(16), nullable=False),  # add_members, remove_members, or unknown (refused, but
    sa.Column("count", sa.Integer, nullable=False),      # it had taken over uids that were already uncertain)
    sa.Column("uids", sa.LargeBinary, nullable=False),  # ascending, newline-joined UTF-8: one row, not one per uid
    sa.Column("carried", sa.LargeBinary),  # the uids it took over from older pending batches
    sa.Column("run_id", sa.String(32)),
    sa.Column("sent_at", sa.Float, nullable=False),
)
changelog = sa.Table(  # one row per settled batch: who entered or left, when, in which run, and why
    "cs_changelog", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("cohort_id", sa.String(KEY_LENGTH), nullable=False, index=True),  # sync_key(workspace, cohort id)
    sa.Column("action", sa.String(16), nullable=False),  # add_members or remove_members
    sa.Column("kind", sa.String(16), nullable=False),  # change or resend (no member write), resync_ before either
    sa.Column("run_id", sa.String(32)),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("spec_digest", sa.String(64)),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("uids", sa.LargeBinary, nullable=False),  # ascending, newline-joined (as cs_batches); empty: count only
)
LEASE_NAME_LENGTH = 255  # "cohort:" and a sync_key
leases = sa.Table(  # the writer lease (SQLite), and on PostgreSQL one per cohort and one per replica: leases.py
    "cs_leases", metadata,
    sa.Column("name", sa.String(LEASE_NAME_LENGTH), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),  # "" when free
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),  # epoch seconds by the database's clock
    sa.Column("token", sa.BigInteger, nullable=False, default=0),  # grows with every new holder: the fence
    sa.Column("busy", sa.Boolean, nullable=False, default=False),  # the holder is reconciling it now
    sa.Column("wanted", sa.Text),  # reasons another process asked the holder to reconcile it (a forwarded trigger)
)
rate_slots = sa.Table(  # the shared rate budget's places, per MoEngage account: budget.py
    "cs_rate_slots", metadata,
    sa.Column("account", sa.String(255), primary_key=True),
    sa.Column("slot", sa.Integer, primary_key=True),
    sa.Column("stamp", sa.Float),  # when its last request's answer came (database clock); null while in flight
    sa.Column("taken_at", sa.Float),  # when it was taken for the request in flight
)

def _add_column(table: str, column: str, ddl: str) -> Callable[[sa.Connection], None]:
    def step(conn: sa.Connection) -> None:
        if column not in {c["name"] for c in sa.inspect(conn).get_columns(table)}:
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {ddl}")
    return step


def _widen(table: str, column: str, length: int) -> Callable[[sa.Connection], None]:
    """A longer VARCHAR: metadata only on PostgreSQL; SQLite does not enforce lengths."""
    def step(conn: sa.Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE VARCHAR({length})")
    return step


# version -> steps that bring the previous version up to it (new tables come from create_all);
# append, never edit
MIGRATIONS: dict[int, list[str | Callable[[sa.Connection], None]]] = {
    2: ["INSERT INTO cs_meta (key, value) VALUES ('state_version', '0')"],  # saved plans check it
    3: [_add_column("cs_runs", "unconfirmed", "BIGINT NOT NULL DEFAULT 0"),  # and the cs_batches table
        _widen("cs_cohorts", "id", KEY_LENGTH), _widen("cs_members", "cohort_id", KEY_LENGTH),
        _widen("cs_runs", "cohort_id", KEY_LENGTH)],
    # the cs_changelog table (made by create_all), and per-cohort leases with fencing tokens (and the
    # cs_rate_slots table); each step looks before it acts, so it may run under another number
    4: [_add_column("cs_leases", "token", "BIGINT NOT NULL DEFAULT 0"),
        _add_column("cs_leases", "busy", "BOOLEAN NOT NULL DEFAULT FALSE"),
        _add_column("cs_leases", "wanted", "TEXT"), _widen("cs_leases", "name", LEASE_NAME_LENGTH)],
}
UNKNOWN = "unknown"  # a pending batch's action once only its taken-over uids remain uncertain


@dataclass(frozen=True)
class CohortRecord:
    id: str
    name: str
    description: str | None
    spec_digest: str | None
    source_digest: str | None
    synced_count: int
    converged: bool
    last_run_at: float | None
    last_success_at: float | None
    last_status: str | None
    last_error: str | None
    unconfirmed: int = 0  # uids of batches whose answer never came
    unconfirmed_since: float | None = None  # when the oldest of those batches was sent

    @property
    def workspace(self) -> str:
        return split_key(self.id)[0]

    @property
    def cohort(self) -> str:
        """The cohort id (`id` is the state's key, which names the workspace too)."""
        return split_key(self.id)[1]


@dataclass(frozen=True)
class PendingBatch:
    """A batch written down before it was sent; `uids` ascending."""

    id: int
    cohort_id: str
    action: str
    uids: list[str]
    carried: list[str]
    run_id: str | None
    sent_at: float


@dataclass(frozen=True)
class ChangeNote:
    """What the changelog records of a settled batch besides its uids: why it was sent."""

    run_id: str | None
    spec_digest: str | None
    kind: str = "change"  # change (members written) or resend (no member write); "resync_" before either in a resync
    with_uids: bool = True  # False: count only (a resync's re-adds of members: the whole cohort each time)


@dataclass(frozen=True)
class ChangeEntry:
    """One settled batch of one cohort, as the changelog keeps it; `uids` ascending (empty: count only)."""

    id: int
    cohort_id: str
    action: str
    kind: str
    run_id: str | None
    at: float
    spec_digest: str | None
    count: int
    uids: list[str]


@dataclass
class RunRecord:
    """One cohort's part of one run: what was planned, sent and failed."""

    run_id: str
    cohort_id: str
    status: str
    started_at: float
    trigger: str = "cli"
    planned_adds: int = 0
    planned_removes: int = 0
    sent_adds: int = 0
    sent_removes: int = 0
    failed: int = 0
    requests: int = 0
    bytes: int = 0
    retries: int = 0
    throttled: int = 0
    unconfirmed: int = 0  # uids of a batch sent with no answer
    finished_at: float | None = None
    error: str | None = None


def make_engine(url: str) -> Engine:
    """An engine for the state URL; SQLite gets WAL, a busy timeout and its folder created."""
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise StateError(f"state_url is not a database URL: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": 30})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(parsed, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def synced_in_order(store: "StateStore", cohort_id: str) -> Iterator[list[str]]:
    """A cohort's members as the merge diff needs them: strictly ascending, or a StateError."""
    try:
        yield from checked(store.synced_chunks(cohort_id))
    except OutOfOrder as exc:
        raise StateError(f"members of {cohort_id} do not come back in code-point order ({exc}): "
                         "the state database's uid column needs a binary collation") from exc


class StateStore:
    """The only code that reads or writes the state database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> "StateStore":
        store = cls(make_engine(url))
        store.migrate()
        return store

    def close(self) -> None:
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"StateStore({self.engine.url.render_as_string(hide_password=True)!r})"

    # --- schema ------------------------------------------------------------------------
    def migrate(self) -> None:
        """Create the schema, or bring an older one up to SCHEMA_VERSION."""
        with self._begin() as conn:
            metadata.create_all(conn, checkfirst=True)
            row = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).first()
            version = int(row[0]) if row else 0
            if version > SCHEMA_VERSION:
                raise StateError(f"the state database has schema version {version}, newer than this "
                                 f"cohortsync understands ({SCHEMA_VERSION}): upgrade cohortsync")
            for step in range(version + 1, SCHEMA_VERSION + 1) if version else ():
                for statement in MIGRATIONS.get(step, []):
                    conn.exec_driver_sql(statement) if isinstance(statement, str) else statement(conn)
            if version == 0:
                conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                conn.execute(meta.insert().values(key="state_version", value="0"))
            elif version < SCHEMA_VERSION:
                conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))

    def schema_version(self) -> int:
        with self._connect() as conn:
            return int(conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).scalar_one())

    def state_version(self) -> int:
        """Grows with every change to the members: a saved plan is stale once it moved."""
        with self._connect() as conn:
            return int(conn.execute(sa.select(meta.c.value).where(meta.c.key == "state_version")).scalar_one())

    # --- reads -------------------------------------------------------------------------
    def cohort(self, cohort_id: str) -> CohortRecord | None:
        return self._records(cohorts.c.id == cohort_id).get(cohort_id)

    def cohorts(self) -> dict[str, CohortRecord]:
        return self._records(sa.true())

    def _records(self, where: Any) -> dict[str, CohortRecord]:
        """Cohort rows with their unconfirmed counts (pending batches are disjoint, so a sum is exact)."""
        pending = (sa.select(batches.c.cohort_id, sa.func.sum(batches.c.count), sa.func.min(batches.c.sent_at))
                   .group_by(batches.c.cohort_id))
        with self._connect() as conn:
            rows = conn.execute(sa.select(cohorts).where(where).order_by(cohorts.c.id)).all()
            unconfirmed = {cid: (int(n), since) for cid, n, since in conn.execute(pending)}
        return {r.id: CohortRecord(**r._mapping, unconfirmed=unconfirmed.get(r.id, (0, None))[0],
                                   unconfirmed_since=unconfirmed.get(r.id, (0, None))[1]) for r in rows}

    def pending(self, cohort_id: str) -> list[PendingBatch]:
        """The cohort's batches whose answer never came, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(sa.select(batches).where(batches.c.cohort_id == cohort_id).order_by(batches.c.id)).all()
        return [_pending(r) for r in rows]

    def unconfirmed_uids(self, cohort_id: str) -> list[str]:
        """Every uid MoEngage might have or lack, ascending (held in memory: a batch or so per failed run)."""
        return sorted(u for batch in self.pending(cohort_id) for u in batch.uids)

    def present_among(self, cohort_id: str, uids: list[str]) -> set[str]:
        """Which of these uids the state records as members."""
        found: set[str] = set()
        with self._connect() as conn:
            for i in range(0, len(uids), 500):
                found.update(conn.execute(sa.select(members.c.uid).where(
                    members.c.cohort_id == cohort_id, members.c.uid.in_(uids[i:i + 500]))).scalars())
        return found

    def synced_chunks(self, cohort_id: str) -> Iterator[list[str]]:
        """The acknowledged members, sorted in code-point order, streamed in lists."""
        query = sa.select(members.c.uid).where(members.c.cohort_id == cohort_id).order_by(members.c.uid)
        compiled = query.compile(dialect=self.engine.dialect)
        params: Any = ([compiled.params[k] for k in compiled.positiontup or []] if compiled.positional
                       else compiled.params)
        try:
            raw = self.engine.raw_connection()  # the driver's own cursor: ten million rows without Row objects
        except SQLAlchemyError as exc:
            raise StateError(f"cannot read members of {cohort_id}: {short_message(exc)}") from exc
        driver_error = self.engine.dialect.loaded_dbapi.Error  # every DBAPI driver's own base class
        try:
            cursor = streaming_cursor(raw.driver_connection, self.engine.dialect.name, "cohortsync_members")
            cursor.execute(str(compiled), params)
            while rows := cursor.fetchmany(READ_ROWS):
                yield [row[0] for row in rows]
            cursor.close()
        except driver_error as exc:
            raise StateError(f"cannot read members of {cohort_id}: {short_message(exc)}") from exc
        finally:
            raw.rollback()
            raw.close()

    def count_members(self, cohort_id: str) -> int:
        with self._connect() as conn:
            return int(conn.execute(
                sa.select(sa.func.count()).select_from(members).where(members.c.cohort_id == cohort_id)).scalar_one())

    def runs(self, cohort_id: str | None = None, limit: int = 20, workspaces: Iterable[str] = ()) -> list[RunRecord]:
        """The latest runs, newest first: of one cohort (in every workspace, or those named), or of all."""
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        chosen = list(workspaces)
        if cohort_id and chosen:
            query = query.where(runs.c.cohort_id.in_([sync_key(w, cohort_id) for w in chosen]))
        elif cohort_id:
            query = query.where(sa.or_(runs.c.cohort_id == cohort_id, runs.c.cohort_id.like(
                f"%{WORKSPACE_SEPARATOR}{_literal(cohort_id)}", escape="\\")))
        elif chosen:
            query = query.where(sa.or_(*[_in_workspace(runs.c.cohort_id, w) for w in chosen]))
        with self._connect() as conn:
            rows = conn.execute(query).all()
        return [RunRecord(**{k: v for k, v in r._mapping.items() if k != "id"}) for r in rows]

    def last_changes(self) -> dict[str, RunRecord]:
        """Each cohort's newest run that sent something, in one query: the status page's "last change"."""
        sent = runs.c.sent_adds + runs.c.sent_removes > 0
        newest = sa.select(sa.func.max(runs.c.id)).where(sent).group_by(runs.c.cohort_id).scalar_subquery()
        with self._connect() as conn:
            rows = conn.execute(sa.select(runs).where(runs.c.id.in_(newest))).all()
        return {r.cohort_id: RunRecord(**{k: v for k, v in r._mapping.items() if k != "id"}) for r in rows}

    # --- writes ------------------------------------------------------------------------
    def begin_batch(self, cohort_id: str, name: str, description: str | None, action: str, uids: list[str],
                    run_id: str | None = None, *, take_over: bool = False, fence: Fence | None = None) -> int:
        """Write a batch down as pending before it is sent; returns its id for settling.

        With `take_over` (the plan re-sends uncertain uids), the uids this batch re-sends leave
        the older pending batches in the same transaction: a uid is pending in one batch at most.
        """
        with self._begin() as conn:
            fencing.check(conn, leases, fence)
            self._ensure_cohort(conn, cohort_id, name, description)
            carried = self._take_over(conn, cohort_id, set(uids)) if take_over else []
            batch_id = conn.execute(batches.insert().values(
                cohort_id=cohort_id, action=action, count=len(uids), uids=_encode(uids),
                carried=_encode(sorted(carried)) if carried else None, run_id=run_id, sent_at=time.time(),
            )).inserted_primary_key[0]
            conn.execute(cohorts.update().where(cohorts.c.id == cohort_id).values(converged=False))
            _bump_state_version(conn)
        return int(batch_id)

    def _take_over(self, conn: sa.Connection, cohort_id: str, uids: set[str]) -> list[str]:
        taken: list[str] = []
        for row in conn.execute(sa.select(batches).where(batches.c.cohort_id == cohort_id)).all():
            batch = _pending(row)
            if any(u in uids for u in batch.uids):
                taken.extend(u for u in batch.uids if u in uids)
                _shrink(conn, batch, [u for u in batch.uids if u not in uids])
        return taken

    def settle_batch(self, batch_id: int, cohort_id: str, action: str, uids: list[str], *,
                     remaining: list[str] | None = None, write_members: bool = True,
                     note: ChangeNote | None = None, fence: Fence | None = None) -> None:
        """A 200 for `uids` (the whole batch, or one part of a split one): members, the pending
        record and the changelog (with `note`) change together, in one transaction; with a
        `fence`, only while the cohort's lease is still this writer's.

        `write_members` is False for a re-sent batch whose uids the members table already has
        right (a re-add of a member, a re-remove of a non-member): only the pending record goes.
        """
        with self._begin() as conn:
            fencing.check(conn, leases, fence)
            if note is not None and uids:
                conn.execute(changelog.insert().values(
                    cohort_id=cohort_id, action=action, kind=note.kind, run_id=note.run_id, at=time.time(),
                    spec_digest=note.spec_digest, count=len(uids), uids=_encode(sorted(uids)) if note.with_uids else b""))
            if write_members and uids:
                self._write_members(conn, action, [(cohort_id, u) for u in uids])
                delta = len(uids) if action == "add_members" else -len(uids)
                conn.execute(cohorts.update().where(cohorts.c.id == cohort_id).values(
                    synced_count=cohorts.c.synced_count + delta, last_run_at=time.time()))
            if remaining:
                row = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).first()
                if row is not None:
                    _shrink(conn, _pending(row), remaining)
            else:
                conn.execute(batches.delete().where(batches.c.id == batch_id))
            _bump_state_version(conn)

    def refuse_batch(self, batch_id: int, fence: Fence | None = None) -> None:
        """A definite refusal (400, 401, 403, 413, 415, 429): MoEngage did not apply the batch.

        The uids it had taken over from older unanswered batches stay uncertain.
        """
        with self._begin() as conn:
            fencing.check(conn, leases, fence)
            row = conn.execute(sa.select(batches).where(batches.c.id == batch_id)).first()
            if row is None:
                return
            batch = _pending(row)
            if batch.carried:
                conn.execute(batches.update().where(batches.c.id == batch_id).values(
                    action=UNKNOWN, uids=_encode(batch.carried), count=len(batch.carried), carried=None))
            else:
                conn.execute(batches.delete().where(batches.c.id == batch_id))
            _bump_state_version(conn)

    def commit_batch(self, cohort_id: str, name: str, description: str | None, action: str, uids: Iterable[str]) -> None:
        """Record a batch MoEngage acknowledged, with no pending record (state copies, tests, benchmarks)."""
        rows = [(cohort_id, u) for u in uids]
        if not rows:
            return
        delta = len(rows) if action == "add_members" else -len(rows)
        with self._begin() as conn:
            self._ensure_cohort(conn, cohort_id, name, description)
            self._write_members(conn, action, rows)
            conn.execute(cohorts.update().where(cohorts.c.id == cohort_id).values(
                synced_count=cohorts.c.synced_count + delta, converged=False, last_run_at=time.time()))
            _bump_state_version(conn)

    def _write_members(self, conn: sa.Connection, action: str, rows: list[tuple[str, str]]) -> None:
        """Insert or delete (cohort_id, uid) rows with the driver's own executemany.

        Through SQLAlchemy's compiled statements each row's parameters are processed in Python,
        about two thirds of a 5,500-uid batch's commit; the driver takes the tuples as they are.
        """
        mark = _PLACEHOLDERS.get(self.engine.dialect.paramstyle)
        if mark is None:  # a paramstyle we do not write by hand: let SQLAlchemy compile it
            statement = (members.insert() if action == "add_members" else members.delete().where(
                members.c.cohort_id == sa.bindparam("cohort_id"), members.c.uid == sa.bindparam("uid")))
            conn.execute(statement, [{"cohort_id": c, "uid": u} for c, u in rows])
        elif action == "add_members":
            conn.exec_driver_sql(f"INSERT INTO cs_members (cohort_id, uid) VALUES ({mark}, {mark})", rows)
        else:
            conn.exec_driver_sql(f"DELETE FROM cs_members WHERE cohort_id = {mark} AND uid = {mark}", rows)

    def record_outcome(
        self, cohort_id: str, name: str, description: str | None, *, status: str, error: str | None = None,
        spec_digest: str | None = None, source_digest: str | None = None, converged: bool = False,
        fence: Fence | None = None,
    ) -> None:
        """The end of a cohort's run: its status, and the digests it converged on."""
        now = time.time()
        values: dict[str, Any] = {"last_run_at": now, "last_status": str(status), "last_error": error,
                                  "converged": converged}
        if converged:
            values.update(spec_digest=spec_digest, source_digest=source_digest, last_success_at=now, name=name,
                          description=description)
        with self._begin() as conn:
            fencing.check(conn, leases, fence)
            self._ensure_cohort(conn, cohort_id, name, description)
            conn.execute(cohorts.update().where(cohorts.c.id == cohort_id).values(**values))

    def record_run(self, run: RunRecord, fence: Fence | None = None) -> None:
        with self._begin() as conn:
            fencing.check(conn, leases, fence)
            conn.execute(runs.insert().values(**{**vars(run), "status": str(run.status)}))

    def forget(self, cohort_id: str, fence: Fence | None = None) -> None:
        """Drop an emptied orphan's record once nothing of it remains in MoEngage."""
        with self._begin() as conn:
            fencing.check(conn, leases, fence)
            conn.execute(members.delete().where(members.c.cohort_id == cohort_id))
            conn.execute(batches.delete().where(batches.c.cohort_id == cohort_id))
            conn.execute(cohorts.delete().where(cohorts.c.id == cohort_id))
            _bump_state_version(conn)

    # --- the membership changelog -------------------------------------------------------------
    def changelog(self, cohort_ids: Iterable[str] | None = None, *, run_id: str | None = None,
                  action: str | None = None) -> Iterator[ChangeEntry]:
        """Entries oldest first, streamed (their uid blobs can be large); consume or close it."""
        query = sa.select(changelog).order_by(changelog.c.id)
        if cohort_ids is not None:
            query = query.where(changelog.c.cohort_id.in_(list(cohort_ids)))
        if run_id is not None:
            query = query.where(changelog.c.run_id == run_id)
        if action is not None:
            query = query.where(changelog.c.action == action)
        for row in self._stream(query):
            yield _entry(row, _decode(row.uids))

    def changes_of(self, uid: str, cohort_ids: Iterable[str] | None = None) -> list[ChangeEntry]:
        """The entries that name `uid`, oldest first, found by a bytes search of each blob.

        A rare question (support, audits): the blobs are read, not indexed, so that writing the
        changelog costs one row per batch and not one per uid. The `uids` of each entry found is
        [uid] only; count-only entries (a resync's re-adds) are not searched.
        """
        needle = b"\n" + uid.encode("utf-8") + b"\n"
        query = sa.select(changelog).where(changelog.c.uids != b"").order_by(changelog.c.id)
        if cohort_ids is not None:
            query = query.where(changelog.c.cohort_id.in_(list(cohort_ids)))
        return [_entry(row, [uid]) for row in self._stream(query) if needle in b"\n" + bytes(row.uids) + b"\n"]

    def resyncs(self, cohort_ids: Iterable[str]) -> list[ChangeEntry]:
        """Count-only resync entries (re-adds of every member) of these cohorts, oldest first."""
        query = sa.select(changelog).where(changelog.c.uids == b"", changelog.c.cohort_id.in_(list(cohort_ids)))
        with self._connect() as conn:
            return [_entry(row, []) for row in conn.execute(query.order_by(changelog.c.id))]

    def leavers(self, cohort_id: str) -> Iterator[list[str]]:
        """Every uid the changelog says was removed from the cohort, a batch at a time (not in order overall)."""
        query = sa.select(changelog.c.uids).where(changelog.c.cohort_id == cohort_id,
                                                  changelog.c.action == "remove_members", changelog.c.uids != b"")
        for row in self._stream(query):
            yield _decode(row.uids)

    def prune_changelog(self, before: float, limit: int = 500) -> int:
        """Delete at most `limit` entries older than `before`; the daemon calls it in small steps."""
        with self._begin() as conn:
            ids = conn.execute(sa.select(changelog.c.id).where(changelog.c.at < before)
                               .order_by(changelog.c.id).limit(limit)).scalars().all()
            if ids:
                conn.execute(changelog.delete().where(changelog.c.id.in_(ids)))
        return len(ids)

    def last_resyncs(self) -> dict[str, float]:
        """When each cohort's last resync run started (runs whose trigger is `resync`)."""
        query = (sa.select(runs.c.cohort_id, sa.func.max(runs.c.started_at)).where(runs.c.trigger == "resync")
                 .group_by(runs.c.cohort_id))
        with self._connect() as conn:
            return {cid: at for cid, at in conn.execute(query)}

    def _stream(self, query: Any, rows: int = 200) -> Iterator[Any]:
        with self._connect() as conn:
            for partition in conn.execution_options(stream_results=True, yield_per=rows).execute(query).partitions():
                yield from partition

    def _ensure_cohort(self, conn: sa.Connection, cohort_id: str, name: str, description: str | None) -> None:
        exists = conn.execute(sa.select(cohorts.c.id).where(cohorts.c.id == cohort_id)).first()
        if not exists:
            conn.execute(cohorts.insert().values(id=cohort_id, name=name, description=description,
                                                 synced_count=0, converged=False))

    # --- plumbing ----------------------------------------------------------------------
    def _connect(self) -> "_Wrapped":
        return _Wrapped(self.engine.connect)

    def _begin(self) -> "_Wrapped":
        return _Wrapped(self.engine.begin)


def _in_workspace(column: Any, workspace: str) -> Any:
    if workspace == DEFAULT_WORKSPACE:
        return column.not_like(f"%{WORKSPACE_SEPARATOR}%")
    return column.like(f"{_literal(workspace)}{WORKSPACE_SEPARATOR}%", escape="\\")


def _literal(text: str) -> str:
    """Text matched as itself in a LIKE pattern: ids hold `_`, a wildcard."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _encode(uids: list[str]) -> bytes:
    return "\n".join(uids).encode("utf-8")


def _decode(blob: bytes | None) -> list[str]:
    return bytes(blob).decode("utf-8").split("\n") if blob else []


def _pending(row: Any) -> PendingBatch:
    return PendingBatch(row.id, row.cohort_id, row.action, _decode(row.uids), _decode(row.carried), row.run_id,
                        row.sent_at)


def _entry(row: Any, uids: list[str]) -> ChangeEntry:
    return ChangeEntry(row.id, row.cohort_id, row.action, row.kind, row.run_id, row.at, row.spec_digest, row.count,
                       uids)


def _shrink(conn: sa.Connection, batch: PendingBatch, keep: list[str]) -> None:
    """Leave only `keep` of a pending batch's uids; drop the batch when none are left."""
    if not keep:
        conn.execute(batches.delete().where(batches.c.id == batch.id))
        return
    kept = set(keep)
    carried = [u for u in batch.carried if u in kept]
    conn.execute(batches.update().where(batches.c.id == batch.id).values(
        uids=_encode(keep), count=len(keep), carried=_encode(carried) if carried else None))


def _bump_state_version(conn: sa.Connection) -> None:
    conn.execute(meta.update().where(meta.c.key == "state_version")
                 .values(value=sa.cast(sa.cast(meta.c.value, sa.Integer) + 1, sa.String)))


class _Wrapped:
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

