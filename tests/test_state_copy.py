"""`state copy` (every table, streamed, verified) and `state check` (the state's invariants)."""
from __future__ import annotations

import sqlite3
import time

import pytest
import sqlalchemy as sa

from reconciler.common.errors import StateError
from reconciler.state.checking import check_state
from reconciler.state.copying import copy_state, digest
from reconciler.state.records import ChangeNote, Cohort, RunRecord, Ending
from reconciler.state.store import StateStore, synced_in_order
from tests.helpers import Repo, synced


def busy_state(url: str) -> StateStore:
    """A state with every table in use: members, a pending batch, runs, changelog, meta."""
    state = StateStore.open(url)
    state.commit_batch(Cohort("beta", ".beta", "d"), "add_members", ["a", "b\\slash", "c", "é"])
    batch = state.begin_batch(Cohort("beta", ".beta", "d"), "add_members", ["x", "y"], "r1")
    state.settle_batch(batch, "beta", "add_members", ["x"], remaining=["y"], note=ChangeNote("r1", "s" * 64))
    state.commit_batch(Cohort("vip", ".vip", None), "add_members", ["a"])
    state.record_run(RunRecord("r1", "beta", "unconfirmed", time.time(), unconfirmed=1))
    state.record_outcome(Cohort("vip", ".vip", None), Ending(status="converged", converged=True, spec_digest="s", source_digest="f"))
    return state


def tables(state: StateStore) -> dict[str, list[tuple]]:
    """Every row of every copied table, ordered, for comparing two states."""
    out = {}
    with state.engine.connect() as conn:
        for name, key in (("cs_cohorts", "id"), ("cs_batches", "id"), ("cs_runs", "id"), ("cs_changelog", "id"),
                          ("cs_meta", "key"), ("cs_members", "cohort_id, uid")):
            out[name] = [tuple(r) for r in conn.exec_driver_sql(f"SELECT * FROM {name} ORDER BY {key}")]
    return out


@pytest.mark.postgres
def test_copy_to_postgresql_and_back_is_exact(tmp_path, postgres_schema):
    source = busy_state(f"sqlite:///{tmp_path / 'a.db'}")
    middle = StateStore.open(postgres_schema)
    report = copy_state(source, middle)
    assert report.problems == [] and report.members["beta"][0] == 5 and report.rows["cs_changelog"] == 1
    back = StateStore.open(f"sqlite:///{tmp_path / 'b.db'}")
    assert copy_state(middle, back).problems == []
    assert tables(back) == tables(source)
    assert synced(middle, "beta") == ["a", "b\\slash", "c", "x", "é"]
    assert middle.pending("beta")[0].uids == ["y"] and check_state(middle) == []
    middle.record_run(RunRecord("r2", "beta", "converged", time.time()))  # the sequences follow the copied ids
    for store in (source, middle, back):
        store.close()


def test_a_target_that_holds_anything_is_refused_unless_forced(tmp_path):
    source = busy_state(f"sqlite:///{tmp_path / 'a.db'}")
    target = StateStore.open(f"sqlite:///{tmp_path / 'b.db'}")
    target.commit_batch(Cohort("other", ".other", None), "add_members", ["z"])
    with pytest.raises(StateError, match="not empty.*--force"):
        copy_state(source, target)
    assert copy_state(source, target, force=True).problems == []
    assert tables(target) == tables(source)


def test_state_copy_and_check_commands(tmp_path, capsys):
    repo = Repo(tmp_path)
    busy_state(f"sqlite:///{tmp_path / 'state.db'}").close()
    code, out, _ = repo.run(capsys, "state", "copy", "--to", f"sqlite:///{tmp_path / 'copy.db'}")
    assert code == 0 and "Verified" in out and "6 members" in out
    code, out, _ = repo.run(capsys, "state", "check")
    assert code == 0 and "consistent" in out
    db = sqlite3.connect(tmp_path / "state.db")
    db.execute("UPDATE cs_cohorts SET synced_count = 9 WHERE id = 'vip'")
    db.execute("INSERT INTO cs_batches (cohort_id, action, count, uids, sent_at) VALUES ('beta', 'add_members', 2, "
               "CAST('q\ny' AS BLOB), 0)")
    db.execute("INSERT INTO cs_members VALUES ('ghost', 'g')")
    db.commit()
    db.close()
    code, out, _ = repo.run(capsys, "state", "check")
    assert code == 1 and "3 problem(s)" in out
    assert "cohort vip: synced_count 9 but 1 member rows" in out
    assert "cohort beta: 1 uid(s) pending in more than one batch (e.g. y)" in out
    assert "1 member rows of ghost, which has no cohort record" in out


def test_a_pending_batch_older_than_runs_is_no_fault(state: StateStore):
    """Its uids are unconfirmed, not wrong: later runs may come and go until a plan settles them."""
    state.begin_batch(Cohort("c", ".c", None), "add_members", ["a"], "r1")
    state.record_run(RunRecord("r2", "c", "blocked", time.time() + 60))
    assert check_state(state) == []


@pytest.mark.postgres
def test_a_million_members_copy_from_sqlite_to_postgresql_exactly(tmp_path, postgres_schema):
    db = tmp_path / "big.db"
    StateStore.open(f"sqlite:///{db}").close()
    raw = sqlite3.connect(db)
    raw.executemany("INSERT INTO cs_members VALUES ('big', ?)", ((f"user{i:09d}",) for i in range(1_000_000)))
    raw.execute("INSERT INTO cs_cohorts (id, name, synced_count, converged) VALUES ('big', '.big', 1000000, 0)")
    raw.commit()
    raw.close()
    source, target = StateStore.open(f"sqlite:///{db}"), StateStore.open(postgres_schema)
    started = time.monotonic()
    report = copy_state(source, target)
    assert report.problems == [] and report.members["big"][0] == 1_000_000
    assert digest(synced_in_order(target, "big")) == digest(synced_in_order(source, "big"))
    with target.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM cs_members")).scalar_one() == 1_000_000
    assert time.monotonic() - started < 60
    source.close()
    target.close()
