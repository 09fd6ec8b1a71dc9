"""Steady state: 100 cohorts totalling --size members, nothing changed since they converged.

Target (issue 6), at --size 10M: reconciling all of them takes at most 2 s when the file
sources are unchanged, and writes nothing to state. Baseline: re-reading every file and the
state into Python sets and diffing them, as a tool without digests would, in the same run.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from common import churned, cohortsync, measure, parser, report, workspace, write_state

COHORTS = 100
NAIVE = r"""
import sqlite3, sys, pathlib
root, db = pathlib.Path(sys.argv[1]), sqlite3.connect(sys.argv[2])
changes = 0
for i in range(100):
    desired = {l.strip() for l in open(root / f"uids/c{i:03d}.txt")} - {""}
    synced = {r[0] for r in db.execute("SELECT uid FROM cs_members WHERE cohort_id = ?", (f"c{i:03d}",))}
    changes += len(desired ^ synced)
print(changes)
"""
RECONCILE = r"""
import sys, time
from reconciler.settings.config import load_settings
from reconciler.running.reconciling import Reconciler
from reconciler.state.store import StateStore
settings = load_settings(sys.argv[1], env={})
state = StateStore.open(settings.state_url)
reconciler = Reconciler(settings, state)
start = time.perf_counter()
report = reconciler.apply(reconciler.load())
took = time.perf_counter() - start
assert all(o.result == "unchanged" for o in report.outcomes), [(o.plan.id, o.result) for o in report.outcomes]
print(f"reconciled {len(report.outcomes)} cohorts in {took:.3f}")
"""


def build(work: Path, n: int) -> None:
    from reconciler.sources.reading import FileSource
    from reconciler.specs.cohorts import load_specs
    _, uids = churned(n, 0.0)
    per = n // COHORTS
    (work / "cohorts" / "uids").mkdir(parents=True, exist_ok=True)
    members = {}
    for i in range(COHORTS):
        cid = f"c{i:03d}"
        members[cid] = uids[i * per:(i + 1) * per]
        (work / "cohorts" / "uids" / f"{cid}.txt").write_text("\n".join(members[cid]) + "\n")
        (work / "cohorts" / f"{cid}.yaml").write_text(f"id: {cid}\nname: .{cid}\nsource: {{file: uids/{cid}.txt}}\n")
    specs = load_specs(work / "cohorts", [])
    digests = {cid: (s.digest, FileSource(s).digest()) for cid, s in specs.specs.items()}
    write_state(work / "state.db", members, digests)


def state_fingerprint(work: Path) -> str:
    """Streamed: this process must stay small, since a child's peak RSS starts from its parent's."""
    h = hashlib.sha256()
    for name in ("state.db", "state.db-wal"):
        path = work / name
        if path.exists():
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
        h.update(b"|")
    return h.hexdigest()


def main() -> int:
    with workspace(parser(__doc__, "1M"), build, __file__) as (args, work):
        cfg = work / "cohortsync.yaml"
        cfg.write_text(f"cohorts_dir: cohorts\nstate_url: sqlite:///{work / 'state.db'}\n")
        naive = measure([sys.executable, "-c", NAIVE, str(work / "cohorts"), str(work / "state.db")])
        before = state_fingerprint(work)
        inproc = measure([sys.executable, "-c", RECONCILE, str(cfg)])
        whole = measure(cohortsync("plan", "--config", str(cfg), "--detailed-exitcode"))
        untouched = state_fingerprint(work) == before
    seconds = float(inproc.output.strip().rsplit(" ", 1)[1])
    rows = [("cohorts", f"{COHORTS}, {args.size:,} members in all, files unchanged since they converged"),
            ("baseline: re-read and set-diff all", f"{naive.seconds:6.2f} s  {naive.peak_rss_mb:6.0f} MB"),
            ("reconcile of all (daemon, in process)", f"{seconds:6.2f} s"),
            ("`cohortsync plan`, whole process", f"{whole.seconds:6.2f} s  {whole.peak_rss_mb:6.0f} MB"),
            ("state files after", "byte for byte unchanged" if untouched else "CHANGED")]
    report(f"bench_steady --size {args.size:,}", rows, [
        (f"reconcile of all <= 2 s ({seconds:.2f} s)", seconds <= 2.0),
        ("nothing written to state", untouched),
        ("plan reports no changes", "No changes" in whole.output)], size=args.size, target=10_000_000)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
