"""State copy: `cohortsync state copy --to URL` of a SQLite state of --size members to PostgreSQL.

Issue 14: the README gives the time and peak memory at 10M; memory must stay bounded (the copy
streams). Baseline, in the same run: a naive copy that reads every member into memory and
inserts them with SQLAlchemy's executemany, measured on a tenth of the members and scaled (its
memory is not scaled: it is the tenth's).
The target is a schema of its own in --postgres, dropped afterwards.
"""
from __future__ import annotations

import sys
import uuid
from pathlib import Path

from common import churned, cohortsync, measure, parser, report, workspace, write_state

COHORTS = 4  # the members split over a few cohorts, as a real state holds them
NAIVE = r"""
import sqlite3, sys, sqlalchemy as sa
db, url, n = sqlite3.connect(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rows = [{"c": c, "u": u} for c, u in db.execute("SELECT cohort_id, uid FROM cs_members LIMIT ?", (n,))]
engine = sa.create_engine(url)
with engine.begin() as conn:
    conn.exec_driver_sql("CREATE TABLE naive (cohort_id varchar(128), uid varchar(512))")
    conn.execute(sa.text("INSERT INTO naive VALUES (:c, :u)"), rows)
"""


def build(work: Path, n: int) -> None:
    _, uids = churned(n, 0.0)
    per = -(-n // COHORTS)
    write_state(work / "state.db", {f"c{i}": uids[i * per:(i + 1) * per] for i in range(COHORTS)})


def main() -> int:
    p = parser(__doc__, "1M")
    p.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test", help="the target server")
    with workspace(p, build, __file__) as (args, work):
        import sqlalchemy as sa
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.postgres, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        target = f"{args.postgres}?options=-csearch_path%3D{schema}"
        try:
            cfg = work / "cohortsync.yaml"
            cfg.write_text(f"cohorts_dir: .\nstate_url: sqlite:///{work / 'state.db'}\n")
            run = measure(cohortsync("state", "copy", "--config", str(cfg), "--to", target))
            tenth = max(args.size // 10, 1)
            naive = measure([sys.executable, "-c", NAIVE, str(work / "state.db"), target, str(tenth)])
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            admin.dispose()
    verified = "Verified" in run.output
    naive_seconds = naive.seconds * args.size / tenth
    rows = [("state", f"{args.size:,} members in {COHORTS} cohorts (SQLite, WAL) -> PostgreSQL"),
            ("cohortsync state copy", f"{run.seconds:.1f} s, peak {run.peak_rss_mb:.0f} MB, "
                                      f"{'verified' if verified else 'NOT verified: ' + run.output[-300:]}"),
            ("baseline: all in memory, executemany", f"{naive_seconds:.1f} s (scaled from {tenth:,}), "
                                                     f"peak {naive.peak_rss_mb:.0f} MB for {tenth:,}")]
    report(f"bench_state_copy --size {args.size:,}", rows,
           [("copied and verified", verified), (f"bounded memory: at most 150 MB ({run.peak_rss_mb:.0f} MB)",
                                                run.peak_rss_mb <= 150)],
           size=args.size, target=10_000_000)
    return 0 if verified else 1


if __name__ == "__main__":
    sys.exit(main())
