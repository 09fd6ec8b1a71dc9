"""Trigger and wait: POST /reconcile's run id, GET /runs/{id}, `cohortsync trigger --wait`, against real
daemons and the emulator; the trigger table's ordering and faults on the state itself."""
from __future__ import annotations

import json

import pytest

from reconciler.daemon.triggering import look, trigger, wait
from reconciler.state.keys import sync_key
from reconciler.state.store import StateStore
from reconciler.state.triggers import Settled, Triggers
from tests.daemon_process import TOKEN, eventually
from tests.helpers import Repo

USERS = [f"user{i:03d}" for i in range(8)]


def key(cid: str) -> str:
    return sync_key("default", cid)


def test_a_trigger_written_while_its_cohort_runs_waits_for_the_next_run(tmp_path):
    triggers = Triggers(StateStore.open(f"sqlite:///{tmp_path / 'state.db'}"))
    triggers.record("before", [key("a")], "http")
    triggers.claim([key("a")], "attempt1")  # the run begins: "before" is its to answer
    triggers.record("during", [key("a")], "http")  # arrives while it runs
    triggers.settle("attempt1", {key("a"): Settled("converged", adds=3)})
    assert triggers.outcome("before")["state"] == "converged"
    assert triggers.outcome("before")["adds"] == 3
    assert triggers.outcome("during")["state"] == "queued"  # not answered by the run that began before it
    triggers.claim([key("a")], "attempt2")
    assert triggers.outcome("during")["state"] == "running"
    triggers.settle("attempt2", {key("a"): Settled("error", error="source failed")})
    during = triggers.outcome("during")
    assert during["state"] == "failed" and during["cohorts"][0]["error"] == "source failed"


def test_a_trigger_left_running_by_a_dead_run_is_claimed_by_the_next_and_old_ones_turn_unknown(tmp_path):
    triggers = Triggers(StateStore.open(f"sqlite:///{tmp_path / 'state.db'}"))
    triggers.record("t", [key("a"), key("b")], "http")
    triggers.claim([key("a")], "dead")  # its process died here: never settled
    triggers.settle("next", {key("a"): Settled("converged")})  # another attempt cannot settle what it did not claim
    assert triggers.outcome("t")["state"] == "running"
    triggers.claim([key("a"), key("b")], "next")
    triggers.settle("next", {key("a"): Settled("converged"), key("b"): Settled("unchanged")})
    assert triggers.outcome("t")["state"] == "converged"
    triggers.record("old", [key("c")], "http")
    assert triggers.outcome("old", now=__import__("time").time() + 2 * 86400)["state"] == "unknown"
    assert triggers.outcome("nope") is None


def test_trigger_wait_exits_0_when_converged_and_1_when_a_cohort_fails(tmp_path, emulator, daemons, capsys,
                                                                        monkeypatch):
    repo = Repo(tmp_path, base_url=emulator.url, daemon={"interval": "1h"})
    repo.file_cohort("beta", USERS[:5])
    repo.file_cohort("gamma", USERS[:3])
    daemon = daemons(repo, COHORTSYNC_DEBOUNCE="1h")  # the trigger, not the file watcher, runs the change
    eventually(lambda: emulator.members("beta") == USERS[:5])
    monkeypatch.setenv("COHORTSYNC_TOKEN", TOKEN)
    repo.uids("beta", USERS[:7])
    code, out, _ = repo.run(capsys, "trigger", "--url", daemon.url, "--cohort", "beta", "--wait", "--timeout", "30",
                            "--format", "json")
    outcome = json.loads(out)
    assert code == 0, out
    assert outcome["state"] == "converged" and outcome["adds"] == 2 and outcome["removes"] == 0
    assert [(c["cohort"], c["state"], c["adds"]) for c in outcome["cohorts"]] == [("beta", "converged", 2)]
    assert emulator.members("beta") == USERS[:7]
    (repo.cohorts / "uids" / "gamma.txt").unlink()  # gamma's source breaks: its run fails, members stay
    code, out, _ = repo.run(capsys, "trigger", "--url", daemon.url, "--wait", "--timeout", "30")
    assert code == 1, out
    assert "gamma: failed (error)" in out and "beta: converged" in out and out.startswith("run ")
    assert emulator.members("gamma") == USERS[:3]
    assert daemon.stop() == 0


def test_post_reconcile_keeps_its_fields_and_adds_the_run(tmp_path, emulator, daemons):
    repo = Repo(tmp_path, base_url=emulator.url)
    repo.file_cohort("beta", USERS[:5])
    daemon = daemons(repo)
    status, body = daemon.request("POST", "/reconcile?cohort=beta", headers={"Authorization": f"Bearer {TOKEN}"})
    answer = json.loads(body)
    assert status == 202 and {"accepted", "cohorts", "queued", "run"} <= set(answer)
    outcome = wait(daemon.url, "", answer["run"], timeout=30, poll=0.1)  # GET /runs is read without the token
    assert outcome.state == "converged" and outcome.total("adds") == 5
    assert look(daemon.url, "", "f" * 32).state == "unknown"  # a run nobody knows: 404
    assert daemon.request("GET", "/runs/..%2Fstatus")[0] == 404
    assert daemon.stop() == 0


def test_a_trigger_written_before_a_restart_is_answered_by_the_daemon_after_it(tmp_path, emulator, daemons):
    repo = Repo(tmp_path, base_url=emulator.url)
    repo.file_cohort("beta", USERS[:5])
    state = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    triggers = Triggers(state)
    triggers.record("beforerestart", [key("beta")], "http")  # the daemon wrote it down and died
    triggers.claim([key("beta")], "deadrun")  # even its run had begun
    daemon = daemons(repo)
    outcome = wait(daemon.url, TOKEN, "beforerestart", timeout=30, poll=0.1)
    assert outcome.state == "converged" and outcome.total("adds") == 5
    triggers.record("never", [key("nosuch")], "http")  # a cohort no run will take: the wait gives up, unknown
    late = wait(daemon.url, TOKEN, "never", timeout=1.0, poll=0.2)
    assert late.state == "unknown" and "still queued" in late.reason and not late.ok
    assert daemon.stop() == 0


def test_a_trigger_for_a_cohort_no_spec_names_fails(tmp_path, emulator, daemons):
    repo = Repo(tmp_path, base_url=emulator.url)
    repo.file_cohort("beta", USERS[:5])
    daemon = daemons(repo)
    outcome = trigger(daemon.url, TOKEN, ["nosuch"], timeout=30, poll=0.1)
    assert outcome.state == "failed" and not outcome.ok
    assert daemon.stop() == 0


@pytest.mark.postgres
@pytest.mark.xdist_group("replicas")
def test_replicas_any_of_them_answers_the_run(tmp_path, emulator, daemons, postgres_schema):
    repo = Repo(tmp_path, state_url=postgres_schema, base_url=emulator.url)
    for cid in ("a1", "a2", "a3", "a4"):
        repo.file_cohort(cid, USERS[:4])
    extra = {"COHORTSYNC_LEASE_TIME": "3s", "COHORTSYNC_INTERVAL": "1h", "COHORTSYNC_DEBOUNCE": "1h"}
    first, second = daemons(repo, **extra), daemons(repo, **extra)
    eventually(lambda: all(emulator.members(c) == USERS[:4] for c in ("a1", "a2", "a3", "a4")), timeout=30)
    for cid in ("a1", "a2", "a3", "a4"):
        repo.uids(cid, USERS[:6])
    accepted = trigger(first.url, TOKEN, [], wait_for=False)
    outcome = wait(second.url, TOKEN, accepted.run, timeout=30, poll=0.2)
    assert outcome.state == "converged", outcome.as_json()
    assert sorted(c["cohort"] for c in outcome.cohorts) == ["a1", "a2", "a3", "a4"]
    assert outcome.total("adds") == 8  # two each, whichever replica held them
    assert first.stop() == 0 and second.stop() == 0
