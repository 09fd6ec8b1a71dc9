"""The diff of big plain files by GNU sort and comm: the same plan as the Python merge, or a clean failure."""
from __future__ import annotations

import gzip
import json
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.planning import textdiff
from reconciler.planning.diffs import Tally
from reconciler.common.errors import StateError
from reconciler.sources.ordering import OutOfOrder
from reconciler.planning.readahead import ReadAhead
from reconciler.sources.reading import FileSource
from reconciler.specs.cohorts import CohortSpec, SourceSpec
from tests.helpers import Repo, warehouse

pytestmark = pytest.mark.skipif(not textdiff.available(), reason="GNU sort and comm are not on PATH")


def file_source(path) -> FileSource:
    spec = CohortSpec(id="c", name=".C", source=SourceSpec(kind="file", path=path), file=str(path))
    return FileSource(spec)


@pytest.mark.parametrize("content, plain", [
    (b"a\nb\nc\n", True),
    (b"", True),
    (b"a\nb", True),  # no newline at the end
    (b"user 1\nuser 2\n", True),  # a space inside a uid is part of it
    (b"a\n\nb\n", False),  # a blank line
    (b"\na\n", False),
    (b"a\nb\n\n", False),
    (b" a\n", False),  # padding is stripped by the careful path
    (b"a \nb\n", False),
    (b"a\nb ", False),
    (b"a\r\nb\r\n", False),  # CRLF
    (b"a\tb\n", False),
    ("é\n".encode(), False),  # not ASCII: the careful path decodes and checks it
    (b"a\x00\n", False),
])
def test_plain_ascii_means_every_line_is_already_a_uid(tmp_path, content, plain):
    path = tmp_path / "uids.txt"
    path.write_bytes(content)
    assert file_source(path).plain_ascii() is plain


def test_plain_ascii_sees_a_blank_line_across_a_block_seam(tmp_path):
    from reconciler.sources.reading import BLOCK
    path = tmp_path / "uids.txt"
    line = b"x" * 99 + b"\n"
    body = line * (BLOCK // len(line)) + b"y" * (BLOCK % len(line) - 1) + b"\n"
    assert len(body) == BLOCK
    path.write_bytes(body + b"\nz\n")  # the blank line starts the second block
    assert file_source(path).plain_ascii() is False
    path.write_bytes(body + b"z\n")
    assert file_source(path).plain_ascii() is True


def test_compressed_and_csv_files_are_not_plain(tmp_path):
    gz = tmp_path / "uids.txt.gz"
    gz.write_bytes(gzip.compress(b"a\n"))
    csv = tmp_path / "uids.csv"
    csv.write_bytes(b"uid\na\n")
    assert not file_source(gz).plain_ascii() and not file_source(csv).plain_ascii()


def blocks(uids: list[str], size: int = 3) -> list[bytes]:
    return ["".join(u + "\n" for u in uids[i:i + size]).encode() for i in range(0, len(uids), size)]


ascii_uid = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(desired=st.lists(ascii_uid, max_size=60), synced=st.sets(st.one_of(ascii_uid, st.text("éü中😀", min_size=1)),
                                                                 max_size=60),
       shape=st.sampled_from(["sorted file", "shuffled file", "text blocks", "unsorted text blocks"]))
def test_comm_diff_is_the_set_difference(tmp_path_factory, desired, synced, shape):
    if shape == "text blocks":
        given_desired = blocks(sorted(set(desired)))
    elif shape == "unsorted text blocks":
        given_desired = blocks(desired[::-1] + desired[:3])  # any order, duplicates too
    else:
        path = tmp_path_factory.mktemp("comm") / "uids.txt"
        lines = sorted(set(desired)) if shape == "sorted file" else desired[:]
        if shape == "shuffled file":
            random.Random(len(desired)).shuffle(lines)
        path.write_text("".join(u + "\n" for u in lines))
        given_desired = str(path)
    adds, removes, tally = [], [], Tally()
    unsorted = shape == "unsorted text blocks"
    for added, removed in textdiff.comm_diff(given_desired, blocks(sorted(synced)), tally, unsorted=unsorted):
        adds += added
        removes += removed
    assert adds == sorted(set(desired) - synced)
    assert removes == sorted(synced - set(desired))
    assert (tally.desired, tally.synced) == (len(set(desired)), len(synced))


def test_strictly_sorted_means_ascending_without_duplicates(tmp_path):
    path = tmp_path / "uids.txt"
    for content, expected in (("a\nb\nc\n", True), ("a\nc\nb\n", False), ("a\nb\nb\n", False), ("", True)):
        path.write_text(content)
        assert textdiff.strictly_sorted(str(path)) is expected


def test_a_synced_side_that_fails_midway_fails_the_diff(tmp_path):
    path = tmp_path / "uids.txt"
    path.write_text("a\nb\nc\n")

    def synced():
        yield b"a\n"
        raise RuntimeError("the helper died")

    with pytest.raises(RuntimeError, match="helper died"):
        list(textdiff.comm_diff(str(path), synced(), Tally()))


def test_a_desired_side_that_fails_stops_the_diff_at_once(tmp_path):
    """An OutOfOrder in the thread feeding comm ends the diff at the next block of output, not
    after comm has called every synced member a removal."""
    def desired():
        yield b"a\n"
        raise OutOfOrder("'c' came after 'd'")

    synced = ("".join(f"u{i:07d}\n" for i in range(j, j + 10_000)).encode() for j in range(0, 2_000_000, 10_000))
    removals = 0
    with pytest.raises(OutOfOrder):
        for _, removed in textdiff.comm_diff(desired(), synced, Tally()):
            removals += len(removed)
    assert removals < 200_000


def test_a_synced_side_out_of_order_is_a_tool_failure(tmp_path):
    path = tmp_path / "uids.txt"
    path.write_text("a\nb\n")
    with pytest.raises(textdiff.ToolFailed, match="comm exited with status 1: .*not in sorted order"):
        list(textdiff.comm_diff(str(path), [b"b\na\n"], Tally()))


def test_a_file_that_vanishes_is_a_tool_failure(tmp_path):
    with pytest.raises(textdiff.ToolFailed, match="sort exited"):
        list(textdiff.comm_diff(str(tmp_path / "gone.txt"), [b"a\n"], Tally()))


# --- through the planner: a helper process reads the state, GNU tools diff ------------------------------

USERS = [f"u{i:05d}" for i in range(2000)]


def plan_json(repo: Repo, capsys, log: list[str] | None = None) -> dict:
    code, out, err = repo.run(capsys, "plan", "--format", "json")
    assert "Traceback" not in err, err
    if log is not None:
        log.append(err)
    return {c["id"]: c for c in json.loads(out)["cohorts"]}


def plan_with_tools(repo: Repo, capsys, monkeypatch) -> tuple[dict, list]:
    """The plan with every cohort big enough for the helper and the GNU tools; what comm was given."""
    monkeypatch.setenv("COHORTSYNC_PARALLEL_PLAN_MIN", "1")  # every cohort counts as big
    calls: list = []
    real = textdiff.comm_diff
    monkeypatch.setattr(textdiff, "comm_diff", lambda desired, *a, **k: calls.append(desired) or real(desired, *a, **k))
    return plan_json(repo, capsys), calls


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_gnu_path_plans_and_applies_what_the_python_path_does(repo, emulator, capsys, monkeypatch, order):
    repo.file_cohort("big", USERS[:1500])
    repo.file_cohort("adds", USERS[:1000], mode="add_only")
    assert repo.run(capsys, "apply")[0] == 0
    wanted = USERS[100:1600]
    if order == "shuffled":
        wanted = wanted + USERS[1000:1100]  # duplicates too
        random.Random(3).shuffle(wanted)
    repo.uids("big", wanted)
    repo.uids("adds", USERS[500:1200])
    in_python = plan_json(repo, capsys)
    with_tools, calls = plan_with_tools(repo, capsys, monkeypatch)
    assert len(calls) == 2 and all(isinstance(c, str) for c in calls)  # the files themselves went to the tools
    assert with_tools == in_python
    assert (with_tools["big"]["adds"], with_tools["big"]["removes"], with_tools["big"]["desired"]) == (100, 100, 1500)
    assert (with_tools["adds"]["adds"], with_tools["adds"]["removes"], with_tools["adds"]["desired"]) == (200, 0, 700)
    assert repo.run(capsys, "apply")[0] == 0
    assert emulator.members("big") == USERS[100:1600]
    assert emulator.members("adds") == USERS[:1200]


@pytest.mark.parametrize("order_by", ["ORDER BY uid", ""])
def test_sql_sources_and_padded_files_go_to_comm_as_text(repo, tmp_path, emulator, capsys, monkeypatch, order_by):
    """Sources read here (SQL, a file that needs stripping) reach comm as checked text; an
    unsorted query fails the check inside the feeding thread and is sorted, as in Python."""
    shuffled = USERS[:1500]
    random.Random(5).shuffle(shuffled)
    url, engine = warehouse(tmp_path / "wh.db", shuffled)
    engine.dispose()
    repo.connect("wh", url)
    repo.spec("sql.yaml", f"id: sql\nname: .Sql\nsource: {{connection: wh, sql: 'SELECT uid FROM t {order_by}'}}\n")
    repo.file_cohort("padded", USERS[:1500])
    assert repo.run(capsys, "apply")[0] == 0
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM t WHERE uid < 'u00100'")
        conn.exec_driver_sql("INSERT INTO t VALUES ('v1'), ('v2'), ('v1')")
    (repo.cohorts / "uids" / "padded.txt").write_bytes(b"".join(b"  %s \r\n" % u.encode() for u in USERS[50:1550]))
    in_python = plan_json(repo, capsys)
    with_tools, calls = plan_with_tools(repo, capsys, monkeypatch)
    assert calls and not any(isinstance(c, str) for c in calls)
    assert with_tools == in_python
    assert (with_tools["sql"]["adds"], with_tools["sql"]["removes"], with_tools["sql"]["desired"]) == (2, 100, 1402)
    assert (with_tools["padded"]["adds"], with_tools["padded"]["removes"]) == (50, 50)
    assert repo.run(capsys, "apply")[0] == 0
    assert emulator.members("sql") == sorted(USERS[100:1500] + ["v1", "v2"])
    assert emulator.members("padded") == USERS[50:1550]


def test_a_tool_failure_falls_back_to_the_python_merge(repo, emulator, capsys, monkeypatch):
    repo.file_cohort("big", USERS[:1500])
    assert repo.run(capsys, "apply")[0] == 0
    repo.uids("big", USERS[10:1510])
    monkeypatch.setenv("COHORTSYNC_PARALLEL_PLAN_MIN", "1")  # every cohort counts as big

    def broken(*args, **kwargs):
        yield ["phantom"], []
        raise textdiff.ToolFailed("comm exited with status 1: broken on purpose")

    monkeypatch.setattr(textdiff, "comm_diff", broken)
    log: list[str] = []
    plans = plan_json(repo, capsys, log)
    assert (plans["big"]["adds"], plans["big"]["removes"]) == (10, 10)
    assert "phantom" not in plans["big"]["sample_adds"]
    assert "broken on purpose; diffing it in Python instead" in log[0]


def test_the_state_failing_midway_fails_the_cohort_and_sends_nothing(repo, emulator, capsys, monkeypatch):
    repo.file_cohort("big", USERS[:1500])
    assert repo.run(capsys, "apply")[0] == 0
    repo.uids("big", USERS[10:1510])
    monkeypatch.setenv("COHORTSYNC_PARALLEL_PLAN_MIN", "1")  # every cohort counts as big

    def failing(self):
        yield b"u00000\n"  # the rest never comes: comm alone would call them all adds
        raise StateError("cannot read members of big: the server went away")

    monkeypatch.setattr(ReadAhead, "text_blocks", failing)
    before = len(emulator.requests())
    code, out, err = repo.run(capsys, "apply")
    assert code == 1 and "the server went away" in out + err
    assert len(emulator.requests()) == before and emulator.members("big") == USERS[:1500]


def test_a_broken_sort_fails_only_its_cohort_and_removes_nothing(repo, emulator, capsys, monkeypatch, tmp_path):
    """With a `sort` that fails, the GNU path falls back to Python, whose sorts fail too: the
    cohort is an error with the reason, nothing is sent, and an ordered cohort goes on."""
    repo.file_cohort("messy", USERS[:1500])
    repo.file_cohort("tidy", USERS[:10])
    assert repo.run(capsys, "apply")[0] == 0
    shuffled = USERS[5:1505]
    random.Random(9).shuffle(shuffled)
    repo.uids("messy", shuffled)
    repo.uids("tidy", USERS[:11])
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sort").write_text('#!/bin/sh\n[ "$1" = --version ] && echo "sort (GNU coreutils) 9.1" && exit 0\n'
                                  'echo "sort: cannot create temporary file: No space left on device" >&2\nexit 2\n')
    (bin_dir / "sort").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("COHORTSYNC_PARALLEL_PLAN_MIN", "1")
    before = len(emulator.requests())
    code, out, err = repo.run(capsys, "apply")
    assert code == 1 and "Traceback" not in err
    assert "messy" in out and "sort exited with status 2" in out
    assert emulator.members("messy") == USERS[:1500] and emulator.members("tidy") == USERS[:11]
    assert [r["cohort_id"] for r in emulator.requests()[before:]] == ["tidy"]


@pytest.mark.parametrize("planned_with_tools", [True, False])
def test_a_saved_plan_of_a_big_sql_cohort_applies_and_sees_changes(repo, tmp_path, emulator, capsys, monkeypatch,
                                                                     planned_with_tools):
    """The desired set's digest is the same whichever path made it, so a saved plan made by one
    path is applied by the other; a changed query result is still refused."""
    url, engine = warehouse(tmp_path / "wh.db", USERS[:1200])
    repo.connect("wh", url)
    repo.spec("sql.yaml", "id: sql\nname: .Sql\nsource: {connection: wh, sql: 'SELECT uid FROM t ORDER BY uid'}\n")
    assert repo.run(capsys, "apply")[0] == 0
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM t WHERE uid < 'u00010'")
    plan = str(tmp_path / "plan.json")
    monkeypatch.setenv("COHORTSYNC_PARALLEL_PLAN_MIN", "1" if planned_with_tools else "1000000")
    assert repo.run(capsys, "plan", "--out", plan)[0] == 0
    monkeypatch.setenv("COHORTSYNC_PARALLEL_PLAN_MIN", "1000000" if planned_with_tools else "1")
    code, out, err = repo.run(capsys, "apply", "--plan", plan)
    assert code == 0, out + err
    assert emulator.members("sql") == USERS[10:1200]
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM t WHERE uid < 'u00020'")
    assert repo.run(capsys, "plan", "--out", plan)[0] == 0
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE t SET uid = 'x' WHERE uid = 'u00500'")  # same count, another member
    engine.dispose()
    before = len(emulator.requests())
    code, _, err = repo.run(capsys, "apply", "--plan", plan)
    assert code == 1 and "cohort sql:" in err and len(emulator.requests()) == before
