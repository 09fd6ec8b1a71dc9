"""The diff inside the warehouse (snapshots/): cohorts on a connection with `snapshots:` keep their members
in a snapshot table there, and only the changes leave the warehouse.

Each test runs on every warehouse cohortsync is tested with: SQLite and DuckDB files, PostgreSQL and
MariaDB (skipped without their servers, mandatory in CI), through the CLI against the emulator.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
import yaml

from reconciler.settings.config import load_settings
from reconciler.common.errors import SnapshotError
from reconciler.snapshots.placement import Snapshots
from reconciler.snapshots.snapshot import Snapshot
from reconciler.snapshots.tables import table_name
from reconciler.sources.reading import Engines
from reconciler.state.store import StateStore
from tests.conftest import postgres_url
from tests.helpers import Repo

UIDS = [f"u{i:05d}" for i in range(1000)]


@dataclass
class Warehouse:
    """A warehouse for a test: where its tables are, and the schema cohortsync keeps snapshots in."""

    url: str
    schema: str
    engine: sa.Engine

    def table(self, name: str, uids: list[object], column: str = "uid", kind: str = "VARCHAR(100)") -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
            conn.exec_driver_sql(f"CREATE TABLE {name} ({column} {kind})")
            if uids:
                conn.execute(sa.text(f"INSERT INTO {name} ({column}) VALUES (:u)"), [{"u": u} for u in uids])

    def execute(self, sql: str, **params: object) -> list[tuple]:
        with self.engine.begin() as conn:
            result = conn.execute(sa.text(sql), params)
            return [tuple(r) for r in result] if result.returns_rows else []

    def snapshot(self, cohort: str) -> str:
        return f"{self.schema}.{table_name(cohort)}"

    def members(self, cohort: str) -> set[str]:
        return {row[0] for row in self.execute(f"SELECT uid FROM {self.snapshot(cohort)}")}


@pytest.fixture(params=["sqlite", "duckdb", pytest.param("postgresql", marks=pytest.mark.postgres), "mariadb"])
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """A warehouse of each dialect; on a server, a fresh schema (database) with its snapshots in `<it>_snap`."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_schema")
        schema, engine = url.rsplit("%3D", 1)[1] + "_snap", sa.create_engine(url)
    elif request.param == "mariadb":
        url = request.getfixturevalue("mariadb_database")
        schema, engine = url.rsplit("/", 1)[1] + "_snap", sa.create_engine(url)
    else:
        url = f"sqlite:///{tmp_path / 'wh.db'}" if request.param == "sqlite" else f"duckdb:///{tmp_path / 'wh.duckdb'}"
        schema = "main" if request.param == "sqlite" else "cohortsync"
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)  # DuckDB: one process holds the file at a time
    yield Warehouse(url, schema, engine)
    engine.dispose()  # before the schema's fixture drops it


def connect(repo: Repo, wh: Warehouse, snapshots: bool = True) -> None:
    """Name the warehouse in the config, with `snapshots:` or without."""
    doc = yaml.safe_load(repo.config.read_text())
    doc["connections"] = {"wh": {"url": wh.url, **({"snapshots": wh.schema} if snapshots else {})}}
    repo.config.write_text(yaml.safe_dump(doc))


def sql_cohort(repo: Repo, cid: str, sql: str, **extra: object) -> None:
    repo.spec(f"{cid}.yaml", yaml.safe_dump({"id": cid, "name": f".{cid}", "source": {"connection": "wh", "sql": sql},
                                             **extra}))


def plan(repo: Repo, capsys: pytest.CaptureFixture) -> dict:
    code, out, _ = repo.run(capsys, "plan", "--format", "json")
    assert code in (0, 1), out
    return {c["id"]: c for c in json.loads(out)["cohorts"]}


def segment(emulator, cid: str) -> set[str]:  # type: ignore[no-untyped-def]
    found = requests.get(f"{emulator.url}/_emulator/cohorts/{cid}", timeout=5)
    return set(found.json().get("members", [])) if found.status_code == 200 else set()


def requests_made(emulator) -> int:  # type: ignore[no-untyped-def]
    return len(requests.get(f"{emulator.url}/_emulator/requests", timeout=5).json()["requests"])


def record(repo: Repo, cid: str):  # type: ignore[no-untyped-def]
    settings = load_settings(str(repo.config))
    state = StateStore.open(settings.state_url)
    try:
        return state.cohort(cid), state.count_members(cid)
    finally:
        state.close()


def test_only_the_changes_leave_the_warehouse(repo, emulator, warehouse, capsys):
    wh = warehouse
    wh.table("users", UIDS)
    connect(repo, wh)
    sql_cohort(repo, "buyers", "SELECT uid FROM users")
    first = plan(repo, capsys)["buyers"]
    assert (first["diff"], first["adds"], first["removes"], first["status"]) == ("warehouse", 1000, 0, "changed")
    code, out, _ = repo.run(capsys, "apply")
    assert code == 0, out
    assert segment(emulator, "buyers") == set(UIDS)
    kept, rows_here = record(repo, "buyers")
    assert kept.snapshot and kept.synced_count == 1000 and rows_here == 0, "members are kept in the warehouse only"
    assert wh.members("buyers") == set(UIDS)

    wh.execute("DELETE FROM users WHERE uid < 'u00010'")
    wh.execute("INSERT INTO users (uid) VALUES ('new1'), ('new2'), ('new3')")
    changed = plan(repo, capsys)["buyers"]
    assert (changed["diff"], changed["adds"], changed["removes"], changed["desired"]) == ("warehouse", 3, 10, 993)
    assert changed["warehouse_rows"] == 13  # the changes, not the 993 desired uids nor the 1,000 members
    code, out, _ = repo.run(capsys, "apply")
    assert code == 0, out
    assert segment(emulator, "buyers") == set(UIDS[10:]) | {"new1", "new2", "new3"} == wh.members("buyers")
    again = plan(repo, capsys)["buyers"]
    assert (again["status"], again["adds"], again["removes"], again["synced"]) == ("unchanged", 0, 0, 993)
    code, out, _ = repo.run(capsys, "plan")
    assert "diffed in the warehouse, against its snapshot" in out
    code, md, _ = repo.run(capsys, "plan", "--format", "markdown")
    assert "diffed in the warehouse" in md


def test_uids_are_normalised_as_on_the_local_path(repo, emulator, warehouse, capsys):
    """Padding, numbers, NULLs, empty strings and duplicates give the same uids on both paths, and a padded
    uid that is already a member is neither added nor removed."""
    wh = warehouse
    wh.table("people", [" a", "a ", "b", None, "", "   ", "b", "c"])
    wh.table("numbers", [7, 42, 42, None], column="n", kind="INTEGER")
    connect(repo, wh, snapshots=False)
    sql_cohort(repo, "people", "SELECT uid FROM people")
    sql_cohort(repo, "numbers", "SELECT n FROM numbers -- a comment at the end\n;")
    code, out, _ = repo.run(capsys, "apply")
    assert code == 0, out
    assert segment(emulator, "people") == {"a", "b", "c"} and segment(emulator, "numbers") == {"7", "42"}
    sent = requests_made(emulator)
    connect(repo, wh)  # the same cohorts, now diffed in the warehouse: the same uids, nothing to send
    plans = plan(repo, capsys)
    assert {p["moves"] for p in plans.values()} == {"warehouse"} and {p["adds"] for p in plans.values()} == {0}
    code, out, _ = repo.run(capsys, "apply")
    assert code == 0, out
    plans = plan(repo, capsys)
    assert [(p["diff"], p["status"], p["adds"], p["removes"]) for p in plans.values()] == [("warehouse", "unchanged", 0, 0)] * 2
    assert requests_made(emulator) == sent, "the move sends nothing"
    wh.execute("DELETE FROM people WHERE uid = 'a '")  # ' a' still stands for a
    assert plan(repo, capsys)["people"]["status"] == "unchanged"
    wh.execute("DELETE FROM people WHERE uid = ' a'")
    gone = plan(repo, capsys)["people"]
    assert (gone["adds"], gone["removes"], gone["sample_removes"]) == (0, 1, ["a"])


def test_moving_in_and_out_keeps_every_member_and_sends_nothing(repo, emulator, warehouse, capsys):
    wh = warehouse
    wh.table("users", UIDS)
    connect(repo, wh, snapshots=False)
    sql_cohort(repo, "buyers", "SELECT uid FROM users")
    code, out, _ = repo.run(capsys, "apply")
    assert code == 0, out
    sent = requests_made(emulator)
    connect(repo, wh)
    code, out, _ = repo.run(capsys, "state", "move", "--dry-run")
    assert "buyers: 1,000 members would move from the local state to the warehouse snapshot" in out
    before, _ = record(repo, "buyers")
    assert record(repo, "buyers")[1] == 1000, "a dry run moves nothing"
    code, out, _ = repo.run(capsys, "state", "move")
    assert code == 0 and "1,000 members moved from the local state to the warehouse snapshot wh/" in out, out
    kept, here = record(repo, "buyers")
    assert kept.snapshot and here == 0 and wh.members("buyers") == set(UIDS)
    assert kept.last_run_at == before.last_run_at, "a move is no run: status keeps the last one"
    code, out, _ = repo.run(capsys, "state", "check")
    assert code == 0, out
    wh.execute("DELETE FROM users WHERE uid = 'u00000'")
    code, out, _ = repo.run(capsys, "apply")
    assert code == 0, out
    assert requests_made(emulator) == sent + 1, "one remove, and nothing for the move"
    connect(repo, wh, snapshots=False)
    moving = plan(repo, capsys)["buyers"]
    assert (moving["diff"], moving["moves"], moving["status"]) == ("local", "local", "unchanged")
    code, out, _ = repo.run(capsys, "apply")
    assert code == 0, out
    kept, here = record(repo, "buyers")
    assert kept.snapshot is None and here == 999 and requests_made(emulator) == sent + 1
    with pytest.raises(sa.exc.SQLAlchemyError):  # the snapshot is gone
        wh.members("buyers")
    assert segment(emulator, "buyers") == set(UIDS[1:])


def test_a_snapshot_edited_by_hand_fails_the_cohort_and_nothing_is_sent(repo, emulator, warehouse, capsys):
    wh = warehouse
    wh.table("users", UIDS[:50])
    connect(repo, wh)
    sql_cohort(repo, "buyers", "SELECT uid FROM users")
    assert repo.run(capsys, "apply")[0] == 0
    before, sent = segment(emulator, "buyers"), requests_made(emulator)
    for edit, undo in ((f"DELETE FROM {wh.snapshot('buyers')} WHERE uid = 'u00003'",
                        f"INSERT INTO {wh.snapshot('buyers')} (uid, h) VALUES ('u00003', :h)"),
                       (f"INSERT INTO {wh.snapshot('buyers')} (uid, h) VALUES ('zz', 1)",
                        f"DELETE FROM {wh.snapshot('buyers')} WHERE uid = 'zz'")):
        h = wh.execute(f"SELECT h FROM {wh.snapshot('buyers')} WHERE uid = 'u00003'")
        wh.execute(edit)
        broken = plan(repo, capsys)["buyers"]
        assert broken["status"] == "error" and "edited by hand or half-written" in broken["reason"], broken
        assert "`cohortsync state adopt --cohort buyers`" in broken["reason"], broken  # a command that runs
        code, out, _ = repo.run(capsys, "apply")
        assert code == 1 and "edited by hand" in out
        code, out, _ = repo.run(capsys, "state", "check")
        assert code == 1 and "edited by hand" in out
        assert (segment(emulator, "buyers"), requests_made(emulator)) == (before, sent)
        wh.execute(undo, h=h[0][0] if h else 0)
    assert plan(repo, capsys)["buyers"]["status"] == "unchanged"
    wh.execute(f"UPDATE {wh.snapshot('buyers')} SET uid = 'yy' WHERE uid = 'u00007'")  # an edit in place
    broken = plan(repo, capsys)["buyers"]
    assert broken["status"] == "error" and "edited by hand" in broken["reason"], broken


def test_two_states_never_write_one_snapshot(repo, emulator, warehouse, capsys, tmp_path):
    wh = warehouse
    wh.table("users", UIDS[:20])
    connect(repo, wh)
    sql_cohort(repo, "buyers", "SELECT uid FROM users")
    assert repo.run(capsys, "apply")[0] == 0
    doc = yaml.safe_load(repo.config.read_text())
    doc["state_url"] = f"sqlite:///{tmp_path / 'another.db'}"
    repo.config.write_text(yaml.safe_dump(doc))
    code, out, _ = repo.run(capsys, "apply")
    assert code == 1 and "belongs to another cohortsync state database" in out
    assert wh.members("buyers") == set(UIDS[:20])


def test_a_write_the_state_did_not_record_is_taken_and_logged(repo, emulator, warehouse, capsys):
    """A process that dies between a batch's write to the snapshot and the state's record of it: the plan
    trusts the snapshot one write ahead (its uids are pending), apply records that write, and converges."""
    from tests.test_fault_schedules import FaultySession, apply_through, dying_after_snapshot_writes
    wh = warehouse
    wh.table("users", UIDS[:30])
    connect(repo, wh)
    sql_cohort(repo, "buyers", "SELECT uid FROM users")
    with dying_after_snapshot_writes(1):
        assert not apply_through(repo.config, FaultySession(None, 1))
    ahead = plan(repo, capsys)["buyers"]
    assert (ahead["status"], ahead["unconfirmed"], ahead["adds"]) == ("changed", 30, 30), ahead  # re-sent, not added
    code, out, _ = repo.run(capsys, "state", "check")
    assert code == 0 and "one write ahead" in out
    assert repo.run(capsys, "apply")[0] == 0
    assert plan(repo, capsys)["buyers"]["status"] == "unchanged"
    assert segment(emulator, "buyers") == set(UIDS[:30]) == wh.members("buyers")
    code, out, _ = repo.run(capsys, "members", UIDS[0])
    assert "entered" in out and "member now of: buyers" in out


def test_an_orphan_pruned_drops_its_snapshot(repo, emulator, warehouse, capsys):
    wh = warehouse
    wh.table("users", UIDS[:20])
    connect(repo, wh)
    sql_cohort(repo, "buyers", "SELECT uid FROM users")
    assert repo.run(capsys, "apply")[0] == 0
    (repo.cohorts / "buyers.yaml").unlink()
    code, out, _ = repo.run(capsys, "apply", "--prune")
    assert code == 0, out
    assert segment(emulator, "buyers") == set()
    assert record(repo, "buyers")[0] is None
    with pytest.raises(sa.exc.SQLAlchemyError):
        wh.members("buyers")
    sql_cohort(repo, "vip", "SELECT uid FROM users")
    assert repo.run(capsys, "apply")[0] == 0
    (repo.cohorts / "vip.yaml").unlink()
    real = Snapshot.drop
    Snapshot.drop = lambda self: (_ for _ in ()).throw(SnapshotError("no right to drop"))  # a drop that fails
    try:
        assert repo.run(capsys, "apply", "--prune")[0] == 0, "the prune still succeeds"
    finally:
        Snapshot.drop = real
    code, out, _ = repo.run(capsys, "state", "check")
    assert code == 0 and "is no cohort's snapshot any more: safe to drop" in out, out


def test_a_saved_plan_holds_while_the_warehouse_does(repo, emulator, warehouse, capsys, tmp_path):
    wh = warehouse
    wh.table("users", UIDS[:20])
    connect(repo, wh)
    sql_cohort(repo, "buyers", "SELECT uid FROM users")
    assert repo.run(capsys, "apply")[0] == 0
    wh.execute("DELETE FROM users WHERE uid = 'u00001'")
    saved = tmp_path / "plan.json"
    assert repo.run(capsys, "plan", "--out", str(saved))[0] == 0
    wh.execute("INSERT INTO users (uid) VALUES ('late')")
    code, _, err = repo.run(capsys, "apply", "--plan", str(saved))
    assert code == 1 and "stale" in err
    wh.execute("DELETE FROM users WHERE uid = 'late'")
    code, out, _ = repo.run(capsys, "apply", "--plan", str(saved))
    assert code == 0, out
    assert segment(emulator, "buyers") == set(UIDS[:20]) - {"u00001"}


def test_status_says_where_members_are_kept(repo, emulator, warehouse, capsys):
    wh = warehouse
    wh.table("users", UIDS[:5])
    connect(repo, wh)
    sql_cohort(repo, "buyers", "SELECT uid FROM users")
    repo.file_cohort("beta", ["b1"])
    assert repo.run(capsys, "apply")[0] == 0
    code, out, _ = repo.run(capsys, "status", "--format", "json")
    rows = {r["cohort"]: r for r in json.loads(out)["cohorts"]}
    assert rows["buyers"]["diff"] == "warehouse" and rows["buyers"]["snapshot"].startswith("wh/")
    assert rows["beta"]["diff"] == "local" and rows["beta"]["snapshot"] is None
    code, out, _ = repo.run(capsys, "status")
    assert "members kept in the warehouse snapshot wh/" in out


def test_duckdb_over_parquet_and_csv_files(repo, emulator, capsys, tmp_path):
    """A Parquet or CSV export queried through DuckDB, its snapshots in a DuckDB file beside it."""
    import duckdb
    exports = tmp_path / "exports"
    exports.mkdir()
    con = duckdb.connect()
    con.execute(f"COPY (SELECT 'p' || lpad(i::VARCHAR, 4, '0') AS uid FROM range(500) t(i)) TO "
                f"'{exports / 'buyers.parquet'}' (FORMAT parquet)")
    con.execute(f"COPY (SELECT 'c' || i AS user_id FROM range(30) t(i)) TO '{exports / 'beta.csv'}' (HEADER)")
    con.close()
    wh = Warehouse(f"duckdb:///{tmp_path / 'cohortsync.duckdb'}", "snapshots",
                   sa.create_engine(f"duckdb:///{tmp_path / 'cohortsync.duckdb'}", poolclass=sa.pool.NullPool))
    connect(repo, wh)
    sql_cohort(repo, "buyers", f"SELECT uid FROM read_parquet('{exports / 'buyers.parquet'}')")
    sql_cohort(repo, "beta", f"SELECT user_id FROM read_csv_auto('{exports / 'beta.csv'}')")
    code, out, _ = repo.run(capsys, "apply")
    assert code == 0, out
    assert len(segment(emulator, "buyers")) == 500 and len(segment(emulator, "beta")) == 30
    assert {p["diff"] for p in plan(repo, capsys).values()} == {"warehouse"}
    con = duckdb.connect()
    con.execute(f"COPY (SELECT 'p' || lpad(i::VARCHAR, 4, '0') AS uid FROM range(5, 505) t(i)) TO "
                f"'{exports / 'buyers.parquet'}' (FORMAT parquet)")
    con.close()
    changed = plan(repo, capsys)["buyers"]
    assert (changed["adds"], changed["removes"]) == (5, 5)
    wh.engine.dispose()


def test_a_missing_schema_is_created_or_reported_with_its_grant(repo, emulator, capsys, postgres_ready):
    """PostgreSQL, as a user that may read the tables but not create a schema: the error names the GRANT."""
    name, role = f"w_{uuid.uuid4().hex[:10]}", f"r_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
        conn.exec_driver_sql(f"CREATE TABLE {name}.users AS SELECT 'u' || g AS uid FROM generate_series(1, 5) g")
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {name} TO {role}")
        conn.exec_driver_sql(f"GRANT SELECT ON {name}.users TO {role}")
        conn.exec_driver_sql("REVOKE CREATE ON DATABASE test FROM PUBLIC")
    url = sa.engine.make_url(postgres_url()).set(username=role).render_as_string(hide_password=False)
    try:
        connect(repo, Warehouse(url, f"{name}_snap", admin))
        sql_cohort(repo, "buyers", f"SELECT uid FROM {name}.users")
        code, out, _ = repo.run(capsys, "apply")
        assert code == 1
        assert f"GRANT USAGE, CREATE ON SCHEMA {name}_snap TO" in out and "permission denied" in out, out
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {name}_snap AUTHORIZATION {role}")
        code, out, _ = repo.run(capsys, "apply")
        assert code == 0, out
        assert len(segment(emulator, "buyers")) == 5
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name}_snap CASCADE")
            conn.exec_driver_sql("GRANT CREATE ON DATABASE test TO PUBLIC")
            conn.exec_driver_sql(f"DROP ROLE IF EXISTS {role}")
        admin.dispose()


def test_members_uid_looks_in_the_snapshot(repo, emulator, warehouse, capsys):
    wh = warehouse
    wh.table("users", UIDS[:5])
    connect(repo, wh)
    sql_cohort(repo, "buyers", "SELECT uid FROM users")
    assert repo.run(capsys, "apply")[0] == 0
    code, out, _ = repo.run(capsys, "members", UIDS[2], "--format", "json")
    assert json.loads(out)["member_now"] == {"buyers": True}


def test_snapshots_opened_by_the_api_agree(repo, emulator, warehouse, capsys):
    """Snapshots.members streams a cohort's members from its warehouse snapshot, sorted."""
    wh = warehouse
    wh.table("users", ["b", "a", "c"])
    connect(repo, wh)
    sql_cohort(repo, "buyers", "SELECT uid FROM users")
    assert repo.run(capsys, "apply")[0] == 0
    settings = load_settings(str(repo.config))
    state, engines = StateStore.open(settings.state_url), Engines(settings.connections)
    try:
        members = Snapshots(state, engines, 60).members(state.cohort("buyers"), "buyers")
        assert [u for chunk in members.in_order() for u in chunk] == ["a", "b", "c"]
    finally:
        engines.close()
        state.close()


def test_the_daemon_diffs_in_the_warehouse_and_says_so(tmp_path, emulator, daemons, capsys):
    """A daemon on a timer follows the warehouse table; /status and the page's document say where the members
    are kept, and a file cohort beside it stays local."""
    from tests.daemon_process import eventually
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    wh = Warehouse(url, "main", sa.create_engine(url, poolclass=sa.pool.NullPool))
    wh.table("users", UIDS[:5])
    repo = Repo(tmp_path, base_url=emulator.url)
    connect(repo, wh)
    sql_cohort(repo, "buyers", "SELECT uid FROM users", schedule="1s")
    repo.file_cohort("beta", ["b1"])
    daemon = daemons(repo)
    eventually(lambda: segment(emulator, "buyers") == set(UIDS[:5]))
    wh.execute("INSERT INTO users (uid) VALUES ('late')")
    eventually(lambda: segment(emulator, "buyers") == set(UIDS[:5]) | {"late"}, timeout=10)
    rows = {r["id"]: r for r in daemon.get_json("/status")["cohorts"]}
    assert rows["buyers"]["diff"] == "warehouse" and rows["buyers"]["snapshot"].startswith("wh/main/cs_snap_buyers_")
    assert rows["beta"]["diff"] == "local"
    assert daemon.get_json("/cohorts/buyers/status.json")["cohort"]["diff"] == "warehouse"
    assert daemon.stop() == 0
    wh.engine.dispose()


def test_a_failing_query_is_the_sources_error_and_removes_nobody(repo, emulator, warehouse, capsys):
    wh = warehouse
    wh.table("users", UIDS[:5])
    connect(repo, wh)
    sql_cohort(repo, "buyers", "SELECT uid FROM users")
    assert repo.run(capsys, "apply")[0] == 0
    sql_cohort(repo, "buyers", "SELECT uid FROM no_such_table")
    broken = plan(repo, capsys)["buyers"]
    assert broken["status"] == "error" and broken["reason"].startswith("query on 'wh' failed"), broken
    assert "GRANT" not in broken["reason"] and "snapshot" not in broken["reason"]
    code, _, _ = repo.run(capsys, "apply")
    assert code == 1 and segment(emulator, "buyers") == set(UIDS[:5]) == wh.members("buyers")


def test_a_snapshot_restored_or_edited_is_adopted_then_resynced(repo, emulator, warehouse, capsys):
    """The way out when no plan trusts a snapshot any more: `state adopt` takes it as it stands, and a resync
    makes MoEngage match the query again."""
    wh = warehouse
    wh.table("users", UIDS[:20])
    connect(repo, wh)
    sql_cohort(repo, "buyers", "SELECT uid FROM users")
    assert repo.run(capsys, "apply")[0] == 0
    wh.execute(f"DELETE FROM {wh.snapshot('buyers')} WHERE uid IN ('u00001', 'u00002')")  # a restore, an edit
    wh.execute(f"INSERT INTO {wh.snapshot('buyers')} (uid, h) VALUES ('stray', 0)")
    assert plan(repo, capsys)["buyers"]["status"] == "error"
    code, out, _ = repo.run(capsys, "state", "adopt", "--cohort", "buyers")
    assert code == 0 and "19 members adopted" in out and "apply --resync --cohort buyers" in out, out
    assert repo.run(capsys, "state", "check")[0] == 0
    code, out, _ = repo.run(capsys, "apply", "--resync", "--cohort", "buyers", "--force")
    assert code == 0, out
    assert segment(emulator, "buyers") == set(UIDS[:20]) == wh.members("buyers")
    assert plan(repo, capsys)["buyers"]["status"] == "unchanged"


def test_a_dropped_snapshot_table_is_named_and_adopt_starts_it_again(repo, emulator, warehouse, capsys):
    """The table dropped by hand, its mark left: every command says so and sends nothing; `state adopt`
    starts it again empty, and a resync re-adds every member."""
    wh = warehouse
    wh.table("users", UIDS[:20])
    connect(repo, wh)
    sql_cohort(repo, "buyers", "SELECT uid FROM users")
    assert repo.run(capsys, "apply")[0] == 0
    sent = requests_made(emulator)
    wh.execute(f"DROP TABLE {wh.snapshot('buyers')}")
    broken = plan(repo, capsys)["buyers"]
    assert broken["status"] == "error" and "the table was dropped" in broken["reason"], broken
    assert "`cohortsync state adopt --cohort buyers`" in broken["reason"], broken
    code, out, _ = repo.run(capsys, "apply")
    assert code == 1 and "the table was dropped" in out, out
    assert (segment(emulator, "buyers"), requests_made(emulator)) == (set(UIDS[:20]), sent)
    code, out, _ = repo.run(capsys, "state", "adopt", "--cohort", "buyers")
    assert code == 0 and "0 members adopted" in out, out
    code, out, _ = repo.run(capsys, "apply", "--resync", "--cohort", "buyers", "--force")
    assert code == 0, out
    assert segment(emulator, "buyers") == set(UIDS[:20]) == wh.members("buyers")
    assert plan(repo, capsys)["buyers"]["status"] == "unchanged"
