"""State writes: 100k changes (half adds, half removes) on a members table of --size rows.

Target (issue 6), at --size 10M: at most 3 s, committed the way apply commits them (one
transaction per acknowledged batch of about 5,500 uids). Baseline, in the same run: one
transaction per uid, as a naive tool would write, measured on 2,000 changes and scaled.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from common import churned, parser, report, write_state

BATCH = 5_500  # uids per acknowledged request of 12-character uids
CHANGES = 100_000


def main() -> int:
    args = parser(__doc__, "1M").parse_args()
    from reconciler.state.store import StateStore
    synced, desired = churned(args.size, CHANGES / args.size)
    adds = sorted(set(desired) - set(synced))
    removes = sorted(set(synced) - set(desired))
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        db = Path(tmp) / "state.db"
        write_state(db, {"big": synced})
        del desired
        state = StateStore.open(f"sqlite:///{db}")
        start = time.perf_counter()
        for action, uids in (("remove_members", removes), ("add_members", adds)):
            for i in range(0, len(uids), BATCH):
                state.commit_batch("big", ".big", None, action, uids[i:i + BATCH])
        seconds = time.perf_counter() - start
        assert state.count_members("big") == len(synced) - len(removes) + len(adds)
        sample = 2_000
        start = time.perf_counter()
        for uid in removes[:sample // 2]:
            state.commit_batch("big", ".big", None, "add_members", [uid])  # re-adds what was removed
        for uid in removes[:sample // 2]:
            state.commit_batch("big", ".big", None, "remove_members", [uid])
        per_row = (time.perf_counter() - start) / sample
        state.close()
    changes = len(adds) + len(removes)
    rows = [("members table", f"{args.size:,} rows (SQLite, WAL)"),
            ("changes", f"{len(adds):,} adds + {len(removes):,} removes in batches of {BATCH:,}"),
            ("cohortsync commit_batch", f"{seconds:.2f} s ({changes / seconds:,.0f} changes/s)"),
            ("baseline: a transaction per uid", f"{per_row * changes:.2f} s (scaled from {sample:,} changes)")]
    report(f"bench_state_writes --size {args.size:,}", rows,
           [(f"100k changes in at most 3 s ({seconds:.2f} s)", seconds <= 3.0)],
           size=args.size, target=10_000_000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
