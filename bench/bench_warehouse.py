"""The diff inside the warehouse against today's streamed path: one big cohort on PostgreSQL, 1% churn.

Target (issue 20), at --size 10M: the plan with the diff in the warehouse sends back only the
changes (about 100k adds and 100k removes), takes at most 0.3x the time of the streamed path on
the same data in the same run, and cohortsync's peak memory stays under 100 MB.

The same PostgreSQL server holds the warehouse table (`users`, a primary key on uid, as any
table of users has) and the state (a schema of its own). The streamed path is the plan of a
cohort whose connection has no `snapshots`: every desired uid comes out of the warehouse
(`ORDER BY uid COLLATE "C"`, its fastest way) and every member out of the state. Then
`cohortsync state move` moves the members into a snapshot (measured too), and the same plan runs
with the diff in the warehouse. Each plan runs twice and the faster run counts.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from common import ROOT, churned, cohortsync, measure, parser, report, workspace

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

LOAD = r"""
import sys
import psycopg
from reconciler.state.store import StateStore
work, url, libpq, schema = sys.argv[1:]
with psycopg.connect(libpq, autocommit=True) as conn:
    for s in (schema, schema + "_state", schema + "_snap"):
        conn.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')
    conn.execute(f'CREATE SCHEMA "{schema}"')
    conn.execute(f'CREATE SCHEMA "{schema}_state"')
StateStore.open(f"{url}?options=-csearch_path%3D{schema}_state").close()
with psycopg.connect(libpq, autocommit=True) as conn:
    conn.execute(f'CREATE TABLE "{schema}".users (uid TEXT PRIMARY KEY)')
    with conn.cursor().copy(f'COPY "{schema}".users (uid) FROM STDIN') as copy, open(f"{work}/desired.txt") as fh:
        for block in iter(lambda: fh.read(1 << 20), ""):
            copy.write(block)
    conn.execute(f"INSERT INTO \"{schema}_state\".cs_cohorts (id, name, synced_count, converged) "
                 f"VALUES ('big', '.Big', {sum(1 for _ in open(f'{work}/synced.txt'))}, false)")
    with conn.cursor().copy(f'COPY "{schema}_state".cs_members (cohort_id, uid) FROM STDIN') as copy, \
            open(f"{work}/synced.txt") as fh:
        for line in fh:
            copy.write(f"big\t{line}")
    conn.execute(f'VACUUM ANALYZE "{schema}".users')  # as autovacuum leaves settled tables
    conn.execute(f'VACUUM ANALYZE "{schema}_state".cs_members')
"""


def build(work: Path, n: int) -> None:
    synced, desired = churned(n, 0.01)
    (work / "synced.txt").write_text("\n".join(synced) + "\n")
    (work / "desired.txt").write_text("\n".join(desired) + "\n")
    (work / "cohorts").mkdir()


def configure(work: Path, url: str, schema: str, snapshots: bool, sql: str) -> Path:
    cfg = work / "cohortsync.yaml"
    connection = {"url": f"{url}?options=-csearch_path%3D{schema}", **({"snapshots": f"{schema}_snap"} if snapshots else {})}
    cfg.write_text(json.dumps({"cohorts_dir": "cohorts", "state_url": f"{url}?options=-csearch_path%3D{schema}_state",
                               "connections": {"wh": connection}}))
    (work / "cohorts" / "big.yaml").write_text(json.dumps({"id": "big", "name": ".Big",
                                                           "source": {"connection": "wh", "sql": sql}}))
    return cfg


def planned(run_output: str) -> dict:
    doc = json.loads(run_output[run_output.index("{"):])
    return doc["cohorts"][0]


def main() -> int:
    p = parser(__doc__, "1M")
    p.add_argument("--postgres", metavar="URL", default=DEFAULT_URL, help=f"the server (default {DEFAULT_URL})")
    with workspace(p, build, __file__) as (args, work):
        schema, libpq = f"cohortsync_wh_{os.getpid()}", args.postgres.replace("+psycopg", "")
        changes = int(args.size * 0.01 / 2) * 2
        try:
            loaded = measure([sys.executable, "-c", LOAD, str(work), args.postgres, libpq, schema], cwd=ROOT)
            streamed_cfg = configure(work, args.postgres, schema, False, 'SELECT uid FROM users ORDER BY uid COLLATE "C"')
            plan = cohortsync("plan", "--format", "json", "--config", str(streamed_cfg))
            streamed = [measure(plan), measure(plan)]
            warehouse_cfg = configure(work, args.postgres, schema, True, "SELECT uid FROM users")
            moved = measure(cohortsync("state", "move", "--config", str(warehouse_cfg)))
            assert "members moved from the local state" in moved.output, moved.output
            plan = cohortsync("plan", "--format", "json", "--config", str(warehouse_cfg))
            inside = [measure(plan), measure(plan)]
        finally:
            import psycopg
            with psycopg.connect(libpq, autocommit=True) as conn:
                for s in (schema, schema + "_state", schema + "_snap"):
                    conn.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')
    for run in streamed:
        p_ = planned(run.output)
        assert (p_["diff"], p_["adds"], p_["removes"]) == ("local", changes // 2, changes // 2), p_
    for run in inside:
        p_ = planned(run.output)
        assert (p_["diff"], p_["adds"], p_["removes"]) == ("warehouse", changes // 2, changes // 2), p_
    best_streamed, best_inside = min(streamed, key=lambda r: r.seconds), min(inside, key=lambda r: r.seconds)
    rows_back = planned(best_inside.output)["warehouse_rows"]
    ratio = best_inside.seconds / best_streamed.seconds
    rows = [("members", f"{args.size:,} synced, 1% churn ({changes:,} changes); warehouse and state on one "
                        "PostgreSQL server (load: {:.0f} s)".format(loaded.seconds)),
            ("baseline: streamed plan", f"{best_streamed.seconds:6.2f} s  {best_streamed.peak_rss_mb:6.0f} MB peak  "
                                        f"{2 * args.size - changes // 2:,} rows out of the databases "
                                        f"(runs: {', '.join(f'{r.seconds:.2f}' for r in streamed)} s)"),
            ("plan, diff in the warehouse", f"{best_inside.seconds:6.2f} s  {best_inside.peak_rss_mb:6.0f} MB peak  "
                                            f"{rows_back:,} rows out of the warehouse "
                                            f"(runs: {', '.join(f'{r.seconds:.2f}' for r in inside)} s)"),
            ("state move into the snapshot", f"{moved.seconds:6.2f} s  {moved.peak_rss_mb:6.0f} MB peak (once)")]
    verdicts = [(f"rows out of the warehouse: the changes only ({rows_back:,} for {changes:,})", rows_back <= changes),
                (f"time <= 0.3x the streamed path ({ratio:.2f}x)", ratio <= 0.3),
                (f"peak memory < 100 MB ({best_inside.peak_rss_mb:.0f} MB)", best_inside.peak_rss_mb < 100)]
    report(f"bench_warehouse --size {args.size:,}", rows, verdicts, size=args.size, target=10_000_000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
