"""A hypothesis state machine over fault schedules: spec edits, lost answers, 5xx, kills, applies.

Two cohorts (one `mirror`, one `add_only`) over a small universe of uids, batches of a few uids
each. Between applies, the specs change: members leave, come back, arrive, files are emptied
(applies use --force). An apply may run under a fault from its k-th request on: the answer is
lost after MoEngage applied the batch, MoEngage answers 500 after applying it, or the process
dies just before a send or just after MoEngage applied one. MoEngage may also be told to refuse
a few uids (a 400 naming the member): their batches are bisected, and a fault may strike half-way
through a bisection. The invariant, after every fault-free apply: each `mirror` segment equals its
spec but for uids the state names as refused, and each `add_only` segment holds every uid its spec
has now (but for refused ones) and no uid its spec never had.

MoEngage is the emulator, a real HTTP server on loopback (in this process, for speed); the
faults sit at the HTTP client's transport seam, as a dying process or a lost packet would.
The state runs on SQLite and on PostgreSQL.
"""
from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
import requests
import yaml
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from reconciler.emulator.server import Emulator, EmulatorConfig, EmulatorServer
from reconciler.emulator.store import SegmentStore
from reconciler.moengage.client import MoEngageClient
from reconciler.running.reconciling import Reconciler
from reconciler.running.selection import RunOptions
from reconciler.settings.config import load_settings
from reconciler.settings.model import RateLimit
from reconciler.state.schema import metadata
from reconciler.state.store import StateStore

UNIVERSE = [f"u{i:02d}" for i in range(40)]
COHORTS = {"m": "mirror", "a": "add_only"}
PAYLOAD = 300  # bytes a request: batches of a few uids, so a fault can strike mid-cohort
FAULTS = ["lose_answer", "answer_500", "kill_before_send", "kill_after_apply"]


class Killed(BaseException):
    """The process died here: nothing after this line runs, nothing uncommitted is kept."""


class FaultySession(requests.Session):
    """The client's transport: from the `at`-th post on, `fault` strikes every request."""

    def __init__(self, fault: str | None, at: int) -> None:
        super().__init__()
        self.fault, self.at, self.posts = fault, at, 0

    def post(self, url, *args, **kwargs):  # type: ignore[override]
        self.posts += 1
        if self.fault is None or self.posts < self.at:
            return super().post(url, *args, **kwargs)
        if self.fault == "kill_before_send":
            raise Killed
        super().post(url, *args, **kwargs)  # MoEngage applies it
        if self.fault == "kill_after_apply":
            raise Killed
        if self.fault == "lose_answer":
            raise requests.ConnectionError("Connection aborted: RemoteDisconnected")
        failed = requests.Response()
        failed.status_code, failed._content = 500, b'{"status": "fail", "error": {"message": "injected"}}'
        return failed


def apply_through(config: Path, session: requests.Session, *, payload: int | None = None,
                  options: RunOptions = RunOptions()) -> bool:
    """One apply in this process with `session` as the client's transport: whether it converged (False when killed)."""
    settings_ = load_settings(str(config))
    account = dataclasses.replace(settings_.moengage, backoff_base=0.001, backoff_max=0.002,
                                  max_payload_bytes=payload or settings_.moengage.max_payload_bytes)
    settings_ = dataclasses.replace(settings_, cohorts_dir=config.parent / "cohorts", moengage=account)
    state = StateStore.open(settings_.state_url)
    client = MoEngageClient(settings_.moengage, session=session)
    reconciler = Reconciler(settings_, state, clients={"default": client})
    try:
        return reconciler.apply(reconciler.load(), options=options).ok
    except Killed:
        return False
    finally:
        reconciler.close()
        client.close()
        state.close()


class FaultSchedules(RuleBasedStateMachine):
    state_url: str = ""  # set per backend by the test functions below
    workdir: Path = Path()

    @initialize()
    def start(self) -> None:
        self.server = EmulatorServer(("127.0.0.1", 0), Emulator(
            EmulatorConfig(rate_limit=RateLimit(100_000, 1.0)), SegmentStore(":memory:")))
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.root = self.workdir / f"repo{id(self)}"
        (self.root / "cohorts" / "uids").mkdir(parents=True, exist_ok=True)
        fresh = StateStore.open(self.state_url)  # each example starts from an empty state
        metadata.drop_all(fresh.engine)
        fresh.close()
        (self.root / "cohortsync.yaml").write_text(yaml.safe_dump({
            "cohorts_dir": "cohorts", "state_url": self.state_url, "partner": "tests",
            "moengage": {"base_url": self.server.url, "workspace_id": "WS", "api_key": "k",
                         "max_retries": 1, "timeout": "5s"}}))
        self.spec = {cid: set() for cid in COHORTS}
        self.refusable: set[str] = set()  # every uid MoEngage was ever told to refuse
        self.ever = {cid: set() for cid in COHORTS}
        for cid, mode in COHORTS.items():
            (self.root / "cohorts" / f"{cid}.yaml").write_text(yaml.safe_dump({
                "id": cid, "name": f".{cid}", "mode": mode, "source": {"file": f"uids/{cid}.txt"}}))
            self._write(cid)
        self.converged = True

    def _write(self, cid: str) -> None:
        (self.root / "cohorts" / "uids" / f"{cid}.txt").write_text("".join(u + "\n" for u in sorted(self.spec[cid])))

    def _apply(self, fault: str | None = None, at: int = 1, resync: bool = False) -> bool:
        return apply_through(self.root / "cohortsync.yaml", FaultySession(fault, at), payload=PAYLOAD,
                             options=RunOptions(force=True, resync=resync))

    @rule(cid=st.sampled_from(sorted(COHORTS)), members=st.sets(st.sampled_from(UNIVERSE), max_size=30))
    def edit_spec(self, cid: str, members: set[str]) -> None:
        self.spec[cid] = members
        self.ever[cid] |= members
        self._write(cid)
        self.converged = False

    @rule(cid=st.sampled_from(sorted(COHORTS)), leave=st.sets(st.sampled_from(UNIVERSE), max_size=10),
          arrive=st.sets(st.sampled_from(UNIVERSE), max_size=10))
    def churn(self, cid: str, leave: set[str], arrive: set[str]) -> None:
        self.edit_spec(cid, (self.spec[cid] - leave) | arrive)

    @rule(fault=st.sampled_from(FAULTS), at=st.integers(min_value=1, max_value=3))
    def faulty_apply(self, fault: str, at: int) -> None:
        self._apply(fault, at)
        self.converged = False

    @rule(uids=st.sets(st.sampled_from(UNIVERSE), max_size=3))
    def refuse(self, uids: set[str]) -> None:
        """MoEngage refuses these uids from now on (none: it refuses nothing any more)."""
        self.server.emulator.config.refuse_uids = frozenset(uids)
        self.refusable |= uids

    @rule()
    def apply(self) -> None:
        assert self._apply(), "a fault-free apply must converge every cohort"
        self.converged = True

    @rule(gone=st.sets(st.sampled_from(UNIVERSE), max_size=5), back=st.sets(st.sampled_from(UNIVERSE), max_size=5))
    def drift_then_resync(self, gone: set[str], back: set[str]) -> None:
        """Someone edits the mirror segment by hand (deletes members, puts back uids that left); a
        fault-free resync repairs it."""
        state = StateStore.open(self.state_url)
        try:
            left = {u for entry in state.changelog.entries(["m"], action="remove_members") for u in entry.uids}
        finally:
            state.close()
        self.server.emulator.store.edit("m", "remove_members", sorted(gone))
        self.server.emulator.store.edit("m", "add_members", sorted(back & left))
        assert self._apply(resync=True), "a fault-free resync must converge every cohort"
        self.converged = True

    @invariant()
    def the_changelog_agrees_with_the_members(self) -> None:
        state = StateStore.open(self.state_url)
        try:
            for cid in COHORTS:
                members: set[str] = set()
                for entry in state.changelog.entries([cid]):
                    if entry.kind.endswith("change"):
                        (members.update if entry.action == "add_members" else members.difference_update)(entry.uids)
                assert members == {u for chunk in state.synced_chunks(cid) for u in chunk}, cid
        finally:
            state.close()

    @precondition(lambda self: self.converged)
    @invariant()
    def segments_match_the_specs(self) -> None:
        store = self.server.emulator.store
        held = {cid: set((store.segment(cid) or {}).get("members", [])) for cid in COHORTS}
        state = StateStore.open(self.state_url)
        try:
            named = {cid: set(state.refusals.of(cid)) for cid in COHORTS}
        finally:
            state.close()
        assert named["m"] | named["a"] <= self.refusable
        assert held["m"] ^ self.spec["m"] <= named["m"], (sorted(held["m"] ^ self.spec["m"]), "mirror")
        assert self.spec["a"] - named["a"] <= held["a"] <= self.ever["a"], "add_only"

    def teardown(self) -> None:
        if hasattr(self, "server"):
            self.server.shutdown()
            self.server.server_close()


def run_machine(state_url: str, workdir: Path) -> None:
    FaultSchedules.state_url, FaultSchedules.workdir = state_url, workdir
    machine = FaultSchedules.TestCase
    machine.settings = settings(max_examples=30, stateful_step_count=15, deadline=None,
                                suppress_health_check=list(HealthCheck))
    machine().runTest()


def test_every_fault_schedule_converges_on_sqlite(tmp_path):
    run_machine(f"sqlite:///{tmp_path / 'state.db'}", tmp_path)


@pytest.mark.postgres
def test_every_fault_schedule_converges_on_postgresql(postgres_schema, tmp_path):
    run_machine(postgres_schema, tmp_path)
