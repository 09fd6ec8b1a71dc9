"""`plan` of one big cohort with 1% churn, from a UID file (sorted and not) and from a SQL table.

Target (issue 6), at --size 10M: wall time at most half of a naive Python-set diff of the same
data, and peak memory at most 150 MB. Memory is the whole process tree's (the plan, its state
reader, sort and comm: see common.measure). The baseline runs in the same way, on the same files.
"""
from __future__ import annotations

import os
import random
import sqlite3
import sys
from pathlib import Path

from common import ROOT, Run, churned, cohortsync, measure, parser, report, workspace, write_state

NAIVE = r"""
import sqlite3, sys
desired = {line.strip() for line in open(sys.argv[1])} - {""}
if sys.argv[2].startswith("postgresql"):
    import psycopg
    rows = psycopg.connect(sys.argv[2]).execute("SELECT uid FROM cs_members WHERE cohort_id = 'big'")
else:
    rows = sqlite3.connect(sys.argv[2]).execute("SELECT uid FROM cs_members WHERE cohort_id = 'big'")
synced = {row[0] for row in rows}
print(len(desired - synced), len(synced - desired))
"""

TO_POSTGRES = r"""
import sqlite3, sys
import psycopg
from reconciler.state.store import StateStore
sqlite_path, url, libpq, schema = sys.argv[1:]
with psycopg.connect(libpq, autocommit=True) as conn:
    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    conn.execute(f'CREATE SCHEMA "{schema}"')
StateStore.open(url).close()
source = sqlite3.connect(sqlite_path)
with psycopg.connect(libpq, options=f"-csearch_path={schema}") as conn:
    cohort = source.execute("SELECT id, name, synced_count FROM cs_cohorts").fetchone()
    conn.execute("INSERT INTO cs_cohorts (id, name, synced_count, converged) VALUES (%s, %s, %s, false)", cohort)
    with conn.cursor().copy("COPY cs_members (cohort_id, uid) FROM STDIN") as copy:
        rows = source.execute("SELECT cohort_id, uid FROM cs_members ORDER BY uid")
        while batch := rows.fetchmany(50_000):
            copy.write("".join(f"{c}\t{u}\n" for c, u in batch))
with psycopg.connect(libpq, options=f"-csearch_path={schema}", autocommit=True) as conn:
    conn.execute("VACUUM ANALYZE cs_members")  # as autovacuum leaves a settled table: index-only scans
"""


def build(work: Path, n: int) -> None:
    synced, desired = churned(n, 0.01)
    (work / "cohorts" / "uids").mkdir(parents=True, exist_ok=True)
    (work / "cohorts" / "uids" / "sorted.txt").write_text("\n".join(desired) + "\n")
    shuffled = desired[:]
    random.Random(2).shuffle(shuffled)
    (work / "cohorts" / "uids" / "shuffled.txt").write_text("\n".join(shuffled) + "\n")
    wh = sqlite3.connect(work / "warehouse.db")
    wh.execute("CREATE TABLE users (uid TEXT PRIMARY KEY, score INTEGER) WITHOUT ROWID")
    wh.executemany("INSERT INTO users VALUES (?, 1)", ((u,) for u in desired))
    wh.execute("CREATE TABLE users_unordered (uid TEXT)")  # rows stored, and so read, in random order
    wh.executemany("INSERT INTO users_unordered VALUES (?)", ((u,) for u in shuffled))
    wh.commit()
    wh.close()
    write_state(work / "state.db", {"big": synced})


def spec(work: Path, source: str) -> None:
    (work / "cohorts" / "big.yaml").write_text(f"id: big\nname: .Big\nsource: {source}\n")


def compare(size: int, work: Path, cfg: Path, naive_state: str) -> tuple[Run, dict[str, Run]]:
    """The naive baseline, then `cohortsync plan` on each kind of source; every plan checked."""
    naive = measure([sys.executable, "-c", NAIVE, str(work / "cohorts/uids/shuffled.txt"), naive_state])
    changes = int(size * 0.01 / 2)  # as churned() makes them
    assert naive.output.split() == [str(changes), str(changes)], naive.output
    runs = {}
    for label, source in (("UID file, sorted", "{file: uids/sorted.txt}"),
                          ("UID file, shuffled", "{file: uids/shuffled.txt}"),
                          ("SQL table (ORDER BY uid)", "{connection: wh, sql: SELECT uid FROM users ORDER BY uid}"),
                          ("SQL table, rows in random order", "{connection: wh, sql: SELECT uid FROM users_unordered}")):
        spec(work, source)
        runs[label] = measure(cohortsync("plan", "--config", str(cfg)))
        assert f"Plan: +{changes:,} -{changes:,} in" in runs[label].output, runs[label].output
    return naive, runs


def main() -> int:
    p = parser(__doc__, "1M")
    p.add_argument("--postgres", metavar="URL", help="keep the state in this PostgreSQL database (a schema of its own, "
                   "dropped afterwards), e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with workspace(p, build, __file__) as (args, work):
        state_url, naive_state = f"sqlite:///{work / 'state.db'}", str(work / "state.db")
        if args.postgres:
            schema = f"cohortsync_bench_{os.getpid()}"
            state_url = f"{args.postgres}?options=-csearch_path%3D{schema}"
            libpq = args.postgres.replace("+psycopg", "")
            naive_state = f"{libpq}?options=-csearch_path%3D{schema}"
            measure([sys.executable, "-c", TO_POSTGRES, str(work / "state.db"), state_url, libpq, schema], cwd=ROOT)
        cfg = work / "cohortsync.yaml"
        cfg.write_text(f"cohorts_dir: cohorts\nstate_url: '{state_url}'\n"
                       f"connections: {{wh: 'sqlite:///{work / 'warehouse.db'}'}}\n")
        try:
            naive, runs = compare(args.size, work, cfg, naive_state)
        finally:
            if args.postgres:
                import psycopg
                with psycopg.connect(libpq, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    rows = [("members", f"{args.size:,} synced, 1% churn; state in {'PostgreSQL' if args.postgres else 'SQLite'}"),
            ("baseline: naive Python sets", f"{naive.seconds:6.2f} s  {naive.peak_rss_mb:7.0f} MB peak memory")]
    verdicts = []
    for label, run in runs.items():
        ratio = run.seconds / naive.seconds
        rows.append((f"cohortsync plan, {label}", f"{run.seconds:6.2f} s  {run.peak_rss_mb:7.0f} MB peak memory"
                                                   f"  ({ratio:.0%} of the baseline's time)"))
        verdicts.append((f"{label}: time <= 50% of baseline ({ratio:.0%})", ratio <= 0.5))
        verdicts.append((f"{label}: peak memory <= 150 MB ({run.peak_rss_mb:.0f} MB)", run.peak_rss_mb <= 150))
    report(f"bench_plan --size {args.size:,}", rows, verdicts, size=args.size, target=10_000_000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
