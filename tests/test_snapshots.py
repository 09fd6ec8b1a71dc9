"""Warehouse snapshots below the CLI: the placement decision (pure), names and hashes, and the
snapshot's contract (its mark, its checks, its writes) on every warehouse of tests/test_warehouse.py."""
from __future__ import annotations

import pytest

from reconciler.common.actions import Action
from reconciler.common.errors import SnapshotError, SnapshotMoved
from reconciler.settings.model import ConnectionSettings, Secret
from reconciler.snapshots.diffing import WarehouseDiff, full_join
from reconciler.snapshots.placement import LOCAL, WAREHOUSE, Placement, place
from reconciler.snapshots.snapshot import EMPTY, Location, Snapshot
from reconciler.snapshots.tables import checksum, table_name, uid_hash
from reconciler.sources.reading import source_engine
from reconciler.specs.cohorts import CohortSpec, SourceSpec
from reconciler.state.records import CohortRecord, SnapshotMark
from tests.test_warehouse import warehouse  # noqa: F401  (the fixture, on every warehouse)

HERE = None
A = Location("wh", "snap", "cs_snap_a")
B = Location("other", "snap", "cs_snap_a")


@pytest.mark.parametrize("now, wanted, empty, diff, moves", [
    (HERE, HERE, False, LOCAL, False),          # a plain cohort
    (HERE, A, True, WAREHOUSE, True),           # new, or empty: its snapshot is simply made
    (HERE, A, False, LOCAL, True),              # members here, wanted there: diffed here, moved by apply
    (A, A, False, WAREHOUSE, False),            # kept where wanted
    (A, HERE, False, LOCAL, True),              # `snapshots` removed: read from the snapshot, moved back
    (A, B, False, LOCAL, True),                 # another connection: read here from A, moved to B
])
def test_where_a_cohort_diffs(now, wanted, empty, diff, moves):
    placement = Placement(now, wanted, empty)
    assert (placement.diff, placement.moving) == (diff, moves)


def _spec(kind: str, connection: str = "wh") -> CohortSpec:
    source = SourceSpec(kind, connection=connection, sql="SELECT 1") if kind != "file" else SourceSpec("file")
    return CohortSpec("a", ".a", source, "a.yaml")


def _record(snapshot: str | None, synced: int) -> CohortRecord:
    return CohortRecord("a", ".a", None, None, None, synced, False, None, None, None, None, snapshot=snapshot,
                        snapshot_gen=1 if snapshot else None, snapshot_sum=0 if snapshot else None)


def test_placement_reads_the_record_and_the_connections():
    connections = {"wh": ConnectionSettings(Secret("sqlite://"), "snap"), "plain": ConnectionSettings(Secret("sqlite://"))}
    wanted = place(_spec("sql"), None, "a", connections)
    assert wanted.wanted == Location("wh", "snap", table_name("a")) and wanted.now is None and wanted.diff == WAREHOUSE
    assert place(_spec("sql", "plain"), None, "a", connections).wanted is None
    assert place(_spec("file"), None, "a", connections).wanted is None
    kept = place(_spec("file"), _record(str(A), 10), "a", connections)
    assert (kept.now, kept.wanted, kept.diff, kept.moving) == (A, None, LOCAL, True)
    here = place(_spec("sql"), _record(None, 10), "a", connections)
    assert (here.empty, here.diff) == (False, LOCAL)


def test_table_names_are_plain_short_stable_and_distinct():
    keys = ["a", "A", "live:a", "x" * 128, "Weird.Id-1", "live:Weird.Id-1"]
    names = [table_name(k) for k in keys]
    assert len(set(names)) == len(keys)
    assert all(n == n.lower() and len(n) <= 63 and n.replace("_", "").isalnum() for n in names)
    assert table_name("live:a") == table_name("live:a")


def test_a_rows_hash_is_31_bits_and_fixed():
    """The checksum of snapshots already written depends on it: it must never change."""
    assert uid_hash("u1") == 556257211 and uid_hash("é") < 2**31 and checksum(["u1", "u1"]) == 2 * uid_hash("u1")


def test_location_round_trips():
    assert Location.parse(str(A)) == A and "snap.cs_snap_a" in A.shown


def _snapshot(wh, key: str = "k", state_id: str = "state-1") -> Snapshot:  # type: ignore[no-untyped-def]
    return Snapshot(source_engine(wh.url), Location.of("wh", wh.schema, key), key, state_id, 60.0)


def _trusted(snapshot: Snapshot, known: SnapshotMark | None, pending: set[str] = frozenset()):  # type: ignore[no-untyped-def]
    with snapshot.reading() as conn:
        return snapshot.trusted(conn, known, lambda: set(pending))


def test_a_writer_whose_generation_moved_writes_nothing(warehouse):  # noqa: F811
    snapshot = _snapshot(warehouse)
    first = snapshot.load([["a", "b"]])
    second = snapshot.write(Action.ADD, ["c"], first)
    with pytest.raises(SnapshotMoved):
        snapshot.write(Action.REMOVE, ["a"], first)  # a stale writer: it saw generation 1
    assert _trusted(snapshot, second).mark == second
    assert {u for chunk in snapshot.chunks() for u in chunk} == {"a", "b", "c"}


def test_a_claim_and_a_snapshot_made_again_shut_out_a_paused_writer(warehouse):  # noqa: F811
    """A writer that saw generation g writes nothing once another claimed the snapshot (and settles uids by
    re-sending them, which writes no rows), nor after the snapshot was moved out and made again."""
    snapshot = _snapshot(warehouse)
    seen = snapshot.load([["a"]])
    claimed = snapshot.claim(seen)
    assert (claimed.generation, claimed.count, claimed.checksum) == (seen.generation + 1, seen.count, seen.checksum)
    with pytest.raises(SnapshotMoved):
        snapshot.write(Action.ADD, ["x"], seen)
    assert _trusted(snapshot, seen).unrecorded.last_action == "claim"  # a claim the state did not record: taken
    snapshot.drop()
    again = snapshot.load([["a"]])
    assert again.generation > claimed.generation
    with pytest.raises(SnapshotMoved):
        snapshot.write(Action.ADD, ["x"], seen)
    assert {u for chunk in snapshot.chunks() for u in chunk} == {"a"}


def test_a_snapshot_is_trusted_only_against_its_mark(warehouse):  # noqa: F811
    snapshot = _snapshot(warehouse)
    assert _trusted(snapshot, None).mark == EMPTY  # nothing kept there yet: nothing counts
    with pytest.raises(SnapshotError, match="mark is missing"):
        _trusted(snapshot, SnapshotMark(1, 0, 0))
    loaded = snapshot.load([["a", "b"]])
    assert (loaded.count, loaded.checksum) == (2, checksum(["a", "b"]))
    ahead = snapshot.write(Action.ADD, ["c", "d"], loaded)
    trust = _trusted(snapshot, loaded, {"c", "d", "x"})  # one write ahead, its uids pending: taken
    assert trust.mark == ahead and trust.unrecorded.last_uids == ["c", "d"]
    with pytest.raises(SnapshotError, match=f"generation {ahead.generation}, this state expects {loaded.generation}"):
        _trusted(snapshot, loaded, {"c"})  # ... not when a uid of it is not pending
    two_ahead = snapshot.write(Action.REMOVE, ["a"], ahead)
    with pytest.raises(SnapshotError, match="restored from a backup"):
        _trusted(snapshot, loaded, {"a", "c", "d"})
    with pytest.raises(SnapshotError, match="differs from this state's"):
        _trusted(snapshot, SnapshotMark(two_ahead.generation, 5, 0))
    with pytest.raises(SnapshotError, match="another cohortsync state"):
        _trusted(_snapshot(warehouse, state_id="state-2"), two_ahead)
    with pytest.raises(SnapshotError, match="another cohortsync state"):
        _snapshot(warehouse, state_id="state-2").load([["z"]])
    snapshot.drop()
    with pytest.raises(SnapshotError, match="mark is missing"):
        _trusted(snapshot, two_ahead)


def test_a_write_against_rows_edited_by_hand_is_refused_whole(warehouse):  # noqa: F811
    snapshot = _snapshot(warehouse)
    mark = snapshot.load([["a", "b"]])
    warehouse.execute(f"DELETE FROM {warehouse.schema}.{snapshot.location.table} WHERE uid = 'b'")
    with pytest.raises(SnapshotError, match="lacks 1 of the 2 uids"):
        snapshot.write(Action.REMOVE, ["a", "b"], mark)
    with pytest.raises(SnapshotError, match="edited by hand"):
        snapshot.write(Action.ADD, ["a"], mark)
    assert {u for chunk in snapshot.chunks() for u in chunk} == {"a"}, "neither write left anything"
    with snapshot.reading() as conn:
        assert snapshot.found(conn).mark == mark


def test_the_diff_comes_back_sorted_and_unique(warehouse):  # noqa: F811
    warehouse.table("wanted", ["d", "b", "b", "e", "a", " c"])
    snapshot = _snapshot(warehouse)
    mark = snapshot.load([["a", "c", "x", "y"]])
    with snapshot.reading() as conn:
        assert _trusted(snapshot, mark).mark == mark
        changes = WarehouseDiff(snapshot, "k", "SELECT uid FROM wanted").run(conn, against_table=True)
    try:
        assert [u for c in changes.added() for u in c] == ["b", "d", "e"]
        assert [u for c in changes.removed() for u in c] == ["x", "y"]
        assert changes.stand_ins == {"c"} and changes.members_among == {"c"}
    finally:
        changes.close()


def test_which_dialects_run_a_full_join():
    from sqlalchemy.dialects import mysql, postgresql, sqlite
    assert full_join(postgresql.dialect()) and full_join(sqlite.dialect()) and not full_join(mysql.dialect())


def test_dialects_without_transactions_are_refused_with_the_reason():
    from types import SimpleNamespace
    for name in ("bigquery", "databricks"):
        engine = SimpleNamespace(dialect=SimpleNamespace(name=name))
        with pytest.raises(SnapshotError, match="could not be written together"):
            Snapshot(engine, A, "a", "state-1")  # type: ignore[arg-type]
