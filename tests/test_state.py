"""The state contract: one suite, run on SQLite and on PostgreSQL."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from reconciler.common.errors import StateError
from reconciler.state.records import Cohort, RunRecord, Ending
from reconciler.state.schema import SCHEMA_VERSION, meta
from reconciler.state.store import StateStore
from tests.helpers import synced


def test_fresh_database_gets_the_current_schema(state):
    assert state.schema_version() == SCHEMA_VERSION
    assert state.cohorts() == {}


def test_migrate_is_idempotent(state_url):
    for _ in range(2):
        store = StateStore.open(state_url)
        assert store.schema_version() == SCHEMA_VERSION
        store.close()


def test_refuses_a_newer_schema(state):
    with state.engine.begin() as conn:
        conn.execute(meta.update().values(value=str(SCHEMA_VERSION + 1)))
    with pytest.raises(StateError, match="newer"):
        state.migrate()


def test_commit_batches_and_read_back_in_code_point_order(state):
    uids = ["b", "a", "B", "é", "Z", "aa", "中", "a-1", "a_1", "😀", "10", "9"]
    state.commit_batch(Cohort("c1", ".C1", None), "add_members", uids)
    assert list(synced(state, "c1")) == sorted(uids)
    assert state.cohort("c1").synced_count == len(uids)
    state.commit_batch(Cohort("c1", ".C1", None), "remove_members", ["a", "中"])
    assert list(synced(state, "c1")) == sorted(set(uids) - {"a", "中"})
    assert state.cohort("c1").synced_count == len(uids) - 2
    assert state.count_members("c1") == len(uids) - 2


def test_cohorts_are_kept_apart(state):
    state.commit_batch(Cohort("c1", ".C1", None), "add_members", ["x", "y"])
    state.commit_batch(Cohort("c2", ".C2", "two"), "add_members", ["y", "z"])
    assert list(synced(state, "c1")) == ["x", "y"]
    assert list(synced(state, "c2")) == ["y", "z"]
    assert set(state.cohorts()) == {"c1", "c2"}


def test_a_duplicate_add_fails_the_whole_batch(state):
    state.commit_batch(Cohort("c1", ".C1", None), "add_members", ["x"])
    with pytest.raises(StateError):
        state.commit_batch(Cohort("c1", ".C1", None), "add_members", ["y", "x"])
    assert list(synced(state, "c1")) == ["x"]  # the transaction rolled back: y is not there
    assert state.cohort("c1").synced_count == 1


def test_outcome_records_digests_only_when_converged(state):
    state.commit_batch(Cohort("c1", ".C1", None), "add_members", ["x"])
    state.record_outcome(Cohort("c1", ".C1", None), Ending(status="failed", error="boom", spec_digest="s", source_digest="f"))
    rec = state.cohort("c1")
    assert (rec.converged, rec.spec_digest, rec.last_error, rec.last_status) == (False, None, "boom", "failed")
    state.record_outcome(Cohort("c1", ".C1 renamed", "d"), Ending(status="converged", converged=True, spec_digest="s", source_digest="f"))
    rec = state.cohort("c1")
    assert (rec.converged, rec.spec_digest, rec.source_digest, rec.name, rec.last_error) == (True, "s", "f", ".C1 renamed", None)
    assert rec.last_success_at is not None


def test_runs_newest_first_and_filtered(state):
    for i, cid in enumerate(["a", "b", "a"]):
        state.record_run(RunRecord(f"r{i}", cid, "converged", started_at=1000.0 + i, sent_adds=i))
    assert [r.run_id for r in state.runs()] == ["r2", "r1", "r0"]
    assert [r.run_id for r in state.runs("a", limit=1)] == ["r2"]


def test_forget_removes_members_and_record(state):
    state.commit_batch(Cohort("c1", ".C1", None), "add_members", ["x"])
    state.forget("c1")
    assert state.cohort("c1") is None and list(synced(state, "c1")) == []


def test_streams_many_members(state):
    uids = [f"user-{i:07d}" for i in range(50_000)]
    state.commit_batch(Cohort("big", ".Big", None), "add_members", uids)
    assert sum(1 for _ in synced(state, "big")) == 50_000


def test_unreachable_database_is_a_state_error():
    store = StateStore(sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none"))
    with pytest.raises(StateError):
        store.cohorts()


def test_bad_url_is_a_state_error():
    with pytest.raises(StateError, match="not a database URL"):
        StateStore.open("not a url")


def test_repr_hides_the_password():
    store = StateStore(sa.create_engine("postgresql+psycopg://user:hunter2@127.0.0.1:1/db"))
    assert "hunter2" not in repr(store)


def test_state_version_grows_with_member_changes_only(state):
    v0 = state.state_version()
    state.commit_batch(Cohort("c1", ".C1", None), "add_members", ["x"])
    v1 = state.state_version()
    state.record_run(RunRecord("r", "c1", "converged", started_at=1.0))
    state.record_outcome(Cohort("c1", ".C1", None), Ending(status="converged", converged=True))
    assert v1 == v0 + 1 and state.state_version() == v1
    state.forget("c1")
    assert state.state_version() == v1 + 1


def test_a_version_1_database_is_upgraded(state_url):
    store = StateStore.open(state_url)
    store.commit_batch(Cohort("c1", ".C1", None), "add_members", ["x"])
    with store.engine.begin() as conn:  # what a database written by schema version 1 looks like
        conn.execute(meta.delete().where(meta.c.key == "state_version"))
        conn.execute(meta.update().where(meta.c.key == "schema_version").values(value="1"))
    store.close()
    upgraded = StateStore.open(state_url)
    assert upgraded.schema_version() == SCHEMA_VERSION
    assert upgraded.state_version() == 0 and list(synced(upgraded, "c1")) == ["x"]
    upgraded.close()


def test_a_version_2_database_is_upgraded_in_place(state_url):
    """Version 2 had no pending batches and no unconfirmed count on runs: both are added, nothing is lost."""
    store = StateStore.open(state_url)
    store.commit_batch(Cohort("c1", ".C1", None), "add_members", ["x", "y"])
    store.record_run(RunRecord("r1", "c1", "converged", started_at=1.0))
    with store.engine.begin() as conn:  # what a database written by schema version 2 looks like
        conn.exec_driver_sql("DROP TABLE cs_batches")
        conn.exec_driver_sql("ALTER TABLE cs_runs DROP COLUMN unconfirmed")
        conn.execute(meta.update().where(meta.c.key == "schema_version").values(value="2"))
    store.close()
    upgraded = StateStore.open(state_url)
    assert upgraded.schema_version() == SCHEMA_VERSION
    assert synced(upgraded, "c1") == ["x", "y"] and upgraded.cohort("c1").unconfirmed == 0
    assert [(r.run_id, r.unconfirmed) for r in upgraded.runs("c1")] == [("r1", 0)]
    batch = upgraded.begin_batch(Cohort("c1", ".C1", None), "add_members", ["z"])
    assert upgraded.cohort("c1").unconfirmed == 1 and upgraded.pending("c1")[0].id == batch
    upgraded.close()


def test_a_version_7_database_is_upgraded_in_one_open(state_url):
    """Version 7 had no state id and no snapshot columns: one open adds both and says version 8 at once (the
    id's insert once took the place of the version's update, and an upgraded state stayed at 7 until reopened)."""
    store = StateStore.open(state_url)
    store.commit_batch(Cohort("c1", ".C1", None), "add_members", ["x"])
    with store.engine.begin() as conn:  # what a database written by schema version 7 looks like
        for column in ("snapshot", "snapshot_gen", "snapshot_sum"):
            conn.exec_driver_sql(f"ALTER TABLE cs_cohorts DROP COLUMN {column}")
        conn.execute(meta.delete().where(meta.c.key == "state_id"))
        conn.execute(meta.update().where(meta.c.key == "schema_version").values(value="7"))
    store.close()
    upgraded = StateStore.open(state_url)
    assert upgraded.schema_version() == SCHEMA_VERSION == 8
    assert len(upgraded.state_id()) == 32 and upgraded.cohort("c1").snapshot is None
    assert synced(upgraded, "c1") == ["x"]
    state_id = upgraded.state_id()
    upgraded.close()
    again = StateStore.open(state_url)
    assert again.state_id() == state_id, "the id is made once"
    again.close()


def test_members_are_written_the_same_without_the_drivers_own_statements(state, monkeypatch):
    """A driver whose paramstyle we do not write by hand goes through SQLAlchemy's statements."""
    monkeypatch.setattr("reconciler.state.store._PLACEHOLDERS", {})
    state.commit_batch(Cohort("c1", ".C1", None), "add_members", ["b", "a", "c"])
    state.commit_batch(Cohort("c1", ".C1", None), "remove_members", ["b"])
    assert synced(state, "c1") == ["a", "c"] and state.cohort("c1").synced_count == 2
