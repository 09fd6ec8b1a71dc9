"""The body of each command: read, decide, act, and return the exit code.

Each function takes the parsed arguments and prints its own output; errors are raised as the
project's exceptions and turned into one sentence by cli.main.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from reconciler import render
from reconciler.client import MoEngageClient
from reconciler.config import load_settings, require_credentials
from reconciler.errors import CohortSyncError
from reconciler.leases import held
from reconciler.plans import BLOCKED, ERROR
from reconciler.reconciling import Reconciler
from reconciler.settings import Settings
from reconciler.specs import SpecSet, load_specs, missing_sources
from reconciler.state import StateStore

EXIT_OK, EXIT_FAILED, EXIT_CHANGES = 0, 1, 2


def validate(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    specs = load_specs(settings.cohorts_dir, settings.connections)
    errors = specs.errors + missing_sources(specs)
    for err in errors:
        print(err, file=sys.stderr)
    if errors:
        bad = len({e.file for e in errors})
        print(f"{bad} of {specs.files} spec file(s) invalid ({len(errors)} problem(s)).", file=sys.stderr)
        return EXIT_FAILED
    print(f"{len(specs.specs)} cohort spec(s) valid in {settings.cohorts_dir}.")
    return EXIT_OK


@contextmanager
def reconciler_for(settings: Settings, *, with_client: bool) -> Iterator[Reconciler]:
    state = StateStore.open(settings.state_url)
    client = None
    if with_client:
        require_credentials(settings)
        client = MoEngageClient(settings.moengage)
    reconciler = Reconciler(settings, state, client)
    try:
        yield reconciler
    finally:
        reconciler.close()
        if client:
            client.close()
        state.close()


def _check_selection(specs: SpecSet, reconciler: Reconciler, only: list[str]) -> None:
    known = set(specs.specs) | specs.broken_ids | set(reconciler.state.cohorts())
    unknown = sorted(set(only) - known)
    if unknown:
        raise CohortSyncError(f"no cohort with id {', '.join(unknown)} in {reconciler.settings.cohorts_dir} or the state")


def plan(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    with reconciler_for(settings, with_client=False) as reconciler:
        specs = reconciler.load()
        _check_selection(specs, reconciler, args.cohort)
        plans = reconciler.plan(specs, args.cohort, force=args.force, prune=args.prune or None)
    print({"text": render.plan_text, "json": render.plan_json, "markdown": render.plan_markdown}[args.format](plans))
    if any(p.status in (ERROR, BLOCKED) for p in plans):
        return EXIT_FAILED
    if args.detailed_exitcode and any(p.adds or p.removes for p in plans if p.status != "suspended"):
        return EXIT_CHANGES
    return EXIT_OK


def apply(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    with reconciler_for(settings, with_client=not args.dry_run) as reconciler:
        specs = reconciler.load()
        _check_selection(specs, reconciler, args.cohort)
        with nullcontext() if args.dry_run else held(reconciler.state, "apply"):
            report = reconciler.apply(specs, args.cohort, force=args.force, prune=args.prune or None,
                                      dry_run=args.dry_run)
    print(render.report_json(report) if args.format == "json" else render.report_text(report))
    return EXIT_OK if report.ok else EXIT_FAILED


def status(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    state = StateStore.open(settings.state_url)
    try:
        records = state.cohorts()
    finally:
        state.close()
    print(render.status_json(records) if args.format == "json" else render.status_text(records))
    return EXIT_OK


def history(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    state = StateStore.open(settings.state_url)
    try:
        runs = state.runs(args.cohort, args.limit)
    finally:
        state.close()
    print(render.history_json(runs) if args.format == "json" else render.history_text(runs))
    return EXIT_OK
