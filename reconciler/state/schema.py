"""The state database's tables, and how an older schema is brought up to this one.

`cs_members` holds the members MoEngage confirmed; `cs_batches` the batches written down before
they were sent whose answer has not come (see store.py); `cs_changelog` one row per settled batch
(changelog.py); `cs_leases` and `cs_rate_slots` belong to leases.py and budget.py. Member uids
sort in code-point order on every backend (a binary collation), as the merge diff needs.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable

import sqlalchemy as sa

from reconciler.common.errors import StateError
from reconciler.state.keys import KEY_LENGTH

SCHEMA_VERSION = 8

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
    # where the members are kept when not in cs_members: a warehouse snapshot (snapshots/), null here
    sa.Column("snapshot", sa.String(512)),  # "CONNECTION/SCHEMA/TABLE"
    sa.Column("snapshot_gen", sa.BigInteger),  # the snapshot's generation this state has seen written
    sa.Column("snapshot_sum", sa.BigInteger),  # the checksum of its rows then (with synced_count, the row count)
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
batches = sa.Table(  # pending: sent (or about to be) with no answer yet; see store.py
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
refused = sa.Table(  # uids MoEngage refused (a 400 bisected down to them) or that can never be valid: refused.py
    "cs_refused", metadata,
    sa.Column("cohort_id", sa.String(KEY_LENGTH), primary_key=True),  # sync_key(workspace, cohort id)
    sa.Column("digest", sa.String(64), primary_key=True),  # sha256 of the uid: a refused uid may be of any length
    sa.Column("uid", sa.Text, nullable=False),
    sa.Column("presence", sa.String(16), nullable=False),  # the action refused: the uid's desired presence then
    sa.Column("error", sa.Text, nullable=False),  # MoEngage's message (or the local check's reason)
    sa.Column("since", sa.Float, nullable=False),  # first refused
    sa.Column("at", sa.Float, nullable=False),  # last refused
)
triggers = sa.Table(  # one row per cohort a trigger (POST /reconcile) asked for, until its run ends: triggers.py
    "cs_triggers", metadata,
    sa.Column("trigger_id", sa.String(40), primary_key=True),  # the `run` id POST /reconcile answers
    sa.Column("cohort_id", sa.String(KEY_LENGTH), primary_key=True),  # sync_key(workspace, cohort id)
    sa.Column("source", sa.String(32), nullable=False),  # http, github
    sa.Column("state", sa.String(16), nullable=False),  # queued, running, done
    sa.Column("requested_at", sa.Float, nullable=False, index=True),
    sa.Column("attempt", sa.String(40)),  # the worker's chunk that claimed it (running, then done)
    sa.Column("run_id", sa.String(32)),  # the run (cs_runs.run_id) that answered it
    sa.Column("result", sa.String(32)),  # the cohort's outcome: converged, failed, blocked, ...
    sa.Column("adds", sa.BigInteger, nullable=False, default=0),
    sa.Column("removes", sa.BigInteger, nullable=False, default=0),
    sa.Column("unconfirmed", sa.BigInteger, nullable=False, default=0),
    sa.Column("refused", sa.BigInteger, nullable=False, default=0),
    sa.Column("error", sa.Text),
    sa.Column("finished_at", sa.Float),
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
    5: [],  # the cs_refused table (made by create_all): refused uids, kept and not re-sent
    7: [],  # the cs_triggers table (made by create_all): what each POST /reconcile asked for and how it ended
    8: [_add_column("cs_cohorts", "snapshot", "VARCHAR(512)"), _add_column("cs_cohorts", "snapshot_gen", "BIGINT"),
        _add_column("cs_cohorts", "snapshot_sum", "BIGINT")],  # members kept in a warehouse snapshot
}


def migrate(conn: sa.Connection) -> None:
    """Create the schema, or bring an older one up to SCHEMA_VERSION, in the caller's transaction."""
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
    if conn.execute(sa.select(meta.c.value).where(meta.c.key == "state_id")).first() is None:
        # who owns a warehouse snapshot: two state databases must never write the same one
        conn.execute(meta.insert().values(key="state_id", value=uuid.uuid4().hex))


def read_state_id(conn: sa.Connection) -> str:
    """This state database's own id (cs_meta), which its warehouse snapshots are written under."""
    return str(conn.execute(sa.select(meta.c.value).where(meta.c.key == "state_id")).scalar_one())


def read_version(conn: sa.Connection, key: str) -> int:
    """`schema_version` or `state_version` from cs_meta."""
    return int(conn.execute(sa.select(meta.c.value).where(meta.c.key == key)).scalar_one())


def bump_state_version(conn: sa.Connection) -> None:
    """Every change to the members moves the state version: a saved plan made before it is stale."""
    conn.execute(meta.update().where(meta.c.key == "state_version")
                 .values(value=sa.cast(sa.cast(meta.c.value, sa.Integer) + 1, sa.String)))
