"""The state database: what MoEngage acknowledged, per cohort, and the history of runs.

SQLAlchemy Core on any URL; SQLite (WAL) by default, PostgreSQL for HA. It records only what a
200 confirmed, one transaction per batch, so a crash loses at most the batch in flight. Member
uids sort in code-point order on every backend (binary collation), as the merge diff needs.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from reconciler.sources.cursors import streaming_cursor
from reconciler.common.errors import StateError, short_message
from reconciler.sources.ordering import OutOfOrder, checked

SCHEMA_VERSION = 2
READ_ROWS = 20_000  # members fetched per round trip
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}  # DBAPI paramstyle -> positional mark

metadata = sa.MetaData()
_uid = sa.String(512).with_variant(sa.String(512, collation="C"), "postgresql")

meta = sa.Table("cs_meta", metadata, sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.Text))
cohorts = sa.Table(
    "cs_cohorts", metadata,
    sa.Column("id", sa.String(128), primary_key=True),
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
    sa.Column("cohort_id", sa.String(128), primary_key=True),
    sa.Column("uid", _uid, primary_key=True),
)
runs = sa.Table(
    "cs_runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(32), nullable=False, index=True),
    sa.Column("cohort_id", sa.String(128), nullable=False, index=True),
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
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Column("error", sa.Text),
)
leases = sa.Table(
    "cs_leases", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

# version -> statements that bring the previous version up to it; append, never edit
MIGRATIONS: dict[int, list[str]] = {
    2: ["INSERT INTO cs_meta (key, value) VALUES ('state_version', '0')"],  # saved plans check it
}


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
                    conn.exec_driver_sql(statement)
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
        with self._connect() as conn:
            row = conn.execute(sa.select(cohorts).where(cohorts.c.id == cohort_id)).first()
        return CohortRecord(**row._mapping) if row else None

    def cohorts(self) -> dict[str, CohortRecord]:
        with self._connect() as conn:
            rows = conn.execute(sa.select(cohorts).order_by(cohorts.c.id)).all()
        return {r.id: CohortRecord(**r._mapping) for r in rows}

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

    def runs(self, cohort_id: str | None = None, limit: int = 20) -> list[RunRecord]:
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if cohort_id:
            query = query.where(runs.c.cohort_id == cohort_id)
        with self._connect() as conn:
            rows = conn.execute(query).all()
        return [RunRecord(**{k: v for k, v in r._mapping.items() if k != "id"}) for r in rows]

    # --- writes ------------------------------------------------------------------------
    def commit_batch(self, cohort_id: str, name: str, description: str | None, action: str, uids: Iterable[str]) -> None:
        """Record one acknowledged batch, members and count together, in one transaction."""
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
    ) -> None:
        """The end of a cohort's run: its status, and the digests it converged on."""
        now = time.time()
        values: dict[str, Any] = {"last_run_at": now, "last_status": status, "last_error": error, "converged": converged}
        if converged:
            values.update(spec_digest=spec_digest, source_digest=source_digest, last_success_at=now, name=name,
                          description=description)
        with self._begin() as conn:
            self._ensure_cohort(conn, cohort_id, name, description)
            conn.execute(cohorts.update().where(cohorts.c.id == cohort_id).values(**values))

    def record_run(self, run: RunRecord) -> None:
        with self._begin() as conn:
            conn.execute(runs.insert().values(**vars(run)))

    def forget(self, cohort_id: str) -> None:
        """Drop an emptied orphan's record once nothing of it remains in MoEngage."""
        with self._begin() as conn:
            conn.execute(members.delete().where(members.c.cohort_id == cohort_id))
            conn.execute(cohorts.delete().where(cohorts.c.id == cohort_id))
            _bump_state_version(conn)

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

