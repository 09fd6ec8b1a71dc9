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

The same machine runs on both diff paths. On the local one the cohorts read UID files and their
members are kept in the state. On the warehouse one (snapshots/) they are queries on a warehouse
connection with `snapshots:`, diffed in the warehouse against their snapshot tables; there the
process may also die between a batch's write to the snapshot and the state's record of it, and
the connection's `snapshots` may be taken away and given back, so that members move out of the
warehouse and back in between faults, and a move may die after the members were copied to their
new place, before the state recorded it.

MoEngage is the emulator, a real HTTP server on loopback (in this process, for speed); the
faults sit at the HTTP client's transport seam, as a dying process or a lost packet would.
The state runs on SQLite and on PostgreSQL.
"""
from __future__ import annotations

import dataclasses
import threading
from contextlib import contextmanager, nullcontext
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa
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
from reconciler.snapshots.placement import SnapshotMembers, Snapshots
from reconciler.sources.reading import Engines
from reconciler.state.schema import metadata
from reconciler.state.store import StateStore

UNIVERSE = [f"u{i:02d}" for i in range(40)]
COHORTS = {"m": "mirror", "a": "add_only"}
PAYLOAD = 300  # bytes a request: batches of a few uids, so a fault can strike mid-cohort
FAULTS = ["lose_answer", "answer_500", "kill_before_send", "kill_after_apply"]
WAREHOUSE_FAULTS = FAULTS + ["kill_after_snapshot_write",  # the batch is in the snapshot, not yet in the state
                              "kill_during_move"]  # the members copied to their new place, the state not told yet


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


@contextmanager
def dying_after_snapshot_writes(at: int) -> Iterator[None]:
    """From the `at`-th batch settled into a warehouse snapshot on, the process dies right after the
    snapshot's commit, before the state records it."""
    real, count = StateStore.settle_batch, [0]

    def settle(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs.get("snapshot") is not None:
            count[0] += 1
            if count[0] >= at:
                raise Killed
        return real(self, *args, **kwargs)

    StateStore.settle_batch = settle  # type: ignore[method-assign]
    try:
        yield
    finally:
        StateStore.settle_batch = real  # type: ignore[method-assign]


@contextmanager
def dying_during_moves() -> Iterator[None]:
    """A move dies after the members were copied to their new place, before the state records it."""
    real = StateStore.keep_members_in, StateStore.keep_members_here

    def die(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise Killed

    StateStore.keep_members_in = StateStore.keep_members_here = die  # type: ignore[method-assign]
    try:
        yield
    finally:
        StateStore.keep_members_in, StateStore.keep_members_here = real  # type: ignore[method-assign]


def members_now(state: StateStore, engines: Engines, cid: str) -> set[str]:
    """A cohort's members as the state knows them, wherever they are kept: the state, or its warehouse
    snapshot, less the one write a process may have made there and died before recording; that write's
    uids must still be pending in the state."""
    record = state.cohort(cid)
    members = Snapshots(state, engines, 60.0).members(record, cid)
    found = {u for chunk in members.in_order() for u in chunk}
    if isinstance(members, SnapshotMembers):
        with members.snapshot.reading() as conn:
            mark = members.snapshot.found(conn)
        assert mark is not None and record is not None and record.mark is not None
        if mark.mark.generation == record.mark.generation + 1:  # written there, not yet recorded here
            assert set(mark.last_uids) <= set(state.unconfirmed_uids(cid)), "an unrecorded write is pending"
            if mark.last_action == "add_members":
                found -= set(mark.last_uids)
            else:
                found |= set(mark.last_uids)
        else:
            assert mark.mark == record.mark, (mark.mark, record.mark)
    return found


class FaultSchedules(RuleBasedStateMachine):
    state_url: str = ""  # set per backend by the test functions below
    workdir: Path = Path()
    warehouse: str | None = None  # a warehouse URL: the cohorts are queries diffed there (snapshots)
    schema: str = "main"  # where their snapshots are kept

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
        self.config = self.root / "cohortsync.yaml"
        self.snapshots = self.warehouse is not None
        self._configure()
        self.spec = {cid: set() for cid in COHORTS}
        self.refusable: set[str] = set()  # every uid MoEngage was ever told to refuse
        self.ever = {cid: set() for cid in COHORTS}
        if self.warehouse is not None:
            self.tables = sa.create_engine(self.warehouse, poolclass=sa.pool.NullPool)
            with self.tables.begin() as conn:  # each example starts from an empty warehouse too
                old = sa.MetaData(schema=self.schema)
                old.reflect(conn, schema=self.schema)
                old.drop_all(conn)
                for cid in COHORTS:
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS desired_{cid}")
                    conn.exec_driver_sql(f"CREATE TABLE desired_{cid} (uid VARCHAR(64))")
        for cid, mode in COHORTS.items():
            source = {"file": f"uids/{cid}.txt"} if self.warehouse is None else \
                {"connection": "warehouse", "sql": f"SELECT uid FROM desired_{cid}"}
            (self.root / "cohorts" / f"{cid}.yaml").write_text(yaml.safe_dump({
                "id": cid, "name": f".{cid}", "mode": mode, "source": source}))
            self._write(cid)
        self.converged = True

    def _configure(self) -> None:
        doc: dict = {"cohorts_dir": "cohorts", "state_url": self.state_url, "partner": "tests",
                     "moengage": {"base_url": self.server.url, "workspace_id": "WS", "api_key": "k",
                                  "max_retries": 1, "timeout": "5s"}}
        if self.warehouse is not None:
            doc["connections"] = {"warehouse": {"url": self.warehouse, **({"snapshots": self.schema}
                                                                          if self.snapshots else {})}}
        self.config.write_text(yaml.safe_dump(doc))

    def _write(self, cid: str) -> None:
        if self.warehouse is None:
            (self.root / "cohorts" / "uids" / f"{cid}.txt").write_text("".join(u + "\n" for u in sorted(self.spec[cid])))
            return
        with self.tables.begin() as conn:
            conn.exec_driver_sql(f"DELETE FROM desired_{cid}")
            if self.spec[cid]:
                conn.execute(sa.text(f"INSERT INTO desired_{cid} (uid) VALUES (:u)"), [{"u": u} for u in self.spec[cid]])

    def _apply(self, fault: str | None = None, at: int = 1, resync: bool = False) -> bool:
        session = FaultySession(fault if fault in FAULTS else None, at)
        dying = {"kill_after_snapshot_write": lambda: dying_after_snapshot_writes(at),
                 "kill_during_move": dying_during_moves}.get(fault or "", nullcontext)
        with dying():
            return apply_through(self.config, session, payload=PAYLOAD, options=RunOptions(force=True, resync=resync))

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

    @rule(fault=st.sampled_from(WAREHOUSE_FAULTS), at=st.integers(min_value=1, max_value=3))
    def faulty_apply(self, fault: str, at: int) -> None:
        if fault not in FAULTS and self.warehouse is None:
            fault = "kill_after_apply"  # the local path has no snapshot to die after, nor moves
        self._apply(fault, at)
        self.converged = False

    @precondition(lambda self: self.warehouse is not None)
    @rule()
    def toggle_snapshots(self) -> None:
        """The connection's `snapshots` taken away (or given back): the next apply moves the members out of
        the warehouse (or in), whatever is pending, and sends nothing for the move itself."""
        self.snapshots = not self.snapshots
        self._configure()

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
        engines = Engines(load_settings(str(self.config)).connections)
        try:
            logged = {cid: set() for cid in COHORTS}
            for cid in COHORTS:
                for entry in state.changelog.entries([cid]):
                    if entry.kind.endswith("change"):
                        (logged[cid].update if entry.action == "add_members" else logged[cid].difference_update)(entry.uids)
            for cid in COHORTS:
                assert logged[cid] == members_now(state, engines, cid), cid
        finally:
            engines.close()
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
        if hasattr(self, "tables"):
            self.tables.dispose()


def run_machine(state_url: str, workdir: Path, warehouse: str | None = None, schema: str = "main",
                examples: int = 30) -> None:
    FaultSchedules.state_url, FaultSchedules.workdir = state_url, workdir
    FaultSchedules.warehouse, FaultSchedules.schema = warehouse, schema
    machine = FaultSchedules.TestCase
    machine.settings = settings(max_examples=examples, stateful_step_count=15, deadline=None,
                                suppress_health_check=list(HealthCheck))
    machine().runTest()


def test_every_fault_schedule_converges_on_sqlite(tmp_path):
    run_machine(f"sqlite:///{tmp_path / 'state.db'}", tmp_path)


@pytest.mark.postgres
def test_every_fault_schedule_converges_on_postgresql(postgres_schema, tmp_path):
    run_machine(postgres_schema, tmp_path)


@pytest.mark.timeout(300)
def test_every_fault_schedule_converges_with_the_diff_in_the_warehouse(tmp_path):
    """The warehouse path: a SQLite warehouse file beside a SQLite state."""
    run_machine(f"sqlite:///{tmp_path / 'state.db'}", tmp_path, warehouse=f"sqlite:///{tmp_path / 'wh.db'}")


@pytest.mark.postgres
@pytest.mark.timeout(300)  # about 80 s on a quiet machine: each apply writes two databases
def test_every_fault_schedule_converges_with_the_diff_in_a_postgresql_warehouse(postgres_schema, tmp_path):
    """The warehouse path on PostgreSQL: the state in one schema, the cohorts' tables and their snapshots in
    another of the same server (its own schema, as a user would give cohortsync)."""
    schema = postgres_schema.rsplit("%3D", 1)[1] + "_snap"  # dropped with the state's schema (conftest)
    run_machine(postgres_schema, tmp_path, warehouse=postgres_schema, schema=schema)
