"""Several `cohortsync run` processes on one PostgreSQL state against the emulator: shared cohorts,
one rate budget, failover after SIGKILL, fencing after SIGSTOP, triggers ahead of a backlog.

Heavy (three daemons and an emulator each): one xdist group, so they never run beside each other.
"""
from __future__ import annotations

import json
import signal
import time

import pytest

from reconciler.cli.main import main
from tests.conftest import API_KEY, WORKSPACE
from tests.daemon_process import eventually
from tests.helpers import Repo, warehouse

pytestmark = [pytest.mark.postgres, pytest.mark.xdist_group("replicas")]
LEASE = 3.0  # seconds: short, so that failover tests stay fast
RATE, WINDOW = 60, 6.0
SIZES = [5, 60, 250, 700, 1600]  # members per cohort, cycled over 30 cohorts
EXTRA = {"COHORTSYNC_LEASE_TIME": f"{LEASE:g}s", "COHORTSYNC_INTERVAL": "1h"}


def uids(n: int, start: int = 0) -> list[str]:
    return [f"u{i:06d}" for i in range(start, start + n)]


@pytest.fixture
def daemons(daemons):
    """conftest's daemons, with the short lease and the long timers these tests need."""
    return lambda repo, **extra: daemons(repo, **{**EXTRA, **extra})


def converged(emulator, desired: dict[str, list[str]]) -> bool:
    segments = emulator.segments()
    return all(segments.get(cid, {}).get("size") == len(want) for cid, want in desired.items()) and all(
        emulator.members(cid) == want for cid, want in desired.items())


def overlapping(requests: list[dict]) -> list[str]:
    """Cohorts with two requests in flight at once, by the emulator's own log."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for r in requests:
        if r.get("cohort_id"):
            spans.setdefault(r["cohort_id"], []).append((r["time"] - r["elapsed"], r["time"]))
    bad = []
    for cid, got in spans.items():
        got.sort()
        if any(b[0] < a[1] - 0.001 for a, b in zip(got, got[1:])):
            bad.append(cid)
    return bad


def rate_used(requests: list[dict]) -> float:
    """The least used of the full windows while work was pending: windows laid end to end from the first
    answer, the last (partial) one left out; each window's answers over the N the rate allows."""
    times = sorted(r["time"] for r in requests if r["status"] == 200)
    full = int((times[-1] - times[0]) // WINDOW)
    assert full >= 2, "too little work to measure the rate"
    return min(sum(1 for t in times if times[0] + i * WINDOW <= t < times[0] + (i + 1) * WINDOW) / RATE
               for i in range(full))


def status_of(repo: Repo, capsys) -> dict:
    assert main(["status", "--config", str(repo.config), "--format", "json"]) == 0
    return json.loads(capsys.readouterr()[0])


def test_three_replicas_share_the_cohorts_and_survive_a_kill(tmp_path, start_emulator, daemons, postgres_schema,
                                                              capsys):
    emulator = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--rate-limit", f"{RATE}/{WINDOW:g}s")
    repo = Repo(tmp_path, state_url=postgres_schema, base_url=emulator.url, moengage={
        "max_payload_bytes": 1500, "max_retries": 2, "rate_limit": f"{RATE}/{WINDOW:g}s"})
    desired = {f"c{i:02d}": uids(SIZES[i % len(SIZES)], i * 10) for i in range(30)}
    for cid, members in desired.items():
        repo.file_cohort(cid, members)
    replicas = [daemons(repo) for _ in range(3)]
    eventually(lambda: converged(emulator, desired), timeout=90, interval=0.5)
    log = emulator.requests()
    (tmp_path / "requests.json").write_text(json.dumps(log))
    assert [r for r in log if r["status"] == 429] == []
    assert overlapping(log) == []
    assert len(log) > 2 * RATE  # enough work for the window to matter
    assert rate_used(log) >= 0.9, rate_used(log)
    held = replicas[0].get_json("/status")["replicas"]
    assert len(held) == 3 and sum(r["cohorts"] for r in held) == 30
    assert all(r["cohorts"] > 0 for r in held), held

    # the replica holding the most cohorts dies mid-apply; some specs change meanwhile
    before = len(emulator.requests())
    emulator.configure(answer_latency=0.1)  # a batch is in flight most of the time
    victim_id = max(held, key=lambda r: r["cohorts"])["id"]
    victim = next(d for d in replicas if d.get_json("/status")["replica"]["id"] == victim_id)
    doc = victim.get_json("/status")
    theirs = sorted(row["id"] for row in doc["cohorts"] if row["holder"] == victim_id)
    for cid in theirs + ["c00", "c01", "c02"]:
        desired[cid] = uids(SIZES[int(cid[1:]) % len(SIZES)] + 400, int(cid[1:]) * 10 + 7)
        repo.uids(cid, desired[cid])
    eventually(lambda: len([r for r in emulator.requests()[before:] if r["cohort_id"] in theirs]) >= 3, timeout=20,
               interval=0.05)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    killed = time.monotonic()
    for cid in ["c03", "c04"]:  # changed after the kill: reach whichever replica holds them now
        desired[cid] = uids(SIZES[int(cid[1:]) % len(SIZES)], 90_000)
        repo.uids(cid, desired[cid])
    sent_before_kill = len(emulator.requests())
    took = eventually(lambda: converged(emulator, desired), timeout=60, interval=0.5)
    remaining = len(emulator.requests()) - sent_before_kill
    assert took <= LEASE + remaining / (RATE / WINDOW) + 10, (took, remaining)
    log = emulator.requests()
    assert [r for r in log if r["status"] == 429] == []
    survivors = [d for d in replicas if d is not victim]
    eventually(lambda: len(survivors[0].get_json("/status")["replicas"]) == 2, timeout=LEASE * 3)
    doc = survivors[0].get_json("/status")
    assert sum(r["cohorts"] for r in doc["replicas"]) == 30
    state = status_of(repo, capsys)
    assert {r["id"]: r["synced"] for r in state["cohorts"]} == {cid: len(m) for cid, m in desired.items()}
    eventually(lambda: all(r["unconfirmed"] == 0 for r in status_of(repo, capsys)["cohorts"]), timeout=LEASE * 3)
    assert {r["holder"] for r in status_of(repo, capsys)["cohorts"]} <= {r["id"] for r in doc["replicas"]}
    assert time.monotonic() - killed < 90
    for d in survivors:
        assert d.stop() == 0
        assert "Traceback" not in d.logs()


def rows_of(url: str, key: str) -> dict:
    """Everything the state holds of one cohort, to compare before and after."""
    import sqlalchemy as sa
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return {table: sorted(map(tuple, conn.execute(sa.text(f"SELECT * FROM {table} WHERE {column} = :k"),
                                                          {"k": key}).all()))
                    for table, column in (("cs_cohorts", "id"), ("cs_members", "cohort_id"),
                                          ("cs_batches", "cohort_id"), ("cs_runs", "cohort_id"))}
    finally:
        engine.dispose()


def test_a_paused_replica_commits_nothing_for_the_cohorts_taken_from_it(tmp_path, start_emulator, daemons,
                                                                        postgres_schema, capsys):
    emulator = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--answer-latency", "0.5")
    repo = Repo(tmp_path, state_url=postgres_schema, base_url=emulator.url,
                moengage={"max_payload_bytes": 1500, "max_retries": 2})
    repo.file_cohort("big", uids(50))
    first = daemons(repo)
    eventually(lambda: emulator.members("big") == uids(50), timeout=20)
    standby = daemons(repo)
    eventually(lambda: len(standby.get_json("/status")["replicas"]) == 2)
    assert standby.get_json("/status")["cohorts"][0]["holder"] == first.get_json("/status")["replica"]["id"]
    assert standby.request("GET", "/readyz")[0] == 200  # a standby is ready: it serves, and takes work when it can

    wanted = uids(800)
    repo.uids("big", wanted)
    eventually(lambda: 50 < emulator.segments()["big"]["size"], timeout=20, interval=0.02)
    first.proc.send_signal(signal.SIGSTOP)  # paused while it waits for an answer, past its lease
    eventually(lambda: standby.get_json("/status")["cohorts"][0]["holder"]
               == standby.get_json("/status")["replica"]["id"], timeout=LEASE * 4)
    eventually(lambda: emulator.members("big") == wanted, timeout=30)
    eventually(lambda: status_of(repo, capsys)["cohorts"][0]["unconfirmed"] == 0, timeout=10)
    before = rows_of(postgres_schema, "big")
    seen = len(first.logs())
    first.proc.send_signal(signal.SIGCONT)
    eventually(lambda: "lease_lost: cohort:big" in first.logs()[seen:], timeout=10)
    time.sleep(1.0)  # anything the resumed replica still meant to write would be written by now
    assert rows_of(postgres_schema, "big") == before
    assert "acknowledged" not in first.logs()[seen:]
    assert emulator.members("big") == wanted
    assert first.stop() == 0 and standby.stop() == 0


@pytest.mark.parametrize("backlog_sizes", [[150] * 40, [8000]], ids=["many-cohorts", "one-big-cohort"])
def test_a_triggered_cohort_goes_ahead_of_the_backlog(tmp_path, start_emulator, daemons, postgres_schema,
                                                      backlog_sizes):
    """Routine work (cohorts taken at start, with changes waiting) drains at the rate limit; a triggered
    cohort's first batch still leaves within 10 s: after the cohort in hand, or, when that one is big,
    between two of its batches (it resumes afterwards)."""
    emulator = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--rate-limit", f"{RATE}/{WINDOW:g}s")
    url, engine = warehouse(tmp_path / "wh.db", ["a"])
    repo = Repo(tmp_path, state_url=postgres_schema, base_url=emulator.url, connections={"wh": url},
                moengage={"max_payload_bytes": 1100, "max_retries": 2, "rate_limit": f"{RATE}/{WINDOW:g}s"})
    repo.spec("vip.yaml", "id: vip\nname: .VIP\nschedule: 1h\nsource: {connection: wh, sql: SELECT uid FROM t}\n")
    backlog = [f"b{i:02d}" for i in range(len(backlog_sizes))]
    for cid in backlog:
        repo.file_cohort(cid, uids(5))
    daemon = daemons(repo)
    eventually(lambda: emulator.members("vip") == ["a"] and all(
        emulator.segments().get(cid, {}).get("size") == 5 for cid in backlog), timeout=30)
    assert daemon.stop() == 0
    for i, (cid, size) in enumerate(zip(backlog, backlog_sizes)):  # 150 requests or so: 15 s at the rate
        repo.uids(cid, uids(size, 10_000 * (i + 1)))
    start = len(emulator.requests())
    daemon = daemons(repo)
    eventually(lambda: len(emulator.requests()) - start >= RATE // 2, timeout=20, interval=0.05)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES ('b')")
    engine.dispose()
    asked = time.time()
    assert daemon.trigger("vip") == 202
    eventually(lambda: emulator.members("vip") == ["a", "b"], timeout=20, interval=0.05)
    log = emulator.requests()
    first_vip = min(r["time"] - r["elapsed"] for r in log[start:] if r["cohort_id"] == "vip")
    assert first_vip - asked < 10, first_vip - asked
    eventually(lambda: all(emulator.segments()[cid]["size"] == size for cid, size in zip(backlog, backlog_sizes)),
               timeout=60)
    log = emulator.requests()
    assert sum(1 for r in log if r["cohort_id"] in backlog and r["time"] > first_vip) >= RATE // 2  # still draining
    assert [r for r in log if r["status"] == 429] == []
    assert daemon.stop() == 0


def test_apply_beside_a_replica_takes_the_lease_and_gives_it_back(tmp_path, emulator, daemons, postgres_schema,
                                                                  capsys):
    url, engine = warehouse(tmp_path / "wh.db", ["a"])
    repo = Repo(tmp_path, state_url=postgres_schema, base_url=emulator.url, connections={"wh": url})
    repo.spec("sql.yaml", "id: sql\nname: .SQL\nschedule: 1h\nsource: {connection: wh, sql: SELECT uid FROM t}\n")
    daemon = daemons(repo)
    eventually(lambda: emulator.members("sql") == ["a"])
    replica = daemon.get_json("/status")["replica"]["id"]
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES ('b')")
    engine.dispose()
    code, out, err = repo.run(capsys, "apply")
    assert code == 0, err
    assert emulator.members("sql") == ["a", "b"]
    eventually(lambda: status_of(repo, capsys)["cohorts"][0]["holder"] == replica, timeout=LEASE * 3)
    assert daemon.stop() == 0
