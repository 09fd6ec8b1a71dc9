"""The fault-schedule machine for replicas: three `cohortsync run` processes on one PostgreSQL state,
a 6 s lease, rounds of members leaving, returning and arriving while one replica is SIGKILLed and
restarted, or SIGSTOPped past its lease and resumed, or a third of the answers are lost, or a spec
is edited, in a random interleaving drawn from a seed. After the last round the faults stop and
every segment must equal its UID file, with nothing unconfirmed, within SETTLE seconds.

One seed runs in `make test`; `make soak` runs ten more (marker `soak`). A failure prints the seed
and the schedule, so that it can be replayed: `SEED=... pytest tests/test_replica_schedules.py`.
"""
from __future__ import annotations

import json
import os
import random
import signal
import time
from dataclasses import dataclass, field

import pytest

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


def play(seed: int, rounds: int, tmp_path, start_emulator, daemons, postgres_schema, capsys) -> None:
    rng = random.Random(seed)
    emulator = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--rate-limit", RATE)
    repo = Repo(tmp_path, state_url=postgres_schema, base_url=emulator.url,
                moengage={"max_payload_bytes": 1500, "max_retries": 2, "rate_limit": RATE})
    desired = {cid: set(rng.sample(range(POOL), rng.randrange(50, 400))) for cid in COHORTS}
    for cid in COHORTS:
        repo.file_cohort(cid, members(cid, desired[cid]))
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
                repo.uids(cid, members(cid, desired[cid]))
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
                repo.file_cohort(cid, members(cid, desired[cid]), description=f"round {r}")
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
