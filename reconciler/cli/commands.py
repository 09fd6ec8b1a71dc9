"""The body of each command: read, decide, act, and return the exit code.

Each function takes the parsed arguments and prints its own output; errors are raised as the
project's exceptions and turned into one sentence by cli.main.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from reconciler.cli.operating import history_members
from reconciler.notify.sending import Notifier
from reconciler.planning import planfiles
from reconciler.running import render
from reconciler.settings.config import load_settings, require_credentials
from reconciler.common.errors import CohortSyncError
from reconciler.common.statuses import Status
from reconciler.common.threads import interrupt
from reconciler.state.cohortleases import held_cohorts
from reconciler.state.leases import COHORT, REPLICA, held, lease_table
from reconciler.planning.plans import BLOCKED, ERROR
from reconciler.running.progress import Progress, for_terminal
from reconciler.running.reconciling import Reconciler, RunReport, load_checked
from reconciler.running.selection import RunOptions, Selection
from reconciler.state.fencing import Fence
from reconciler.settings.model import Settings
from reconciler.specs.cohorts import SpecSet, missing_sources, spec_warnings
from reconciler.state.store import StateStore

EXIT_OK, EXIT_FAILED, EXIT_CHANGES = 0, 1, 2


def validate(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    specs = load_checked(settings)
    warn(settings, specs)
    errors = specs.errors + missing_sources(specs)
    for err in errors:
        print(err, file=sys.stderr)
    if errors:
        bad = len({e.file for e in errors})
        print(f"{bad} of {specs.files} spec file(s) invalid ({len(errors)} problem(s)).", file=sys.stderr)
        return EXIT_FAILED
    print(f"{len(specs.specs)} cohort spec(s) valid in {settings.cohorts_dir}.")
    return EXIT_OK


def warn(settings: Settings, specs: SpecSet) -> None:
    """What MoEngage may refuse without our knowing for sure: a line each on stderr; the exit code stays."""
    for warning in spec_warnings(specs, settings.accounts):
        print(warning, file=sys.stderr)


@contextmanager
def reconciler_for(settings: Settings, state: StateStore, *, progress: Progress | None = None,
                   digest_desired: bool = False,
                   fences: Callable[[str], Fence | None] | None = None) -> Iterator[Reconciler]:
    """A reconciler on an open state, closed (its clients and engines) when the block ends."""
    stop = threading.Event()  # set by SIGTERM or Ctrl-C during apply: see stopping_on_signals
    reconciler = Reconciler(settings, state, stop=stop, progress=progress, digest_desired=digest_desired,
                            fences=fences or (lambda key: None))
    try:
        yield reconciler
    finally:
        reconciler.close()


@contextmanager
def opened(settings: Settings) -> Iterator[StateStore]:
    state = StateStore.open(settings.state_url)
    try:
        yield state
    finally:
        state.close()


def check_credentials(settings: Settings, specs: SpecSet, selection: Selection) -> None:
    """apply needs the credentials of every workspace it may send to, before it sends anything."""
    require_credentials(settings, selection.workspaces_of(specs))


def _check_selection(settings: Settings, specs: SpecSet, state: StateStore, selection: Selection) -> None:
    known = set(specs.specs) | specs.broken_ids | {r.cohort for r in state.cohorts().values()}
    unknown = sorted(selection.cohorts - known)
    if unknown:
        raise CohortSyncError(f"no cohort with id {', '.join(unknown)} in {settings.cohorts_dir} or the state")


def _selected(args: argparse.Namespace) -> tuple[Selection, RunOptions]:
    """What `plan` and `apply` were asked to cover, and how."""
    resync = getattr(args, "resync", False)
    options = RunOptions(force=args.force, prune=args.prune or None, dry_run=getattr(args, "dry_run", False),
                         resync=resync, trigger="resync" if resync else "cli",
                         retry_refused=getattr(args, "retry_refused", False))
    return Selection.of(args.cohort, args.workspace), options


def plan(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.out and getattr(args, "resync", False):
        raise CohortSyncError("a resync is not saved as a plan: run `apply --resync` after reviewing `plan --resync`")
    selection, options = _selected(args)
    specs = load_checked(settings)
    with opened(settings) as state, reconciler_for(settings, state, digest_desired=bool(args.out)) as reconciler:
        _check_selection(settings, specs, state, selection)
        warn(settings, specs)
        state_version = state.state_version()
        plans = reconciler.plan(specs, selection, options)
    if args.out:
        prune = args.prune or settings.prune
        planfiles.write(Path(args.out), plans, state_version=state_version, cohorts=args.cohort, force=args.force,
                        prune=prune, workspaces=args.workspace)
        print(f"Saved the plan to {args.out}; `cohortsync apply --plan {args.out}` applies exactly it.",
              file=sys.stderr)
    if getattr(args, "resync", False) and args.format == "text":
        print("Resync: every desired uid is sent again; in mirror cohorts, every uid the changelog says left "
              "and that is not desired now is removed.\n")
    print({"text": render.plan_text, "json": render.plan_json, "markdown": render.plan_markdown}[args.format](plans))
    if any(p.status in (ERROR, BLOCKED) for p in plans):
        return EXIT_FAILED
    if args.detailed_exitcode and any(p.adds or p.removes for p in plans if p.status != Status.SUSPENDED):
        return EXIT_CHANGES
    return EXIT_OK


def apply(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.plan and (args.cohort or args.force or args.prune or args.workspace):
        raise CohortSyncError("--plan applies the saved plan with the options it was made with: "
                              "drop --cohort, --workspace, --force and --prune")
    if args.plan and getattr(args, "resync", False):
        raise CohortSyncError("a resync is not saved as a plan: drop --plan, or --resync")
    progress = for_terminal(args.quiet or args.format == "json")
    specs = load_checked(settings)
    saved = planfiles.read(Path(args.plan)) if args.plan else None
    selection, options = _selected(args)
    if saved is not None:
        selection = Selection.of(saved.cohorts, saved.workspaces)
        options = RunOptions(force=saved.force, prune=saved.prune, dry_run=args.dry_run, expected=saved.fingerprints)
    with opened(settings) as state:
        _check_selection(settings, specs, state, selection)
        if not args.dry_run:
            check_credentials(settings, specs, selection)
        with nullcontext(None) if args.dry_run else writing(state, settings, specs, selection) as fences, \
                reconciler_for(settings, state, progress=progress, digest_desired=saved is not None,
                               fences=fences) as reconciler, stopping_on_signals(reconciler.stop):
            if saved is not None:
                _refuse_stale(reconciler, specs, saved, Path(args.plan))
            report = reconciler.apply(specs, selection, options)
    alert(settings, report)
    print(render.report_json(report) if args.format == "json" else render.report_text(report))
    return EXIT_OK if report.ok else EXIT_FAILED


@contextmanager
def writing(state: StateStore, settings: Settings, specs: SpecSet,
            selection: Selection) -> Iterator[Callable[[str], Fence | None] | None]:
    """The right to write: the one writer lease on a state with one writer; on a shared state the
    leases of the cohorts this run touches, so that it works beside running replicas (each write
    fenced by its lease): yields the fence of each state key then."""
    ttl = settings.daemon.lease_time
    if not state.shared:
        with held(state, "apply", ttl=ttl):
            yield None
        return
    with held_cohorts(state, "apply", selection.state_keys(specs, state.cohorts()), ttl) as leases:
        yield leases.fence


@contextmanager
def stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM or Ctrl-C during apply: let the batch in flight finish and settle, send no more,
    exit 1 (the next run sends the rest). A second signal stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            interrupt()  # noted, as the CLI's own handler does (common/threads.py)
        stop.set()
        print(f"{signal.Signals(signum).name}: stopping after the batch in flight (again to stop at once)",
              file=sys.stderr)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _refuse_stale(reconciler: Reconciler, specs: SpecSet, saved: planfiles.SavedPlan, path: Path) -> None:
    """A saved plan is applied only while it still holds; otherwise every reason it no longer does."""
    current = reconciler.state.state_version()
    plans = reconciler.plan(specs, Selection.of(saved.cohorts, saved.workspaces),
                            RunOptions(force=saved.force, prune=saved.prune))
    reasons = planfiles.moved(saved, current, plans)
    if reasons:
        raise CohortSyncError(f"{path} is stale, nothing was sent: " + "; ".join(reasons)
                              + ". Run `cohortsync plan --out` again and review the new plan.")


def status(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    state = StateStore.open(settings.state_url)
    try:
        records = {key: r for key, r in state.cohorts().items() if not args.workspace or r.workspace in args.workspace}
        table = lease_table(state)
    finally:
        state.close()
    holders = {r.name[len(COHORT):]: r.holder for r in table if r.name.startswith(COHORT)}
    replicas = [{"id": r.holder, "host": r.host, "pid": r.pid, "expires_in": r.expires_in,
                 "cohorts": sum(1 for h in holders.values() if h == r.holder)}
                for r in table if r.name.startswith(REPLICA)]
    if args.format == "json":
        print(render.status_json(records, holders, replicas))
    else:
        print(render.status_text(records, holders))
        for r in replicas:
            print(f"replica {r['id']} (pid {r['pid']} on {r['host']}): {r['cohorts']} cohort(s)")
    return EXIT_OK


def alert(settings: Settings, report: RunReport) -> None:
    """Send the run's alerts, waiting at most one request timeout (and a second) for them."""
    if settings.notify:
        notifier = Notifier(settings.notify, settings.alerting)
        notifier.observe(report)
        notifier.close(timeout=settings.alerting.timeout + 1)


def history(args: argparse.Namespace) -> int:
    if getattr(args, "members", False):
        return history_members(args)
    settings = load_settings(args.config)
    state = StateStore.open(settings.state_url)
    try:
        runs = state.runs(args.cohort, args.limit, workspaces=args.workspace)
    finally:
        state.close()
    print(render.history_json(runs) if args.format == "json" else render.history_text(runs))
    return EXIT_OK
