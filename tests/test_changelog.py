"""The membership changelog: written with each settled batch, read by `members UID` and `history --members`."""
from __future__ import annotations

import json
import time

from reconciler.state.records import ChangeNote, Cohort

from reconciler.state.store import StateStore
from tests.helpers import Repo, synced

USERS = [f"u{i:03d}" for i in range(100)]


def members_json(repo: Repo, capsys, uid: str, *args: str) -> dict:
    code, out, _ = repo.run(capsys, "members", uid, "--format", "json", *args)
    assert code == 0
    return json.loads(out)


def test_members_follows_a_uid_through_an_add_a_remove_and_a_resync(repo: Repo, emulator, capsys):
    repo.file_cohort("beta", USERS[:20])
    repo.file_cohort("vip", USERS[:5])
    assert repo.run(capsys, "apply")[0] == 0
    repo.uids("beta", USERS[1:20])  # u000 leaves beta, stays in vip
    assert repo.run(capsys, "apply")[0] == 0
    emulator.edit("beta", add=["u000"])  # put back by hand
    assert repo.run(capsys, "apply", "--resync", "--cohort", "beta")[0] == 0
    assert emulator.members("beta") == USERS[1:20]
    doc = members_json(repo, capsys, "u000")
    events = [(c["cohort"], c["event"]) for c in doc["changes"]]
    assert events == [("beta", "entered"), ("vip", "entered"), ("beta", "left"),
                      ("beta", "removed by a resync (it had left before)")]
    runs = [c["run_id"] for c in doc["changes"]]
    assert runs[0] == runs[1] != runs[2] != runs[3] and all(c["workspace"] == "default" for c in doc["changes"])
    assert doc["member_now"] == {"beta": False, "vip": True}
    assert all(len(c["spec_digest"]) == 64 for c in doc["changes"])
    # a member that stayed shows the resync's re-adds (kept as a count, not per uid)
    kept = [(c["cohort"], c["event"]) for c in members_json(repo, capsys, "u001", "--cohort", "beta")["changes"]]
    assert kept == [("beta", "entered"), ("beta", "re-added by a resync")]
    code, out, _ = repo.run(capsys, "members", "u000")
    assert code == 0 and "left" in out and "member now of: vip" in out
    state = StateStore.open(f"sqlite:///{repo.root / 'state.db'}")
    for cohort in ("beta", "vip"):
        assert replayed(state, cohort) == set(synced(state, cohort))  # the changelog agrees with the members
    state.close()


def replayed(state: StateStore, cohort: str) -> set[str]:
    """The members as the changelog's member-writing entries leave them."""
    members: set[str] = set()
    for entry in state.changelog.entries([cohort]):
        if entry.kind.endswith("change"):
            (members.update if entry.action == "add_members" else members.difference_update)(entry.uids)
    return members


def test_history_members_lists_the_uids_of_each_run(repo: Repo, capsys):
    repo.file_cohort("beta", USERS[:3])
    assert repo.run(capsys, "apply")[0] == 0
    repo.uids("beta", USERS[1:4])
    assert repo.run(capsys, "apply")[0] == 0
    code, out, _ = repo.run(capsys, "history", "--cohort", "beta", "--members", "--format", "json")
    entries = json.loads(out)["entries"]
    assert code == 0 and [(e["event"], e["uids"]) for e in entries] == [
        ("entered", ["u003"]), ("left", ["u000"]), ("entered", USERS[:3])]  # newest first
    first = entries[2]["run_id"]
    code, out, _ = repo.run(capsys, "history", "--cohort", "beta", "--members", "--run", first)
    assert code == 0 and "entered: 3\n    u000 u001 u002\n" in out and "u003" not in out


def test_without_a_changelog_nothing_is_logged_and_resync_can_only_re_add(tmp_path, emulator, capsys, monkeypatch):
    from tests.conftest import API_KEY, WORKSPACE
    monkeypatch.setenv("TEST_WS", WORKSPACE)
    monkeypatch.setenv("TEST_KEY", API_KEY)
    repo = Repo(tmp_path, base_url=emulator.url, changelog={"retention": 0})
    repo.file_cohort("beta", USERS[:3])
    assert repo.run(capsys, "apply")[0] == 0
    repo.uids("beta", USERS[:2])
    assert repo.run(capsys, "apply")[0] == 0
    emulator.edit("beta", add=["u002"])
    code, out, _ = repo.run(capsys, "plan", "--resync")
    assert code == 0 and "resync can only re-add" in out
    assert members_json(repo, capsys, "u002")["changes"] == []


def test_the_changelog_is_pruned_in_small_steps(state: StateStore):
    for i in range(5):
        batch = state.begin_batch(Cohort("c", ".c", None), "add_members", [f"u{i}"], "r1")
        state.settle_batch(batch, "c", "add_members", [f"u{i}"], note=ChangeNote("r1", "d" * 64))
    assert [e.uids for e in state.changelog.changes_of("u3")] == [["u3"]]
    assert state.changelog.prune(time.time() + 1, limit=2) == 2
    assert state.changelog.prune(time.time() + 1, limit=2) == 2
    assert state.changelog.prune(time.time() - 3600, limit=2) == 0  # nothing older than an hour
    assert len(list(state.changelog.entries())) == 1


def test_each_workspace_has_its_own_changelog_and_resync(tmp_path, start_emulator, monkeypatch, capsys):
    from tests.conftest import API_KEY, WORKSPACE
    live_ws, live_key = "WS_LIVE_5678", "live-key-DO-NOT-LOG"
    for name, value in (("TEST_WS", WORKSPACE), ("TEST_KEY", API_KEY), ("MOENGAGE_LIVE_WORKSPACE_ID", live_ws),
                        ("MOENGAGE_LIVE_API_KEY", live_key)):
        monkeypatch.setenv(name, value)
    emu = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--workspace-id", live_ws,
                         "--api-key", live_key)
    repo = Repo(tmp_path, base_url=emu.url, workspaces={"live": {"base_url": emu.url}})
    repo.file_cohort("both", USERS[:5], workspaces=["default", "live"])
    assert repo.run(capsys, "apply")[0] == 0
    repo.uids("both", USERS[1:5])
    assert repo.run(capsys, "apply")[0] == 0
    doc = members_json(repo, capsys, "u000", "--cohort", "both")
    assert sorted((c["workspace"], c["event"]) for c in doc["changes"]) == [
        ("default", "entered"), ("default", "left"), ("live", "entered"), ("live", "left")]
    assert {c["cohort"] for c in doc["changes"]} == {"both"}
    emu.edit("both", add=["u000"], workspace=live_ws)  # drift in one workspace only
    assert repo.run(capsys, "apply", "--resync", "--workspace", "live")[0] == 0
    assert emu.members("both", live_ws) == emu.members("both", WORKSPACE) == USERS[1:5]
