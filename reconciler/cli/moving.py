"""`cohortsync state move`: members moved to where the config wants them, checked, sending nothing;
`cohortsync state adopt`: a warehouse snapshot no plan trusts any more, taken as it stands.

Apply and the daemon move a cohort's members on their own before they next send (snapshots/
moving.py); `move` does it ahead of time, for the cohorts chosen, and says what moved where, so
that a big cohort's move happens when the operator decides and its check is seen. `adopt` is the
way out after a snapshot was restored from a backup or edited on purpose.
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

from reconciler.cli.commands import EXIT_FAILED, EXIT_OK, opened, writing
from reconciler.common.errors import LeaseLost, StateError
from reconciler.running.reconciling import load_checked
from reconciler.running.selection import Selection, Target
from reconciler.settings.config import load_settings
from reconciler.snapshots.moving import Mover
from reconciler.snapshots.placement import LOCAL, Snapshots
from reconciler.snapshots.snapshot import Location
from reconciler.sources.reading import Engines
from reconciler.state.fencing import Fence
from reconciler.state.keys import sync_key
from reconciler.state.records import Cohort


def state_move(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    specs = load_checked(settings)
    selection = Selection.of(args.cohort, args.workspace)
    rows: list[dict[str, Any]] = []
    engines = Engines(settings.connections)
    try:
        with opened(settings) as state, writing(state, settings, specs, selection) as fences:
            snapshots = Snapshots(state, engines, settings.statement_timeout)
            mover = Mover(state, snapshots)
            for target in selection.targets(specs, state.cohorts()):
                if target.spec is not None:  # an orphan's members stay where they are
                    fence = fences(target.key) if fences is not None else None
                    rows.append(_move(mover, snapshots, target, args.dry_run, fence))
    finally:
        engines.close()
    return _report(rows, args.format)


def _move(mover: Mover, snapshots: Snapshots, target: Target, dry_run: bool, fence: Fence | None) -> dict[str, Any]:
    spec, record = target.spec, target.record
    assert spec is not None
    placement = snapshots.placement(spec, record, target.key)
    moves = placement.moving and record is not None  # a cohort with no record has nothing to move yet
    row: dict[str, Any] = {"cohort": spec.id, "workspace": target.workspace, "from": str(placement.now or LOCAL),
                           "to": str(placement.wanted or LOCAL), "members": record.synced_count if record else 0,
                           "result": "stays" if not moves else ("would move" if dry_run else "moved"), "error": None}
    if not moves or dry_run:
        return row
    assert record is not None
    started = time.monotonic()
    try:
        mover.settle(Cohort(target.key, spec.name, spec.description), placement, snapshots.keeping(record), fence)
    except (StateError, LeaseLost) as exc:
        row.update(result="failed", error=str(exc))
    row["seconds"] = round(time.monotonic() - started, 3)
    return row


def _report(rows: list[dict[str, Any]], form: str) -> int:
    failed = any(r["result"] == "failed" for r in rows)
    if form == "json":
        print(json.dumps({"format_version": 1, "cohorts": rows}, indent=2))
        return EXIT_FAILED if failed else EXIT_OK
    for r in rows:
        where = sync_key(r["workspace"], r["cohort"])
        if r["result"] == "stays":
            print(f"{where}: {r['members']:,} members stay in {_place(r['from'])}")
        elif r["result"] == "failed":
            print(f"{where}: not moved: {r['error']}")
        elif r["result"] == "would move":
            print(f"{where}: {r['members']:,} members would move from {_place(r['from'])} to {_place(r['to'])}")
        else:
            print(f"{where}: {r['members']:,} members moved from {_place(r['from'])} to {_place(r['to'])} "
                  f"in {r['seconds']:.1f} s (counted and checksummed on both sides)")
    if not any(r["result"] != "stays" for r in rows):
        print("Nothing to move: every cohort's members are where the config wants them.")
    return EXIT_FAILED if failed else EXIT_OK


def _place(where: str) -> str:
    return "the local state" if where == LOCAL else f"the warehouse snapshot {where}"


def state_adopt(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    specs = load_checked(settings)
    selection = Selection.of(args.cohort, args.workspace)
    engines = Engines(settings.connections)
    adopted, failed = 0, 0
    try:
        with opened(settings) as state, writing(state, settings, specs, selection) as fences:
            mover = Mover(state, Snapshots(state, engines, settings.statement_timeout))
            for target in selection.targets(specs, state.cohorts()):
                record, name = target.record, target.key
                if record is None or not record.snapshot:
                    print(f"{name}: its members are not kept in a warehouse snapshot: nothing to adopt")
                    continue
                try:
                    keeping = mover.adopt(Cohort(target.key, record.name, record.description),
                                          Location.parse(record.snapshot), fences(target.key) if fences else None)
                except (StateError, LeaseLost) as exc:
                    print(f"{name}: not adopted: {exc}")
                    failed += 1
                    continue
                adopted += 1
                print(f"{name}: {keeping.mark.count:,} members adopted from {keeping.snapshot.location.shown}; MoEngage "
                      f"may differ from them: `{keeping.snapshot.command('apply --resync')}` makes it match")
    finally:
        engines.close()
    return EXIT_FAILED if failed or not adopted else EXIT_OK
