"""Row-level errors: a batch MoEngage refuses for one member is bisected, the refused uids are kept.

The pure bisection first (its cost bound, against a fake `send`), then the local checks, then end to
end against the emulator process told to refuse some uids (`--refuse-uids`): every other uid arrives
in one apply, the refused ones are named, kept and not sent again, unless their row changes or
`apply --retry-refused` asks; a 400 naming another field still fails the cohort at once.
"""
from __future__ import annotations

import json
import math

import pytest

from reconciler.common.errors import CohortApiError, MembersRefused
from reconciler.moengage.uids import MAX_UID_LENGTH, names_members, uid_problem, unsendable
from reconciler.running.bisecting import Bisection
from tests.conftest import API_KEY, WORKSPACE
from tests.helpers import Repo


# --- the pure bisection -----------------------------------------------------------------------
def bisect(uids: list[str], bad: set[str], limit: int = 100) -> tuple[list[str], list[str], int]:
    """(accepted, refused, requests) of bisecting `uids` whose first request was refused."""
    accepted: list[str] = []
    refused: list[str] = []

    def send(part: tuple[str, ...]) -> None:
        if bad & set(part):
            raise MembersRefused("invalid member", status=400, attribute="parameters.members[0].uid")
        accepted.extend(part)

    b = Bisection("c", send, lambda uid, why: refused.append(uid), limit=limit)
    b.run(uids, MembersRefused("invalid member", status=400))
    return accepted, refused, b.requests


@pytest.mark.parametrize("size, bad_at", [(2, [0]), (2, [1]), (7, [3]), (1000, [0]), (1000, [999]), (1024, [517]),
                                          (1000, [1, 2, 3]), (1000, [10, 500, 990]), (64, list(range(64)))])
def test_bisection_isolates_exactly_the_refused_uids(size, bad_at):
    uids = [f"u{i:05d}" for i in range(size)]
    bad = {uids[i] for i in bad_at}
    accepted, refused, requests = bisect(uids, bad)
    assert sorted(refused) == sorted(bad) and sorted(accepted) == sorted(set(uids) - bad)
    assert len(accepted) == len(set(accepted))  # every good uid arrives once


@pytest.mark.parametrize("size", [2, 16, 1000, 5500])
def test_one_refused_uid_costs_at_most_log2_of_the_batch_plus_one(size):
    uids = [f"u{i:05d}" for i in range(size)]
    worst = max(bisect(uids, {uids[i]})[2] for i in range(0, size, max(1, size // 97)))
    assert worst <= math.ceil(math.log2(size)) + 1


def test_a_bisection_that_refuses_too_many_fails_the_cohort_and_keeps_what_it_found():
    uids = [f"u{i:03d}" for i in range(50)]
    found: list[str] = []

    def send(part: tuple[str, ...]) -> None:
        raise MembersRefused("everything refused", status=400)

    with pytest.raises(CohortApiError, match="more than"):
        Bisection("c", send, lambda uid, why: found.append(uid), limit=5).run(uids, MembersRefused("x", status=400))
    assert len(found) == 5


# --- what is refused before sending, and which 400s are about members -------------------------------
@pytest.mark.parametrize("uid, refused", [
    ("u1", False), ("", True), ("   ", True), ("\u2003", True), ("a\x00b", True), ("a\tb", True),
    ("a\x85b", True), ("x" * MAX_UID_LENGTH, False), ("x" * (MAX_UID_LENGTH + 1), True), ("é" * 300, False),
])
def test_uids_that_can_never_be_valid(uid, refused):
    assert (uid_problem(uid) is not None) == refused
    assert [u for u, _ in unsendable(["ok", uid])] == ([uid] if refused else [])
    assert [u for u, _ in unsendable([uid, "ok", "a\nb"])] == ([uid] if refused else []) + ["a\nb"]


@pytest.mark.parametrize("attribute, kind, members", [
    (None, None, True), ("", "ValidationError", True), ("parameters.members", "ValidationError", True),
    ("parameters.members[17].uid", "InvalidAttributeError", True), ("members", None, True),
    ("parameters.cohort_name", "ValidationError", False), ("partner", "MissingAttributeError", False),
    ("partner", "ValidationError", False), ("body", "Malformed JSON", False),
    ("parameters.members", "MissingAttributeError", False), ("MOE-APPKEY", "MissingAttributeError", False),
])
def test_which_400s_name_the_members(attribute, kind, members):
    assert names_members(attribute, kind) == members


# --- end to end, against the emulator told to refuse some uids --------------------------------------
BAD = ["u00100", "u07777", "u19999"]


@pytest.fixture
def refusing(tmp_path, start_emulator, monkeypatch) -> tuple[Repo, object]:
    """A repository whose emulator refuses BAD (given as a file, as users would)."""
    listed = tmp_path / "refuse.txt"
    listed.write_text("\n".join(BAD) + "\n")
    emu = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--refuse-uids", str(listed))
    monkeypatch.setenv("TEST_WS", WORKSPACE)
    monkeypatch.setenv("TEST_KEY", API_KEY)
    return Repo(tmp_path / "repo", base_url=emu.url), emu


def apply_json(repo: Repo, capsys, *args: str) -> tuple[int, dict]:
    code, out, _ = repo.run(capsys, "apply", "--format", "json", *args)
    return code, {c["id"]: c for c in json.loads(out)["cohorts"]}


def test_three_refused_uids_in_20000_do_not_sink_the_cohort(refusing, capsys):
    repo, emu = refusing
    uids = [f"u{i:05d}" for i in range(20_000)]
    repo.file_cohort("big", uids)
    code, cohorts = apply_json(repo, capsys)
    big = cohorts["big"]
    assert code == 0 and big["result"] == "converged", big
    assert sorted(emu.members("big")) == sorted(set(uids) - set(BAD))  # every other uid, in one apply
    assert big["refused"] == 3 and big["refused_now"] == 3 and sorted(big["sample_refused"]) == BAD
    batch = math.ceil(20_000 / (big["requests_sent"] - big["bisect_requests"]))  # uids of one ordinary request
    assert big["bisect_requests"] <= 3 * (math.ceil(math.log2(batch)) + 1)
    code, out, _ = repo.run(capsys, "refused", "--format", "json")
    listed = json.loads(out)["refused"]
    assert [(r["cohort"], r["uid"]) for r in listed] == [("big", u) for u in BAD]
    assert all("not a valid user id" in r["error"] and r["since"] for r in listed)
    code, out, _ = repo.run(capsys, "status", "--format", "json")
    assert json.loads(out)["cohorts"][0]["refused"] == 3
    assert "3 uids refused" in repo.run(capsys, "status")[1]
    code, out, _ = repo.run(capsys, "history", "--format", "json")
    assert json.loads(out)["runs"][0]["failed"] == 0  # refused is not failed
    # a second apply, with the source changed elsewhere: the new uid goes, none of the three
    refused_before = emu.get("/_emulator/refused")["refused_requests"]
    repo.uids("big", [*uids, "u20000"])
    code, cohorts = apply_json(repo, capsys)
    assert code == 0 and cohorts["big"]["sent_adds"] == 1 and cohorts["big"]["refused"] == 3
    assert emu.get("/_emulator/refused")["refused_requests"] == refused_before
    assert "u20000" in emu.members("big") and not set(BAD) & set(emu.members("big"))
    code, out, _ = repo.run(capsys, "plan", "--format", "json")
    assert json.loads(out)["cohorts"][0]["status"] == "unchanged"


def test_retry_refused_sends_them_again_and_an_acceptance_clears_them(refusing, capsys):
    repo, emu = refusing
    repo.file_cohort("c", [f"u{i:05d}" for i in range(95, 105)])
    assert apply_json(repo, capsys)[1]["c"]["refused"] == 1
    emu.configure(refuse_uids=[])  # MoEngage accepts it now (say its user was fixed)
    code, cohorts = apply_json(repo, capsys)
    assert code == 0 and cohorts["c"]["refused"] == 1 and "u00100" not in emu.members("c")  # not resent unasked
    code, cohorts = apply_json(repo, capsys, "--retry-refused")
    assert code == 0 and cohorts["c"]["sent_adds"] == 1 and "u00100" in emu.members("c")
    assert repo.run(capsys, "refused")[1].startswith("No refused uids")


def test_a_changed_row_is_tried_again(refusing, capsys):
    repo, emu = refusing
    uids = [f"u{i:05d}" for i in range(95, 105)]
    repo.file_cohort("c", uids)
    assert apply_json(repo, capsys)[1]["c"]["refused"] == 1
    repo.uids("c", [u for u in uids if u != "u00100"])  # its row left the source: the refusal is dropped
    code, cohorts = apply_json(repo, capsys)
    assert code == 0 and "refused" not in cohorts["c"]
    emu.configure(refuse_uids=[])
    repo.uids("c", uids)  # and came back: it is sent again, unasked
    code, cohorts = apply_json(repo, capsys)
    assert code == 0 and cohorts["c"]["sent_adds"] == 1 and "u00100" in emu.members("c")


def test_uids_that_can_never_be_valid_are_refused_locally_and_never_sent(repo, emulator, capsys):
    long = "x" * (MAX_UID_LENGTH + 1)
    repo.file_cohort("c", ["a", long, "b\x85c", "d"])
    code, cohorts = apply_json(repo, capsys)
    assert code == 0 and cohorts["c"]["refused"] == 2 and cohorts["c"]["sent_adds"] == 2
    assert sorted(emulator.members("c")) == ["a", "d"]
    assert all(r["members"] == 2 for r in emulator.requests())  # one request, the two good uids
    code, out, _ = repo.run(capsys, "refused", "--cohort", "c")
    assert "over MoEngage's 512" in out and "control character" in out
    code, out, _ = repo.run(capsys, "plan", "--format", "json")
    assert json.loads(out)["cohorts"][0]["refused"] == 2


def test_a_400_on_another_field_still_fails_the_cohort_at_once(repo, emulator, capsys):
    repo.file_cohort("c", [f"u{i}" for i in range(50)])
    emulator.configure(name_rule="no_leading_period")  # MoEngage refuses the name: a 400 on cohort_name
    code, cohorts = apply_json(repo, capsys)
    assert code == 1 and cohorts["c"]["result"] == "failed" and "cohort_name" in cohorts["c"]["error"]
    assert len(emulator.requests()) == 1 and "refused" not in cohorts["c"]  # no bisection
    code, out, _ = repo.run(capsys, "refused")
    assert out.startswith("No refused uids")


# --- a kill half-way through a bisection ------------------------------------------------------------
@pytest.mark.parametrize("fault", ["kill_before_send", "kill_after_apply"])
def test_a_kill_mid_bisection_leaves_exact_bookkeeping(tmp_path, fault):
    import threading

    import yaml

    from reconciler.emulator.server import Emulator, EmulatorConfig, EmulatorServer
    from reconciler.emulator.store import SegmentStore
    from reconciler.settings.config import load_settings
    from reconciler.settings.model import RateLimit
    from reconciler.state.store import StateStore
    from tests.test_fault_schedules import FaultySession, apply_through

    uids = [f"u{i:02d}" for i in range(16)]
    server = EmulatorServer(("127.0.0.1", 0), Emulator(EmulatorConfig(
        rate_limit=RateLimit(100_000, 1.0), refuse_uids=frozenset({"u13"})), SegmentStore(":memory:")))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    repo = Repo(tmp_path, base_url=server.url)
    repo.file_cohort("c", uids)
    doc = yaml.safe_load(repo.config.read_text())
    doc["moengage"].update(workspace_id="WS", api_key="k")
    repo.config.write_text(yaml.safe_dump(doc))

    try:
        assert not apply_through(repo.config, FaultySession(fault, 3))  # post 1 refused, post 2 a half accepted, dies at post 3
        state = StateStore.open(load_settings(str(repo.config)).state_url)
        try:
            members = {u for chunk in state.synced_chunks("c") for u in chunk}
            pending = {u for batch in state.pending("c") for u in batch.uids}
            held = set(server.emulator.store.segment("c")["members"])
            assert members == set(uids[:8])  # the first half, settled
            # the part in flight (the first half of the refused second half) is pending, alone: what MoEngage
            # may have taken unanswered is in it, and nothing else is uncertain
            assert len(state.pending("c")) == 1 and pending == set(uids[8:12]) and held - members <= pending
            assert state.cohort("c").unconfirmed == len(pending) and state.cohort("c").synced_count == 8
        finally:
            state.close()
        assert apply_through(repo.config, FaultySession(None, 1))  # the next run finishes the job
        assert set(server.emulator.store.segment("c")["members"]) == set(uids) - {"u13"}
    finally:
        server.shutdown()
        server.server_close()


# --- the state's contract (SQLite and PostgreSQL) -----------------------------------------------------
def test_refusals_are_kept_with_since_and_leave_the_uncertain_uids(state):
    from reconciler.state.records import Cohort
    cohort = Cohort("c", ".C", None)
    lost = state.begin_batch(cohort, "add_members", ["a", "b", "c"])  # never answered: all three uncertain
    assert state.cohort("c").unconfirmed == 3
    state.refuse_uids(cohort, "add_members", [("b", "HTTP 400 bad uid")])
    first = state.refusals.of("c")["b"]
    assert first.error == "HTTP 400 bad uid" and first.presence == "add_members"
    assert [p.uids for p in state.pending("c")] == [["a", "c"]] and state.cohort("c").refused == 1
    state.refuse_uids(cohort, "add_members", [("b", "HTTP 400 again")])
    again = state.refusals.of("c")["b"]
    assert again.since == first.since and again.at >= first.at and again.error == "HTTP 400 again"
    state.settle_batch(lost, "c", "add_members", ["a", "c"], clear_refused=True)
    assert state.refusals.of("c")["b"]  # only the accepted uids' refusals go
    state.refusals.update("c", "add_members", [("z" * 600, "too long")], stale=["b"])
    assert list(state.refusals.of("c")) == ["z" * 600] and state.refusals.counts() == {"c": 1}
    state.forget("c")
    assert state.refusals.listing() == []


# --- shown: alerts, metrics, text ---------------------------------------------------------------------
def test_a_run_that_refuses_uids_alerts_once_with_a_sample():
    from reconciler.common.statuses import Status
    from reconciler.notify.events import events_of
    from reconciler.planning.plans import CohortPlan
    from reconciler.running.applying import CohortOutcome
    from reconciler.running.reconciling import RunReport
    plan = CohortPlan("c", ".c", Status.CHANGED, desired=12, synced=10, adds=2, refused=1, sample_refused=["old"])
    outcome = CohortOutcome(plan, Status.CONVERGED, sent_adds=1, refused_now=["u1"])
    events = events_of(RunReport("run1", [outcome], before={}))
    assert [e.kind for e in events] == ["refused"] and events[0].counts["refused"] == 2
    assert "u1" in events[0].reason and "cohortsync refused --cohort c" in events[0].reason
    quiet = CohortOutcome(plan, Status.CONVERGED)  # held back as before: nothing new to say
    assert events_of(RunReport("run2", [quiet], before={})) == []


def test_the_gauge_and_the_text_name_the_refused():
    from reconciler.daemon.metrics import Metrics
    from reconciler.planning.plans import CohortPlan
    from reconciler.running import render
    from reconciler.running.reconciling import RunReport
    metrics = Metrics()
    metrics.observe_run(RunReport("r", []), 0.1, {}, {}, {}, {"big": 3})
    assert 'cohortsync_refused_members{cohort="big"} 3.0' in metrics.exposition().decode()
    plan = CohortPlan("big", ".big", "changed", desired=10, adds=1, refused=3, sample_refused=BAD)
    assert "3 uids refused (u00100, u07777, u19999)" in render.plan_text([plan])
    assert "3 uids refused" in render.plan_markdown([plan])
    assert "refused" not in json.loads(render.plan_json([CohortPlan("x", ".x", "unchanged")]))["cohorts"][0]


def test_a_refused_remove_is_held_back_and_the_guard_counts_only_what_is_sent(refusing, capsys):
    repo, emu = refusing
    uids = [f"u{i:05d}" for i in range(95, 105)]
    emu.configure(refuse_uids=[])
    repo.file_cohort("c", uids, guards={"max_removals": 1})
    assert apply_json(repo, capsys)[0] == 0 and len(emu.members("c")) == 10
    emu.configure(refuse_uids=["u00100"])  # MoEngage now refuses it, on its remove too
    repo.uids("c", [u for u in uids if u != "u00100"])
    code, cohorts = apply_json(repo, capsys)
    assert code == 0 and cohorts["c"]["refused_now"] == 1 and cohorts["c"]["sent_removes"] == 0
    repo.uids("c", [u for u in uids if u not in ("u00100", "u00101")])  # one more leaves
    code, out, _ = repo.run(capsys, "plan", "--format", "json")
    plan = json.loads(out)["cohorts"][0]
    assert plan["status"] == "changed" and plan["removes"] == 1 and plan["refused"] == 1  # not blocked: 1 <= 1
    code, cohorts = apply_json(repo, capsys)
    assert code == 0 and "u00101" not in emu.members("c") and "u00100" in emu.members("c")


def test_state_check_holds_refusals_to_their_cohort(state):
    from reconciler.state.checking import check_state
    from reconciler.state.records import Cohort
    state.refuse_uids(Cohort("c", ".C", None), "add_members", [("u1", "HTTP 400")])
    assert check_state(state) == []
    state.refusals.update("gone", "add_members", [("u2", "too long")])
    assert check_state(state) == ["refused uid 'u2' of gone, which has no cohort record"]
