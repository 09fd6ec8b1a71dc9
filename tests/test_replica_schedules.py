"""The fault-schedule machine for replicas: three `cohortsync run` processes on one PostgreSQL state,
a 6 s lease, rounds of members leaving, returning and arriving while one replica is SIGKILLed and
restarted, or SIGSTOPped past its lease and resumed, or a third of the answers are lost, or a spec
is edited, in a random interleaving drawn from a seed. After the last round the faults stop and
every segment must equal its UID file, with nothing unconfirmed, within SETTLE seconds.

The same machine runs with the diff inside the warehouse: the cohorts are queries on a PostgreSQL
warehouse connection with `snapshots:` (their members kept in snapshot tables, each accepted batch
written there under the generation its writer saw), the rounds rewrite their tables, and the
daemons read them every two seconds.

One seed of each runs in `make test`; `make soak` runs ten more of the local one (marker `soak`).
A failure prints the seed and the schedule, so that it can be replayed: `SEED=... pytest
tests/test_replica_schedules.py`.
"""
from __future__ import annotations

import json
import os
import random
import signal
import time
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
import yaml

from reconciler.cli.main import main
from tests.conftest import API_KEY, WORKSPACE
from tests.daemon_process import DaemonProcess
from tests.helpers import Repo

pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("replicas")]
LEASE = 6.0
COHORTS = [f"c{i}" for i in range(6)]
POOL = 900  # uids a cohort draws its members from
SETTLE = 90.0  # seconds after the faults stop
RATE = "120/6s"
ENV = {"COHORTSYNC_LEASE_TIME": f"{LEASE:g}s", "COHORTSYNC_INTERVAL": "20s"}


@dataclass
class Cluster:
    """Three replica slots; a killed or paused one comes back at `back_at` (monotonic)."""

    start: object  # the daemons fixture
    repo: Repo
    procs: list[DaemonProcess] = field(default_factory=list)
    down: dict[int, tuple[str, float]] = field(default_factory=dict)  # slot -> (killed|paused, back at)

    def boot(self) -> None:
        self.procs = [self.start(self.repo, **ENV) for _ in range(3)]

    def kill(self, slot: int, back_in: float) -> None:
        self.procs[slot].proc.send_signal(signal.SIGKILL)
        self.procs[slot].proc.wait()
        self.down[slot] = ("killed", time.monotonic() + back_in)

    def pause(self, slot: int, back_in: float) -> None:
        self.procs[slot].proc.send_signal(signal.SIGSTOP)
        self.down[slot] = ("paused", time.monotonic() + back_in)

    def revive(self, now: float = float("inf")) -> None:
        """Bring back every slot whose time has come (all of them, by default)."""
        for slot, (how, at) in list(self.down.items()):
            if at <= now:
                if how == "killed":
                    self.procs[slot] = self.start(self.repo, **ENV)
                else:
                    self.procs[slot].proc.send_signal(signal.SIGCONT)
                del self.down[slot]

    def up(self) -> list[int]:
        return [slot for slot in range(3) if slot not in self.down]


def members(cid: str, drawn: set[int]) -> list[str]:
    return sorted(f"u{COHORTS.index(cid)}-{n:04d}" for n in drawn)


def pending(repo: Repo, capsys) -> dict[str, tuple[int, int]]:
    """Cohorts whose state is not settled yet: (synced, unconfirmed) by the state, as `status` says."""
    assert main(["status", "--config", str(repo.config), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr()[0])["cohorts"]
    return {r["id"]: (r["synced"], r["unconfirmed"]) for r in rows if r["unconfirmed"]}


def differences(emulator, desired: dict[str, set[int]]) -> dict[str, dict]:
    out = {}
    for cid, drawn in desired.items():
        want, got = set(members(cid, drawn)), set(emulator.members(cid))
        if want != got:
            out[cid] = {"short": len(want - got), "over": len(got - want)}
    return out


class Sources:
    """Where the rounds write each cohort's members: its UID file, or its table in the warehouse."""

    def __init__(self, repo: Repo, warehouse: str | None) -> None:
        self.repo, self.warehouse = repo, warehouse
        self.engine = sa.create_engine(warehouse) if warehouse else None

    def spec(self, cid: str, drawn: set[int], **extra: object) -> None:
        if self.engine is None:
            return self.repo.file_cohort(cid, members(cid, drawn), **extra)
        self.write(cid, drawn)
        self.repo.spec(f"{cid}.yaml", yaml.safe_dump({"id": cid, "name": f".{cid}", "schedule": "2s", **extra,
                                                      "source": {"connection": "wh", "sql": f"SELECT uid FROM d_{cid}"}}))

    def write(self, cid: str, drawn: set[int]) -> None:
        if self.engine is None:
            return self.repo.uids(cid, members(cid, drawn))
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS d_{cid} (uid TEXT)")
            conn.exec_driver_sql(f"DELETE FROM d_{cid}")
            conn.execute(sa.text(f"INSERT INTO d_{cid} (uid) VALUES (:u)"), [{"u": u} for u in members(cid, drawn)])

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def play(seed: int, rounds: int, tmp_path, start_emulator, daemons, postgres_schema, capsys,
         warehouse: bool = False) -> None:
    rng = random.Random(seed)
    emulator = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--rate-limit", RATE)
    schema = postgres_schema.rsplit("%3D", 1)[1]
    repo = Repo(tmp_path, state_url=postgres_schema, base_url=emulator.url,
                moengage={"max_payload_bytes": 1500, "max_retries": 2, "rate_limit": RATE},
                connections={"wh": {"url": postgres_schema, "snapshots": f"{schema}_snap"}} if warehouse else None)
    sources = Sources(repo, postgres_schema if warehouse else None)
    desired = {cid: set(rng.sample(range(POOL), rng.randrange(50, 400))) for cid in COHORTS}
    for cid in COHORTS:
        sources.spec(cid, desired[cid])
    cluster = Cluster(daemons, repo)
    cluster.boot()
    schedule: list[str] = []
    try:
        for r in range(rounds):
            for cid in rng.sample(COHORTS, rng.randrange(1, 4)):  # members leave, return and arrive
                drawn = desired[cid]
                leave = set(rng.sample(sorted(drawn), min(len(drawn), rng.randrange(0, 120))))
                arrive = set(rng.sample(range(POOL), rng.randrange(0, 150)))
                desired[cid] = (drawn - leave) | arrive
                sources.write(cid, desired[cid])
                schedule.append(f"{r}: {cid} -{len(leave)} +{len(arrive - drawn)}")
            cluster.revive(time.monotonic())
            fault = rng.choice(["kill", "pause", "lose", "edit", "none"])
            slots = cluster.up()
            if fault == "kill" and len(slots) > 1:
                slot, back = rng.choice(slots), rng.uniform(0, 4)
                cluster.kill(slot, back)
                schedule.append(f"{r}: kill replica {slot}, back in {back:.1f} s")
            elif fault == "pause" and len(slots) > 1:
                slot, back = rng.choice(slots), rng.uniform(1.2, 1.8) * LEASE
                cluster.pause(slot, back)
                schedule.append(f"{r}: pause replica {slot} for {back:.1f} s")
            elif fault == "lose":
                rate = rng.choice([0.0, 0.33])
                emulator.configure(lose_answer_rate=rate)
                schedule.append(f"{r}: lose {rate:.0%} of the answers")
            elif fault == "edit":
                cid = rng.choice(COHORTS)
                sources.spec(cid, desired[cid], description=f"round {r}")
                schedule.append(f"{r}: edit the spec of {cid}")
            time.sleep(rng.uniform(0.5, 3.0))
        emulator.configure(lose_answer_rate=0.0)
        cluster.revive()
        schedule.append("faults stop")
        deadline, left = time.monotonic() + SETTLE, None
        while time.monotonic() < deadline:
            left = differences(emulator, desired) or pending(repo, capsys)
            if not left:
                break
            time.sleep(1.0)
        assert not left, f"seed {seed}: not converged {SETTLE:g} s after the faults stopped: {left}\n" + \
            "\n".join(schedule)
        logs = "".join(d.logs() for d in cluster.procs)
        assert "Traceback" not in logs, f"seed {seed}:\n" + "\n".join(schedule)
    finally:
        cluster.revive()
        sources.close()


@pytest.mark.timeout(300)
def test_replicas_converge_after_a_schedule_of_kills_pauses_and_lost_answers(tmp_path, start_emulator, daemons,
                                                                             postgres_schema, capsys):
    seed = int(os.environ.get("SEED", "20261206"))
    play(seed, 10, tmp_path, start_emulator, daemons, postgres_schema, capsys)


@pytest.mark.soak
@pytest.mark.timeout(400)
@pytest.mark.parametrize("seed", range(1, 11))
def test_soak_replicas_under_random_schedules(seed, tmp_path, start_emulator, daemons, postgres_schema, capsys):
    play(seed, 10, tmp_path, start_emulator, daemons, postgres_schema, capsys)


@pytest.mark.timeout(300)
def test_replicas_converge_with_the_diff_in_the_warehouse(tmp_path, start_emulator, daemons, postgres_schema, capsys):
    seed = int(os.environ.get("SEED", "20261206"))  # the snapshots' schema is dropped with the state's (conftest)
    play(seed, 10, tmp_path, start_emulator, daemons, postgres_schema, capsys, warehouse=True)
