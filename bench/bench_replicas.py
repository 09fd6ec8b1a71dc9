"""Several daemons on one PostgreSQL state: the time to converge after a 1% change, and the rate used.

For 1, 2 and 3 replicas (`cohortsync run` processes) on 200 SQL cohorts, each cohort's query
changes 1% of its members, every cohort is triggered, and the benchmark measures the time until
every cohort converged and the requests per second sent, beside the rate limit the replicas share
(and the emulator enforces). The baseline is the rate limit itself: more replicas plan in
parallel, but together they must never send faster than it, nor, with work waiting, much slower.
"""
from __future__ import annotations

import argparse
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from common import machine

import sqlalchemy as sa

from reconciler.emulator.process import EmulatorProcess
from reconciler.settings.model import RateLimit

WS, KEY, TOKEN = "BENCH_WS", "bench-key", "bench-token"
POSTGRES = os.environ.get("COHORTSYNC_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def build_warehouse(path: Path, cohorts: int, members: int) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (cohort INTEGER, uid TEXT)")
        db.executemany("INSERT INTO t VALUES (?, ?)",
                       ((c, f"u{c:03d}-{i:07d}") for c in range(cohorts) for i in range(members)))
        db.execute("CREATE INDEX t_cohort ON t (cohort, uid)")


def churn(path: Path, cohorts: int, members: int, fraction: float, round_: int) -> None:
    """Each cohort: `fraction` of its members leave, as many new ones join."""
    n = max(1, int(members * fraction))
    with sqlite3.connect(path) as db:
        for c in range(cohorts):
            gone = [r[0] for r in db.execute("SELECT uid FROM t WHERE cohort = ? ORDER BY uid LIMIT ?", (c, n))]
            db.executemany("DELETE FROM t WHERE cohort = ? AND uid = ?", ((c, u) for u in gone))
            db.executemany("INSERT INTO t VALUES (?, ?)", ((c, f"n{round_}-{c:03d}-{i:05d}") for i in range(n)))


class Replica:
    def __init__(self, config: Path, log: Path) -> None:
        env = {**os.environ, "COHORTSYNC_LISTEN": "127.0.0.1:0", "COHORTSYNC_TOKEN": TOKEN}
        self.proc = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--config", str(config)],
                                     stdout=subprocess.PIPE, stderr=open(log, "ab"), text=True, env=env)
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"daemon did not start; see {log}")
        self.url = line.rsplit(" ", 1)[1].strip()

    def trigger(self) -> None:
        req = urllib.request.Request(self.url + "/reconcile", data=b"", method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        urllib.request.urlopen(req, timeout=10).read()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)
        self.proc.stdout.close()


def wait(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.2)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cohorts", type=int, default=200)
    p.add_argument("--members", type=int, default=1000, help="per cohort")
    p.add_argument("--change", type=float, default=0.01, help="fraction of each cohort's members replaced")
    p.add_argument("--rate", default="60/6s", type=RateLimit.parse, help="the window, replicas and emulator alike")
    p.add_argument("--replicas", default="1,2,3")
    p.add_argument("--postgres", default=POSTGRES, help="a PostgreSQL URL; a schema of its own is made and dropped")
    args = p.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    state_url = f"{args.postgres}?options=-csearch_path%3D{schema}"
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp, \
                EmulatorProcess("--rate-limit", str(args.rate), "--workspace-id", WS, "--api-key", KEY) as emu:
            work = Path(tmp)
            wh = work / "wh.db"
            build_warehouse(wh, args.cohorts, args.members)
            (work / "cohorts").mkdir()
            for c in range(args.cohorts):
                (work / "cohorts" / f"c{c:03d}.yaml").write_text(
                    f"id: c{c:03d}\nname: .C{c:03d}\nschedule: 1h\nsource:\n  connection: wh\n"
                    f"  sql: SELECT uid FROM t WHERE cohort = {c} ORDER BY uid\n")
            config = work / "cohortsync.yaml"
            config.write_text(f"cohorts_dir: cohorts\nstate_url: '{state_url}'\npartner: bench\n"
                              f"connections: {{wh: 'sqlite:///{wh}'}}\n"
                              f"moengage: {{base_url: '{emu.url}', workspace_id: {WS}, api_key: {KEY}, "
                              f"rate_limit: '{args.rate}'}}\ndaemon: {{interval: 1h, lease_time: 10s}}\n")
            state = sa.create_engine(state_url)

            def converged_since(t: float) -> int:
                with state.connect() as conn:
                    return int(conn.exec_driver_sql(
                        f"SELECT count(*) FROM cs_cohorts WHERE converged AND last_success_at > {t}").scalar())

            started = time.time()
            first = Replica(config, work / "initial.log")
            wait(lambda: converged_since(started) == args.cohorts, 3600, "the initial sync")
            first.stop()
            for round_, n in enumerate(int(x) for x in args.replicas.split(",")):
                replicas = [Replica(config, work / f"r{n}-{i}.log") for i in range(n)]
                settled = time.time()
                wait(lambda: converged_since(settled - 3600) == args.cohorts, 600, "the replicas to settle")
                time.sleep(2 * 10 / 3)  # shares settle after a few lease renewals
                churn(wh, args.cohorts, args.members, args.change, round_)
                before = len(emu.requests())
                asked = time.time()
                replicas[0].trigger()
                wait(lambda: converged_since(asked) == args.cohorts, 3600, f"{n} replica(s) to converge")
                took = time.time() - asked
                log = emu.requests()[before:]
                throttled = sum(1 for r in log if r["status"] == 429)
                first_at = min(r["time"] - r["elapsed"] for r in log)
                last_at = max(r["time"] for r in log)
                per_second = len(log) / (last_at - first_at)
                fastest = (math.ceil(len(log) / args.rate.requests) - 1) * args.rate.window  # README: "Rate used"
                rows.append((n, took, len(log), per_second, fastest / (last_at - first_at), throttled))
                for r in replicas:
                    r.stop()
            state.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()
    limit = args.rate.requests / args.rate.window
    print(f"\nreplicas on one PostgreSQL state: {args.cohorts} SQL cohorts of {args.members:,}, "
          f"{args.change:.0%} of each replaced, every cohort triggered\n  machine: {machine()}")
    print(f"  {'replicas':>8}  {'converged in':>12}  {'requests':>8}  {'req/s sent':>10}  {'limit req/s':>11}  "
          f"{'rate used':>9}  {'429s':>4}")
    for n, took, count, per_second, used, throttled in rows:
        print(f"  {n:>8}  {took:>11.1f}s  {count:>8}  {per_second:>10.2f}  {limit:>11.2f}  {used:>9.0%}  {throttled:>4}")
    print(f"  (req/s is over the time from the first request to the last answer: a window opens with a burst of "
          f"{args.rate.requests}, so it can exceed N/S; \"rate used\" is the fastest the window allows over that time)")
    ok = all(t == 0 for *_, t in rows) and all(used >= 0.9 for *_, used, _ in rows)
    print(f"  [{'PASS' if ok else 'MISS'}] no 429 with every replica sharing one budget; at least 90% of the rate used")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
