"""Commands for running cohortsync over months: the membership changelog, the state's upkeep, alerts.

`members UID` and `history --members` read the changelog; `state copy` and `state check` move and
verify the state; `notify test` sends a test event to the alert targets. Each returns its exit code.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import Any

from reconciler.common.actions import Action
from reconciler.common.errors import CohortSyncError
from reconciler.notify.events import sample_event
from reconciler.notify.sending import DeliveryFailed, deliver, label
from reconciler.settings.config import load_settings
from reconciler.snapshots.checking import check_snapshots
from reconciler.snapshots.placement import Snapshots
from reconciler.sources.reading import Engines
from reconciler.state.checking import check_state
from reconciler.state.copying import copy_state
from reconciler.state.database import make_engine
from reconciler.state.keys import split_key, sync_key
from reconciler.state.records import ChangeEntry
from reconciler.state.store import StateStore

EXIT_OK, EXIT_FAILED = 0, 1
SHOWN_UIDS = 20  # uids of one entry printed by `history --members` in text
EVENTS = {  # (action, kind) -> what it meant for the uid
    (Action.ADD, "change"): "entered", (Action.REMOVE, "change"): "left",
    (Action.ADD, "resend"): "re-added (its earlier answer was lost)",
    (Action.REMOVE, "resend"): "re-removed (its earlier answer was lost)",
    (Action.ADD, "resync_change"): "entered (resync)", (Action.REMOVE, "resync_change"): "left (resync)",
    (Action.ADD, "resync_resend"): "re-added by a resync",
    (Action.REMOVE, "resync_resend"): "removed by a resync (it had left before)",
}


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _row(entry: ChangeEntry) -> dict[str, Any]:
    workspace, cohort = split_key(entry.cohort_id)
    return {"cohort": cohort, "workspace": workspace, "at": _when(entry.at),
            "event": EVENTS.get((entry.action, entry.kind), f"{entry.action} ({entry.kind})"),
            "action": entry.action, "kind": entry.kind, "run_id": entry.run_id, "spec_digest": entry.spec_digest}


def timeline(entries: list[ChangeEntry], resyncs: list[ChangeEntry], member_now: dict[str, bool]) -> list[ChangeEntry]:
    """A uid's entries with the count-only resync entries of the times it was a member, oldest first.

    Before a cohort's first entry the uid was a member if that entry removed it; with no entry
    at all, if it is a member now.
    """
    by_cohort: dict[str, list[ChangeEntry]] = {}
    for entry in entries:
        by_cohort.setdefault(entry.cohort_id, []).append(entry)
    out = list(entries)
    for resync in resyncs:
        own = by_cohort.get(resync.cohort_id, [])
        inside = own[0].action == Action.REMOVE if own else member_now.get(resync.cohort_id, False)
        for entry in own:
            if entry.id > resync.id:
                break
            inside = entry.action == Action.ADD
        if inside:
            out.append(resync)
    return sorted(out, key=lambda e: e.id)


def members(args: argparse.Namespace) -> int:
    """When the uid entered and left each cohort, in which run, with which spec."""
    settings = load_settings(args.config)
    state, engines = StateStore.open(settings.state_url), Engines(settings.connections)
    try:
        records = state.cohorts()
        keys = [k for k in records if not args.cohort or split_key(k)[1] in args.cohort]
        entries = state.changelog.changes_of(args.uid, sorted(set(keys) | set(args.cohort)) if args.cohort else None)
        keys = sorted({e.cohort_id for e in entries} | set(keys))
        snapshots = Snapshots(state, engines, settings.statement_timeout)  # members may be kept in a warehouse
        member_now = {key: bool(snapshots.members(records.get(key), key).present_among([args.uid])) for key in keys}
        rows = [_row(e) for e in timeline(entries, state.changelog.resyncs(keys), member_now)]
    finally:
        engines.close()
        state.close()
    logged = {e.cohort_id for e in entries}
    now = {key: yes for key, yes in member_now.items() if yes or key in logged}  # `workspace:id` outside default
    if args.format == "json":
        print(json.dumps({"format_version": 1, "uid": args.uid, "member_now": now, "changes": rows}, indent=2))
        return EXIT_OK
    if not rows:
        print(f"{args.uid}: no changelog entries" + (f"; a member of {', '.join(c for c in now if now[c])} now"
                                                     if any(now.values()) else ""))
        return EXIT_OK
    for r in rows:
        where = sync_key(r["workspace"], r["cohort"])
        print(f"{r['at']}  {where:<24}  {r['event']:<40}  run {r['run_id'] or '-'}  spec {(r['spec_digest'] or '-')[:12]}")
    print("member now of: " + (", ".join(c for c in now if now[c]) or "none"))
    return EXIT_OK


def history_members(args: argparse.Namespace) -> int:
    """`history --cohort ID --members [--run RUN]`: the changelog entries of a cohort's runs, newest first."""
    if not args.cohort:
        raise CohortSyncError("history --members needs --cohort ID")
    settings = load_settings(args.config)
    state = StateStore.open(settings.state_url)
    try:
        limit = args.limit if not args.run else 1_000_000  # a run named is looked for among all
        runs = list(dict.fromkeys((r.cohort_id, r.run_id) for r in state.runs(args.cohort, limit,
                                                                             workspaces=args.workspace)
                                  if not args.run or r.run_id == args.run))
        entries = [e for key, run in runs for e in reversed(list(state.changelog.entries([key], run_id=run)))]
    finally:
        state.close()
    if args.format == "json":
        print(json.dumps({"format_version": 1, "cohort": args.cohort, "entries": [
            {**_row(e), "count": e.count, "uids": e.uids} for e in entries]}, indent=2))
        return EXIT_OK
    if not entries:
        print(f"No changelog entries for {args.cohort}" + (f" in run {args.run}." if args.run else "."))
    for e in entries:
        r = _row(e)
        print(f"{r['at']}  run {e.run_id}  {r['event']}: {e.count:,}")
        if e.uids:
            more = f" ... and {e.count - SHOWN_UIDS:,} more" if e.count > SHOWN_UIDS else ""
            print("    " + " ".join(e.uids[:SHOWN_UIDS]) + more)
    return EXIT_OK


def state_copy(args: argparse.Namespace) -> int:
    """Copy the whole state to another database, then verify it."""
    settings = load_settings(args.config)
    if make_engine(args.to).url == make_engine(settings.state_url).url:
        raise CohortSyncError("--to is the state database itself: name another one")
    source, target = StateStore.open(settings.state_url), StateStore.open(args.to)
    started = time.monotonic()
    try:
        report = copy_state(source, target, force=args.force)
    finally:
        source.close()
        target.close()
    members = sum(n for n, _ in report.members.values())
    print(f"Copied {len(report.members):,} cohort(s), {members:,} members, "
          + ", ".join(f"{n:,} {name}" for name, n in report.rows.items()) + f" in {time.monotonic() - started:.1f} s to "
          + repr(target).removeprefix("StateStore(").removesuffix(")") + ".")
    for problem in report.problems:
        print(f"verify: {problem}", file=sys.stderr)
    if report.problems:
        return EXIT_FAILED
    print("Verified: row counts per table and members' count and SHA-256 per cohort match.")
    return EXIT_OK


def state_check(args: argparse.Namespace) -> int:
    """The state's invariants; exit 1 with each broken one named."""
    settings = load_settings(args.config)
    state = StateStore(make_engine(settings.state_url))  # not migrated: the check reports the version as found
    engines = Engines(settings.connections)
    notes: list[str] = []
    try:
        problems = check_state(state)
        if not problems:  # the warehouse snapshots: each against the mark the state keeps of it
            found = check_snapshots(Snapshots(state, engines, settings.statement_timeout))
            problems, notes = found.problems, found.notes
    finally:
        engines.close()
        state.close()
    for line in problems + notes:
        print(line)
    print(f"{len(problems)} problem(s) found." if problems else "The state is consistent.")
    return EXIT_FAILED if problems else EXIT_OK


def notify_test(args: argparse.Namespace) -> int:
    """Send a test event to each target (or target N), at once, and say which took it."""
    settings = load_settings(args.config)
    targets = list(enumerate(settings.notify or ()))
    if args.target is not None:
        targets = [(i, t) for i, t in targets if i == args.target]
        if not targets:
            raise CohortSyncError(f"no notify target {args.target}: the config has {len(settings.notify or ())} "
                                  "(numbered from 0)")
    if not targets:
        raise CohortSyncError("no notify targets in the config (`notify:`)")
    failed = 0
    for index, target in targets:
        try:
            deliver(target, sample_event(), settings.alerting.timeout)
            print(f"{label(index, target)}: sent")
        except DeliveryFailed as exc:
            failed += 1
            print(f"{label(index, target)}: failed: {exc}")
    return EXIT_FAILED if failed else EXIT_OK
