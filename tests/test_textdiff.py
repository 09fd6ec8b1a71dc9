"""The diff of big plain files by GNU sort and comm: the same plan as the Python merge, or a clean failure."""
from __future__ import annotations

import gzip
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import textdiff
from reconciler.errors import StateError
from reconciler.readahead import MIN_MEMBERS_ENV, ReadAhead
from reconciler.sources import FileSource
from reconciler.specs import CohortSpec, SourceSpec
from tests.helpers import Repo

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
    from reconciler.sources import BLOCK
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
       shuffle=st.booleans())
def test_comm_diff_is_the_set_difference(tmp_path_factory, desired, synced, shuffle):
    path = tmp_path_factory.mktemp("comm") / "uids.txt"
    lines = sorted(set(desired)) if not shuffle else desired[:]
    if shuffle:
        random.Random(len(desired)).shuffle(lines)
    path.write_text("".join(u + "\n" for u in lines))
    presorted = textdiff.strictly_sorted(str(path))
    assert presorted == (lines == sorted(set(lines)))
    adds, removes = [], []
    for added, removed in textdiff.comm_diff(str(path), blocks(sorted(synced)), presorted=presorted):
        adds += added
        removes += removed
    assert adds == sorted(set(desired) - synced)
    assert removes == sorted(synced - set(desired))


def test_a_synced_side_that_fails_midway_fails_the_diff(tmp_path):
    path = tmp_path / "uids.txt"
    path.write_text("a\nb\nc\n")

    def synced():
        yield b"a\n"
        raise RuntimeError("the helper died")

    with pytest.raises(RuntimeError, match="helper died"):
        list(textdiff.comm_diff(str(path), synced(), presorted=True))


def test_a_synced_side_out_of_order_is_a_tool_failure(tmp_path):
    path = tmp_path / "uids.txt"
    path.write_text("a\nb\n")
    with pytest.raises(textdiff.ToolFailed, match="comm exited with status 1: .*not in sorted order"):
        list(textdiff.comm_diff(str(path), [b"b\na\n"], presorted=True))


def test_a_file_that_vanishes_is_a_tool_failure(tmp_path):
    with pytest.raises(textdiff.ToolFailed, match="sort exited"):
        list(textdiff.comm_diff(str(tmp_path / "gone.txt"), [b"a\n"], presorted=False))


# --- through the planner: a helper process reads the state, GNU tools diff ------------------------------

USERS = [f"u{i:05d}" for i in range(2000)]


def plan_json(repo: Repo, capsys, log: list[str] | None = None) -> dict:
    code, out, err = repo.run(capsys, "plan", "--format", "json")
    assert "Traceback" not in err, err
    if log is not None:
        log.append(err)
    return {c["id"]: c for c in json.loads(out)["cohorts"]}


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
    monkeypatch.setenv(MIN_MEMBERS_ENV, "1")
    calls = []
    real = textdiff.comm_diff
    monkeypatch.setattr(textdiff, "comm_diff", lambda *a, **k: calls.append(k) or real(*a, **k))
    with_tools = plan_json(repo, capsys)
    assert len(calls) == 2 and {c["presorted"] for c in calls} == {order == "sorted", True}
    assert with_tools == in_python
    assert (with_tools["big"]["adds"], with_tools["big"]["removes"], with_tools["big"]["desired"]) == (100, 100, 1500)
    assert (with_tools["adds"]["adds"], with_tools["adds"]["removes"], with_tools["adds"]["desired"]) == (200, 0, 700)
    assert repo.run(capsys, "apply")[0] == 0
    assert emulator.members("big") == USERS[100:1600]
    assert emulator.members("adds") == USERS[:1200]


def test_a_tool_failure_falls_back_to_the_python_merge(repo, emulator, capsys, monkeypatch):
    repo.file_cohort("big", USERS[:1500])
    assert repo.run(capsys, "apply")[0] == 0
    repo.uids("big", USERS[10:1510])
    monkeypatch.setenv(MIN_MEMBERS_ENV, "1")

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
    monkeypatch.setenv(MIN_MEMBERS_ENV, "1")

    def failing(self):
        yield b"u00000\n"  # the rest never comes: comm alone would call them all adds
        raise StateError("cannot read members of big: the server went away")

    monkeypatch.setattr(ReadAhead, "text_blocks", failing)
    before = len(emulator.requests())
    code, out, err = repo.run(capsys, "apply")
    assert code == 1 and "the server went away" in out + err
    assert len(emulator.requests()) == before and emulator.members("big") == USERS[:1500]
