"""Synced members, read here or by a helper process: the same uids, in the same order, every failure a StateError."""
from __future__ import annotations

import os
import time
from contextlib import closing
from pathlib import Path

import pytest

from reconciler.common.errors import StateError
from reconciler.planning.readahead import InProcess, ReadAhead, shareable, synced_members
from reconciler.state.database import make_engine
from reconciler.state.schema import members
from reconciler.state.store import READ_ROWS, StateStore
from reconciler.state.records import Cohort
from tests.daemon_process import eventually

UIDS = sorted({f"u{i:07d}" for i in range(0, 2 * READ_ROWS + 123, 1)} | {"é", "中", "😀", "a b"})


@pytest.fixture
def state(state_url):
    store = StateStore.open(state_url)
    store.commit_batch(Cohort("big", ".Big", None), "add_members", UIDS)
    yield store
    store.close()


def flat(chunks) -> list[str]:
    return [uid for chunk in chunks for uid in chunk]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def url_of(state: StateStore) -> str:
    return state.engine.url.render_as_string(hide_password=False)


# --- the SyncedMembers contract: both implementations, on SQLite and on PostgreSQL ---------------------

@pytest.fixture(params=["in process", "helper process"])
def open_members(request):
    """Make a SyncedMembers of either kind; closed at the end of the test."""
    made = []

    def open_(state: StateStore, cohort_id: str):
        reader = InProcess(state, cohort_id) if request.param == "in process" else ReadAhead(url_of(state), cohort_id)
        made.append(reader)
        return reader

    yield open_
    for reader in made:
        reader.close()


def test_members_come_in_order_in_several_chunks_pass_after_pass(state, open_members):
    reader = open_members(state, "big")
    chunks = list(reader)
    assert len(chunks) >= 3 and flat(chunks) == UIDS
    assert flat(reader) == UIDS  # a second pass (after a source turned out unsorted) sees the same


def test_an_unknown_cohort_has_no_members(state, open_members):
    assert flat(open_members(state, "nobody")) == []


def test_a_database_error_is_a_state_error_every_time(state, open_members):
    with state.engine.begin() as conn:
        conn.execute(members.delete())
        conn.exec_driver_sql("DROP TABLE cs_members")
    reader = open_members(state, "big")
    for _ in range(2):
        with pytest.raises(StateError, match="cannot read members of big"):
            list(reader)


def test_members_out_of_order_are_a_state_error(tmp_path, open_members):
    """A uid column without a binary collation would break the merge; either reader says so."""
    import sqlite3
    path = tmp_path / "state.db"
    StateStore.open(f"sqlite:///{path}").close()
    db = sqlite3.connect(path)
    db.execute("DROP TABLE cs_members")
    db.execute("CREATE TABLE cs_members (cohort_id TEXT, uid TEXT COLLATE NOCASE, PRIMARY KEY (cohort_id, uid))")
    db.executemany("INSERT INTO cs_members VALUES ('c', ?)", [("a",), ("B",), ("c",)])
    db.commit()
    db.close()
    state = StateStore(make_engine(f"sqlite:///{path}"))
    with pytest.raises(StateError, match="code-point order"):
        list(open_members(state, "c"))
    state.close()


# --- choosing, and the helper process itself ------------------------------------------------------------

def test_a_helper_reads_when_the_path_says_so_and_this_process_otherwise(state):
    big, small = synced_members(state, "big", helper=True), synced_members(state, "big", helper=False)
    try:
        assert isinstance(big, ReadAhead) and isinstance(small, InProcess)
        assert flat(big) == flat(small) == UIDS
    finally:
        big.close()
        small.close()


def test_an_in_memory_database_cannot_be_shared_with_a_helper(state):
    store = StateStore.open("sqlite://")
    store.commit_batch(Cohort("c", ".C", None), "add_members", ["b", "a"])
    assert not shareable(store) and shareable(state)
    store.close()


def test_the_helper_counts_what_it_sent(state):
    with closing(ReadAhead(url_of(state), "big")) as reader:
        assert b"".join(reader.text_blocks()) == "".join(u + "\n" for u in UIDS).encode()
        assert reader.count == len(UIDS)


def test_a_helper_that_dies_is_a_state_error(state):
    with closing(ReadAhead(url_of(state), "big")) as reader:
        reader._proc.kill()
        with pytest.raises(StateError, match="stopped"):
            list(reader)


def test_closing_early_stops_the_helper(state):
    """The helper is frozen before it can finish, so only close() can end it: a close() that
    merely waited would hang (and fail here) instead of passing because the helper ended anyway."""
    import signal
    import threading

    reader = ReadAhead(url_of(state), "big")
    os.kill(reader._proc.pid, signal.SIGSTOP)  # it is still starting Python: far from its last block
    closer = threading.Thread(target=reader.close, daemon=True)
    try:
        assert reader._proc.poll() is None, "the helper ended before the test could freeze it"
        closer.start()
        closer.join(timeout=10)
        assert not closer.is_alive(), "close() is still waiting for a helper it did not stop"
        assert reader._proc.returncode == -signal.SIGKILL
    finally:
        if closer.is_alive():
            reader._proc.kill()  # let the stuck close() return
            closer.join()


def test_the_state_url_reaches_the_helper_on_stdin_not_in_its_command_line(tmp_path):
    """A PostgreSQL URL can hold a password; a command line is visible to every user of the host."""
    url = f"sqlite:///{tmp_path / 'state.db'}?secret=hunter2"
    with closing(ReadAhead(url, "c")) as reader:
        argv = " ".join(map(str, reader._proc.args))  # what was exec'd
        assert "reconciler.planning.readahead" in argv and "hunter2" not in argv


def test_a_stray_print_in_the_helper_does_not_garble_its_messages(state, tmp_path, monkeypatch):
    (tmp_path / "sitecustomize.py").write_text("print('block 0 999 1')  # a noisy library at start-up\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with closing(ReadAhead(url_of(state), "big")) as reader:
        assert flat(reader) == UIDS


def test_a_message_the_parent_cannot_read_is_a_state_error(state):
    with closing(ReadAhead(url_of(state), "big")) as reader:
        assert reader._take("block 0 12") is not None
        error = reader._take("Segmentation fault")
        assert isinstance(error, StateError) and "sent 'Segmentation fault'" in str(error)


def test_ctrl_c_during_a_big_plan_leaves_no_helper_behind(tmp_path):
    """The helper ignores SIGINT (Ctrl-C reaches the whole terminal's process group); the plan
    it works for stops it on the way out. The helper is frozen first, so it cannot end by itself."""
    import signal
    import sqlite3
    import subprocess
    import sys

    uids = [f"u{i:09d}" for i in range(300_000)]
    StateStore.open(f"sqlite:///{tmp_path / 'state.db'}").close()
    db = sqlite3.connect(tmp_path / "state.db")
    db.executemany("INSERT INTO cs_members VALUES ('big', ?)", ((u,) for u in uids))
    db.execute("INSERT INTO cs_cohorts (id, name, synced_count, converged) VALUES ('big', '.Big', ?, 0)", (len(uids),))
    db.commit()
    db.close()
    (tmp_path / "cohorts").mkdir()
    (tmp_path / "cohorts" / "big.txt").write_text("".join(u + "\n" for u in reversed(uids)))
    (tmp_path / "cohorts" / "big.yaml").write_text("id: big\nname: .Big\nsource: {file: big.txt}\n")
    (tmp_path / "cohortsync.yaml").write_text(f"state_url: sqlite:///{tmp_path / 'state.db'}\nparallel_plan_min: 1\n")
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "wb") as err:  # faulthandler: a plan that hangs shows where, on SIGABRT, in the message below
        plan = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "reconciler", "plan", "--config",
                                 str(tmp_path / "cohortsync.yaml")], stdout=subprocess.DEVNULL, stderr=err)
    helper = None
    deadline = time.monotonic() + 20
    while helper is None and plan.poll() is None and time.monotonic() < deadline:
        try:
            for pid in Path(f"/proc/{plan.pid}/task/{plan.pid}/children").read_text().split():
                if b"reconciler.planning.readahead" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    helper = int(pid)
        except OSError:
            pass  # a short-lived child (sort -C) went between the listing and the look
        time.sleep(0.005)
    assert helper is not None, "the plan never started a helper"
    os.kill(helper, signal.SIGSTOP)
    try:
        plan.send_signal(signal.SIGINT)
        try:
            code = plan.wait(timeout=20)
        except subprocess.TimeoutExpired:
            plan.send_signal(signal.SIGABRT)
            plan.wait()
            pytest.fail("the interrupted plan did not end; where it was:\n" + stderr.read_text()[-8000:])
        assert code == 130, stderr.read_text()[-2000:]
        eventually(lambda: not alive(helper), timeout=5, interval=0.05)  # nor the interrupted plan
    finally:
        try:
            os.kill(helper, signal.SIGKILL)
        except ProcessLookupError:
            pass
