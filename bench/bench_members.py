"""`cohortsync members UID` over a changelog holding --size uids (entries of 5,500, one cohort).

Issue 14: the changelog keeps one row per settled batch, its uids as one blob, so that writing
it costs a row per batch; `members UID` then reads every blob of the cohorts asked and searches
it for the uid. This measures that search, the whole command, beside a baseline measured in the
same run: the same question on a table with one indexed row per uid (what a row per uid would
buy at the cost of the writes; see bench_state_writes.py).
"""
from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

from common import churned, cohortsync, measure, parser, report, workspace

BATCH = 5_500


def build(work: Path, n: int) -> None:
    from reconciler.state.store import StateStore
    _, uids = churned(n, 0.0)
    StateStore.open(f"sqlite:///{work / 'state.db'}").close()
    db = sqlite3.connect(work / "state.db")
    db.execute("BEGIN")
    rows = ((f"r{i}", time.time(), len(part), "\n".join(sorted(part)).encode())
            for i, part in enumerate(uids[j:j + BATCH] for j in range(0, n, BATCH)))
    db.executemany("INSERT INTO cs_changelog (cohort_id, action, kind, run_id, at, spec_digest, count, uids) "
                   "VALUES ('big', 'add_members', 'change', ?, ?, NULL, ?, ?)", rows)
    db.execute("CREATE TABLE per_uid (cohort_id TEXT, uid TEXT, run_id TEXT)")
    db.executemany("INSERT INTO per_uid VALUES ('big', ?, 'r')", ((u,) for u in uids))
    db.execute("CREATE INDEX per_uid_uid ON per_uid (uid)")
    db.commit()
    (work / "needle").write_text(uids[len(uids) * 2 // 3])


def main() -> int:
    with workspace(parser(__doc__, "1M"), build, __file__) as (args, work):
        cfg = work / "cohortsync.yaml"
        cfg.write_text(f"cohorts_dir: .\nstate_url: sqlite:///{work / 'state.db'}\n")
        needle = (work / "needle").read_text()
        run = measure(cohortsync("members", needle, "--config", str(cfg), "--format", "json"))
        indexed = measure([sys.executable, "-c", "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("
                           "'SELECT run_id FROM per_uid WHERE uid = ?', (sys.argv[2],)).fetchall())",
                           str(work / "state.db"), needle])
        megabytes = (work / "state.db").stat().st_size / 1e6
    found = '"entered"' in run.output
    rows = [("changelog", f"{args.size:,} uids in {-(-args.size // BATCH):,} entries of {BATCH:,} (SQLite file "
                          f"{megabytes:,.0f} MB with the baseline's table)"),
            ("cohortsync members UID", f"{run.seconds:.2f} s, peak {run.peak_rss_mb:.0f} MB, "
                                       f"{'found' if found else 'NOT found: ' + run.output[-300:]}"),
            ("baseline: an indexed row per uid", f"{indexed.seconds:.2f} s (a process start and one lookup)")]
    report(f"bench_members --size {args.size:,}", rows,
           [("found", found), (f"at most 10 s ({run.seconds:.2f} s)", run.seconds <= 10)],
           size=args.size, target=10_000_000)
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
