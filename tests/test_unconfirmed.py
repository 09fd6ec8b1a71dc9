"""Batches whose answer never came: pending before send, settled on answer, re-sent by the next plan.

The pure decision first (table-driven), then the state's contract on SQLite and PostgreSQL, then
end to end against the emulator process: answers lost after MoEngage applied the change, and a
SIGKILL while an applied batch waits for its answer, each followed by a spec change.
"""
from __future__ import annotations

import signal

import pytest

from reconciler.planning.unconfirmed import Unconfirmed
from reconciler.state.store import UNKNOWN, StateStore
from reconciler.state.records import Cohort
from tests.conftest import API_KEY, WORKSPACE
from tests.daemon_process import eventually
from tests.helpers import Repo, synced
from tests.test_reliability import cli


# --- the pure decision ------------------------------------------------------------------------
@pytest.mark.parametrize("uncertain, present, added, removed, re_adds, re_removes", [
    # nothing uncertain: nothing extra
    ([], set(), [], [], [], []),
    # a member MoEngage may lack, still desired: re-add it (the diff saw desired == member and skipped it)
    (["a"], {"a"}, [], [], ["a"], []),
    # a member no longer desired: the diff removes it, nothing extra
    (["a"], {"a"}, [], ["a"], [], []),
    # not a member, desired: the diff adds it (and writes it), nothing extra
    (["a"], set(), ["a"], [], [], []),
    # not a member, not desired, MoEngage may have it: re-remove it
    (["a"], set(), [], [], [], ["a"]),
    # all four at once, in code-point order
    (["a", "b", "c", "d"], {"a", "b"}, ["c"], ["b"], ["a"], ["d"]),
])
def test_what_is_resent_for_uncertain_uids(uncertain, present, added, removed, re_adds, re_removes):
    u = Unconfirmed(uncertain, present)
    u.note(added, removed)
    assert u.resends() == (re_adds, re_removes)


def test_uncertain_uids_are_found_across_ranges_of_the_diff():
    u = Unconfirmed(["b", "m", "x"], {"m"})
    u.note(["a", "b"], [])      # first range: b added
    u.note([], ["m", "n"])      # second range: m removed
    u.note(["y"], [])           # third range: x neither
    assert u.resends() == ([], ["x"]) and u.absent == 2 and len(u) == 3


# --- the state's contract ---------------------------------------------------------------------
def test_a_batch_is_pending_until_settled(state):
    batch = state.begin_batch(Cohort("c", ".C", None), "add_members", ["a", "b"], "run1")
    assert state.cohort("c").unconfirmed == 2 and synced(state, "c") == []
    assert [(p.action, p.uids, p.run_id) for p in state.pending("c")] == [("add_members", ["a", "b"], "run1")]
    state.settle_batch(batch, "c", "add_members", ["a", "b"])
    assert state.pending("c") == [] and synced(state, "c") == ["a", "b"]
    assert state.cohort("c").unconfirmed == 0 and state.cohort("c").synced_count == 2


def test_a_split_batch_settles_part_by_part(state):
    batch = state.begin_batch(Cohort("c", ".C", None), "add_members", ["a", "b", "c", "d"])
    state.settle_batch(batch, "c", "add_members", ["a", "b"], remaining=["c", "d"])
    assert synced(state, "c") == ["a", "b"] and state.unconfirmed_uids("c") == ["c", "d"]
    state.settle_batch(batch, "c", "add_members", ["c", "d"])
    assert synced(state, "c") == ["a", "b", "c", "d"] and state.unconfirmed_uids("c") == []


def test_a_refused_batch_leaves_nothing_pending(state):
    batch = state.begin_batch(Cohort("c", ".C", None), "add_members", ["a"])
    state.refuse_batch(batch)
    assert state.pending("c") == [] and synced(state, "c") == []


def test_a_new_batch_takes_over_uncertain_uids_and_a_refusal_hands_them_back(state):
    old = state.begin_batch(Cohort("c", ".C", None), "add_members", ["a", "b", "c"])  # never answered
    new = state.begin_batch(Cohort("c", ".C", None), "remove_members", ["b", "z"], take_over=True)
    by_id = {p.id: p for p in state.pending("c")}
    assert by_id[old].uids == ["a", "c"] and by_id[new].uids == ["b", "z"] and by_id[new].carried == ["b"]
    assert state.cohort("c").unconfirmed == 4  # each uid pending once: the sum is exact
    state.refuse_batch(new)  # MoEngage did not apply the remove; the old add still may have been
    assert sorted((p.action, tuple(p.uids)) for p in state.pending("c")) == [
        ("add_members", ("a", "c")), (UNKNOWN, ("b",))]


def test_a_resend_settles_without_touching_members(state):
    state.commit_batch(Cohort("c", ".C", None), "add_members", ["a"])
    state.begin_batch(Cohort("c", ".C", None), "remove_members", ["a"])  # answer lost
    again = state.begin_batch(Cohort("c", ".C", None), "add_members", ["a"], take_over=True)
    state.settle_batch(again, "c", "add_members", ["a"], write_members=False)
    assert synced(state, "c") == ["a"] and state.cohort("c").synced_count == 1 and state.pending("c") == []


def test_present_among_and_forget(state):
    state.commit_batch(Cohort("c", ".C", None), "add_members", ["a", "b"])
    state.begin_batch(Cohort("c", ".C", None), "add_members", ["x"])
    assert state.present_among("c", ["a", "x", "q"]) == {"a"}
    state.forget("c")
    assert state.pending("c") == [] and state.cohort("c") is None


# --- end to end against the emulator process --------------------------------------------------
BASE = [f"u{i:06d}" for i in range(20_000)]
NEW = [f"n{i:06d}" for i in range(8_000)]


@pytest.fixture
def setup(tmp_path, start_emulator):
    emu = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--seed", "7")
    repo = Repo(tmp_path, base_url=emu.url, moengage={"max_retries": 1, "timeout": "5s"})
    return emu, repo


def apply(repo: Repo, *args: str) -> tuple[int, str]:
    proc = cli(repo, "apply", *args)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out + err


def plan_json(repo: Repo) -> dict:
    import json
    proc = cli(repo, "plan", "--format", "json")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    return {c["id"]: c for c in json.loads(out)["cohorts"]}


def test_adds_applied_but_unanswered_are_removed_once_unwanted(setup):
    emu, repo = setup
    repo.file_cohort("optin", BASE)
    assert apply(repo)[0] == 0
    repo.uids("optin", BASE + NEW)
    emu.configure(lose_answer_rate=1.0)  # MoEngage applies every batch; no answer comes back
    code, out = apply(repo)
    assert code == 1 and "unconfirmed" in out
    assert set(NEW) & set(emu.members("optin"))  # MoEngage took the batch it never answered
    plan = plan_json(repo)["optin"]
    assert plan["unconfirmed"] > 0 and plan["unconfirmed_since"]
    repo.uids("optin", BASE)  # they leave the cohort again before anything was confirmed
    emu.configure(lose_answer_rate=0.0)
    assert apply(repo)[0] == 0
    assert emu.members("optin") == BASE  # nothing left behind
    assert plan_json(repo)["optin"]["status"] == "unchanged"


def test_removes_applied_but_unanswered_are_added_back_once_wanted(setup):
    emu, repo = setup
    repo.file_cohort("optin", BASE + NEW)
    assert apply(repo)[0] == 0
    repo.uids("optin", BASE)
    emu.configure(lose_answer_rate=1.0)
    assert apply(repo)[0] == 1
    assert set(NEW) - set(emu.members("optin"))  # MoEngage removed the batch it never answered
    repo.uids("optin", BASE + NEW)  # they come back
    emu.configure(lose_answer_rate=0.0)
    assert apply(repo)[0] == 0
    assert emu.members("optin") == sorted(BASE + NEW)  # nothing missing


def test_sigkill_while_an_applied_batch_waits_for_its_answer(setup):
    emu, repo = setup
    repo.file_cohort("optin", BASE)
    assert apply(repo)[0] == 0
    repo.uids("optin", BASE + NEW)
    emu.configure(answer_latency=30.0)  # applied at once, answered half a minute later
    proc = cli(repo, "apply")
    eventually(lambda: len(emu.members("optin")) > len(BASE), timeout=30, interval=0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    state = StateStore.open(f"sqlite:///{repo.root / 'state.db'}")
    assert state.cohort("optin").unconfirmed > 0  # written down before it was sent
    state.close()
    emu.configure(answer_latency=0.0)
    repo.uids("optin", BASE[:15_000])  # the spec changes before the next run
    assert apply(repo)[0] == 0
    assert emu.members("optin") == BASE[:15_000]


def test_unconfirmed_shows_in_status_and_history(setup, capsys):
    emu, repo = setup
    repo.file_cohort("c", BASE[:100])
    emu.configure(lose_answer_rate=1.0)
    assert apply(repo)[0] == 1
    code, out, _ = repo.run(capsys, "status")
    assert "100 uids unconfirmed since" in out
    code, out, _ = repo.run(capsys, "history")
    assert "unconfirmed" in out and "100 uids sent with no answer" in out
