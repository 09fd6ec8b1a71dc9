"""`plan` of one big cohort with 1% churn, from a UID file (sorted and not) and from a SQL table.

Target (issue 6), at --size 10M: wall time at most half of a naive Python-set diff of the same
data, and peak memory at most 150 MB. Memory is the whole process tree's (the plan, its state
reader, sort and comm: see common.measure). The baseline runs in the same way, on the same files.
"""
from __future__ import annotations

import random
import sqlite3
import sys
from pathlib import Path

from common import churned, cohortsync, measure, parser, report, workspace, write_state

NAIVE = r"""
import sqlite3, sys
desired = {line.strip() for line in open(sys.argv[1])} - {""}
synced = {row[0] for row in sqlite3.connect(sys.argv[2]).execute("SELECT uid FROM cs_members WHERE cohort_id = 'big'")}
print(len(desired - synced), len(synced - desired))
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
    wh.commit()
    wh.close()
    write_state(work / "state.db", {"big": synced})


def spec(work: Path, source: str) -> None:
    (work / "cohorts" / "big.yaml").write_text(f"id: big\nname: .Big\nsource: {source}\n")


def main() -> int:
    with workspace(parser(__doc__, "1M"), build, __file__) as (args, work):
        cfg = work / "cohortsync.yaml"
        cfg.write_text(f"cohorts_dir: cohorts\nstate_url: sqlite:///{work / 'state.db'}\n"
                       f"connections: {{wh: 'sqlite:///{work / 'warehouse.db'}'}}\n")
        naive = measure([sys.executable, "-c", NAIVE, str(work / "cohorts/uids/shuffled.txt"), str(work / "state.db")])
        runs = {}
        for label, source in (("UID file, sorted", "{file: uids/sorted.txt}"),
                              ("UID file, shuffled", "{file: uids/shuffled.txt}"),
                              ("SQL table (ORDER BY uid)", "{connection: wh, sql: SELECT uid FROM users ORDER BY uid}")):
            spec(work, source)
            runs[label] = measure(cohortsync("plan", "--config", str(cfg)))
            assert f"+{args.size // 200:,}" in runs[label].output.replace("+0", "") or "changed" in runs[label].output
    rows = [("members", f"{args.size:,} synced, 1% churn"),
            ("baseline: naive Python sets", f"{naive.seconds:6.2f} s  {naive.peak_rss_mb:7.0f} MB peak memory")]
    verdicts = []
    for label, run in runs.items():
        ratio = run.seconds / naive.seconds
        rows.append((f"cohortsync plan, {label}", f"{run.seconds:6.2f} s  {run.peak_rss_mb:7.0f} MB peak memory"
                                                   f"  ({ratio:.0%} of the baseline's time)"))
        verdicts.append((f"{label}: time <= 50% of baseline ({ratio:.0%})", ratio <= 0.5))
        verdicts.append((f"{label}: peak memory <= 150 MB ({run.peak_rss_mb:.0f} MB)", run.peak_rss_mb <= 150))
    report(f"bench_plan --size {args.size:,}", rows, verdicts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
