"""The body of each command: read, decide, act, and return the exit code.

Each function takes the parsed arguments and prints its own output; errors are raised as the
project's exceptions and turned into one sentence by cli.main.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from reconciler.cli.operating import history_members
from reconciler.notify.sending import Notifier
from reconciler.planning import planfiles
from reconciler.running import render
from reconciler.settings.config import load_settings, require_credentials
from reconciler.common.errors import CohortSyncError
from reconciler.common.statuses import Status
from reconciler.state.leases import COHORT, REPLICA, held, held_cohorts, lease_table
from reconciler.planning.plans import BLOCKED, ERROR
from reconciler.running.progress import Progress, for_terminal
from reconciler.running.reconciling import Reconciler, RunReport, load_checked, workspaces_of
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
def reconciler_for(settings: Settings, *, with_client: bool, progress: Progress | None = None) -> Iterator[Reconciler]:
    """A reconciler on the state; with `with_client`, the default workspace's credentials are checked
    now (a named workspace's, when its first batch is sent: `check_credentials` checks them up front)."""
    state = StateStore.open(settings.state_url)
    stop = threading.Event()  # set by SIGTERM or Ctrl-C during apply: see stopping_on_signals
    reconciler = Reconciler(settings, state, stop=stop, progress=progress)
    try:
        yield reconciler
    finally:
        reconciler.close()
        state.close()


def check_credentials(settings: Settings, specs: SpecSet, args: argparse.Namespace) -> None:
    """apply needs the credentials of every workspace it may send to, before it sends anything."""
    require_credentials(settings, workspaces_of(specs, args.cohort, args.workspace))


def _check_selection(specs: SpecSet, reconciler: Reconciler, only: list[str]) -> None:
    known = set(specs.specs) | specs.broken_ids | {r.cohort for r in reconciler.state.cohorts().values()}
    unknown = sorted(set(only) - known)
    if unknown:
        raise CohortSyncError(f"no cohort with id {', '.join(unknown)} in {reconciler.settings.cohorts_dir} or the state")


def plan(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if args.out and getattr(args, "resync", False):
        raise CohortSyncError("a resync is not saved as a plan: run `apply --resync` after reviewing `plan --resync`")
    with reconciler_for(settings, with_client=False) as reconciler:
        specs = reconciler.load()
        _check_selection(specs, reconciler, args.cohort)
        warn(settings, specs)
        reconciler.planner.digest_desired = bool(args.out)
        state_version = reconciler.state.state_version()
        plans = reconciler.plan(specs, args.cohort, force=args.force, prune=args.prune or None,
                                workspaces=args.workspace, resync=getattr(args, "resync", False))
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
    with reconciler_for(settings, with_client=not args.dry_run, progress=progress) as reconciler:
        specs = reconciler.load()
        _check_selection(specs, reconciler, args.cohort)
        if not args.dry_run:
            check_credentials(settings, specs, args)
        saved = planfiles.read(Path(args.plan)) if args.plan else None
        only, workspaces = (saved.cohorts, saved.workspaces) if saved else (args.cohort, args.workspace)
        with nullcontext() if args.dry_run else writing(reconciler, specs, only, workspaces), \
                stopping_on_signals(reconciler.stop):
            if args.plan:
                report = _apply_saved(reconciler, specs, Path(args.plan), args.dry_run)
            else:
                report = reconciler.apply(specs, args.cohort, force=args.force, prune=args.prune or None,
                                          dry_run=args.dry_run, workspaces=args.workspace,
                                          resync=getattr(args, "resync", False),
                                          trigger="resync" if getattr(args, "resync", False) else "cli")
    alert(settings, report)
    print(render.report_json(report) if args.format == "json" else render.report_text(report))
    return EXIT_OK if report.ok else EXIT_FAILED


@contextmanager
def writing(reconciler: Reconciler, specs: SpecSet, only: list[str], workspaces: list[str]) -> Iterator[None]:
    """The right to write: the one writer lease on SQLite; on PostgreSQL the leases of the cohorts this
    run touches, so that it works beside running replicas (each write fenced by its lease)."""
    state, ttl = reconciler.state, reconciler.settings.daemon.lease_time
    if state.engine.dialect.name != "postgresql":
        with held(state, "apply", ttl=ttl):
            yield
        return
    with held_cohorts(state, "apply", reconciler.keys(specs, only, workspaces), ttl) as leases:
        reconciler.fences = leases.fence
        try:
            yield
        finally:
            reconciler.fences = lambda key: None


@contextmanager
def stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM or Ctrl-C during apply: let the batch in flight finish and settle, send no more,
    exit 1 (the next run sends the rest). A second signal stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(f"{signal.Signals(signum).name}: stopping after the batch in flight (again to stop at once)",
              file=sys.stderr)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _apply_saved(reconciler: Reconciler, specs: SpecSet, path: Path, dry_run: bool) -> RunReport:
    """Apply a saved plan, or refuse it with every reason it no longer holds."""
    saved = planfiles.read(path)
    reconciler.planner.digest_desired = True
    current = reconciler.state.state_version()
    plans = reconciler.plan(specs, saved.cohorts, force=saved.force, prune=saved.prune, workspaces=saved.workspaces)
    reasons = planfiles.moved(saved, current, plans)
    if reasons:
        raise CohortSyncError(f"{path} is stale, nothing was sent: " + "; ".join(reasons)
                              + ". Run `cohortsync plan --out` again and review the new plan.")
    return reconciler.apply(specs, saved.cohorts, force=saved.force, prune=saved.prune, dry_run=dry_run,
                            expected=saved.fingerprints, workspaces=saved.workspaces)


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
