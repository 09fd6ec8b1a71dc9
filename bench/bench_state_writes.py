"""State writes: 100k changes (half adds, half removes) on a members table of --size rows.

Target (issue 6), at --size 10M: at most 3 s, written the way apply writes them: each batch of
about 5,500 uids recorded as pending before it is sent, then settled (members written, pending
record dropped) when its 200 comes, one transaction each. Issue 11's target: that costs at most
10% more than committing each batch once with no pending record (the model before pending
batches), measured in the same run on a copy of the same database. Baseline: one transaction
per uid, as a naive tool would write, measured on 2,000 changes and scaled.

Issue 14: the same writes with the membership changelog (a changelog row per settled batch, in
the same transaction) stay within 25% of the writes without it, measured on a third copy.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import churned, parser, report, write_state

BATCH = 5_500  # uids per acknowledged request of 12-character uids
CHANGES = 100_000


def main() -> int:
    args = parser(__doc__, "1M").parse_args()
    synced, desired = churned(args.size, CHANGES / args.size)
    adds = sorted(set(desired) - set(synced))
    removes = sorted(set(synced) - set(desired))
    changes = len(adds) + len(removes)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        db = Path(tmp) / "state.db"
        write_state(db, {"big": synced})
        del desired
        shutil.copy(db, Path(tmp) / "copy.db")
        shutil.copy(db, Path(tmp) / "logged.db")
        committed = timed(f"sqlite:///{Path(tmp) / 'copy.db'}", adds, removes, len(synced), pending=False)
        seconds = timed(f"sqlite:///{db}", adds, removes, len(synced), pending=True)
        logged = timed(f"sqlite:///{Path(tmp) / 'logged.db'}", adds, removes, len(synced), pending=True,
                       changelog=True)
        per_row = naive(f"sqlite:///{db}", removes[:1_000])
    overhead, logging = seconds / committed - 1, logged / seconds - 1
    rows = [("members table", f"{args.size:,} rows (SQLite, WAL)"),
            ("changes", f"{len(adds):,} adds + {len(removes):,} removes in batches of {BATCH:,}"),
            ("pending, then settled (as apply writes)", f"{seconds:.2f} s ({changes / seconds:,.0f} changes/s)"),
            ("committed once, no pending record", f"{committed:.2f} s (pending costs {overhead:+.1%})"),
            ("pending, then settled with the changelog", f"{logged:.2f} s (the changelog costs {logging:+.1%})"),
            ("baseline: a transaction per uid", f"{per_row * changes:.2f} s (scaled from 2,000 changes)")]
    report(f"bench_state_writes --size {args.size:,}", rows,
           [(f"100k changes in at most 3 s ({seconds:.2f} s)", seconds <= 3.0),
            (f"pending records cost at most 10% ({overhead:+.1%})", overhead <= 0.10),
            (f"the changelog costs at most 25% ({logging:+.1%})", logging <= 0.25)],
           size=args.size, target=10_000_000)
    return 0


def timed(url: str, adds: list[str], removes: list[str], size: int, *, pending: bool,
          changelog: bool = False) -> float:
    from reconciler.state.records import ChangeNote, Cohort
    from reconciler.state.store import StateStore
    note = ChangeNote("bench", "d" * 64) if changelog else None
    state = StateStore.open(url)
    start = time.perf_counter()
    for action, uids in (("remove_members", removes), ("add_members", adds)):
        for i in range(0, len(uids), BATCH):
            batch = uids[i:i + BATCH]
            if pending:
                batch_id = state.begin_batch(Cohort("big", ".Big", None), action, batch, "bench")
                state.settle_batch(batch_id, "big", action, batch, note=note)
            else:
                state.commit_batch(Cohort("big", ".Big", None), action, batch)
    seconds = time.perf_counter() - start
    assert state.count_members("big") == size - len(removes) + len(adds) and not state.pending("big")
    assert sum(1 for _ in state.changelog.entries()) == (-(-len(adds) // BATCH) - (-len(removes) // BATCH) if changelog else 0)
    state.close()
    return seconds


def naive(url: str, uids: list[str]) -> float:
    """Seconds per change, one transaction per uid (re-adding then removing what was removed)."""
    from reconciler.state.records import Cohort
    from reconciler.state.store import StateStore
    state = StateStore.open(url)
    start = time.perf_counter()
    for action in ("add_members", "remove_members"):
        for uid in uids:
            state.commit_batch(Cohort("big", ".Big", None), action, [uid])
    per_row = (time.perf_counter() - start) / (2 * len(uids))
    state.close()
    return per_row


if __name__ == "__main__":
    sys.exit(main())
