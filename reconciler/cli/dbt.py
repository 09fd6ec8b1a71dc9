"""`cohortsync dbt trigger`: after `dbt run` or `dbt build`, reconcile the cohorts whose models it rebuilt.

dbt's run_results.json names every node of the run with its status; the models built with
`success` are matched to the cohorts whose `source.dbt_model` resolves to them (through the
manifest), and only those are triggered on the daemon, through `cohortsync trigger`'s own client.
A model that failed or was skipped triggers nothing: its table holds yesterday's rows, and the
cohort's timer will read it again anyway.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from reconciler.daemon import triggering
from reconciler.running.reconciling import load_checked
from reconciler.settings.config import load_settings
from reconciler.specs.cohorts import SpecSet
from reconciler.specs.dbt import Manifests, rebuilt


def cohorts_reading(specs: SpecSet, models: Iterable[str]) -> dict[str, list[str]]:
    """Each cohort that reads one of these models (unique ids), with the models it reads: pure."""
    built = set(models)
    return {spec.id: [m for m in spec.source.reads if m in built]
            for spec in sorted(specs.specs.values(), key=lambda s: s.id) if built & set(spec.source.reads)}


def trigger(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    manifest = Path(args.manifest) if args.manifest else settings.dbt.manifest
    run_results = Path(args.run_results) if args.run_results else manifest.parent / "run_results.json"
    built = rebuilt(run_results)
    manifests = Manifests(manifest)
    manifests.get()  # a missing or broken manifest is this command's error, not a warning per spec
    specs = load_checked(settings, manifests)
    for err in specs.errors:  # their cohorts cannot be matched: say so, `validate` tells the rest
        print(f"warning: not matched, the spec does not load: {err}", file=sys.stderr)
    cohorts = cohorts_reading(specs, built)
    if not built:
        print(f"Nothing to trigger: {run_results} has no model built with status success.")
        return 0
    if not cohorts:
        print(f"Nothing to trigger: no cohort reads the {len(built)} model(s) dbt rebuilt.")
        return 0
    for cohort, models in cohorts.items():
        print(f"{'would trigger' if args.dry_run else 'triggering'} {cohort} (reads {', '.join(models)})")
    if args.dry_run:
        print(f"Dry run: {len(cohorts)} cohort(s) would be triggered; nothing was sent.")
        return 0
    return _trigger(args, list(cohorts))


def _trigger(args: argparse.Namespace, cohorts: list[str]) -> int:
    """The one call into `cohortsync trigger` (daemon/triggering.py): the same URL, token and errors.
    Never with no cohort: that would reconcile every cohort."""
    assert cohorts
    return triggering.run(argparse.Namespace(config=args.config, url=args.url, cohort=cohorts, timeout=args.timeout,
                                             wait=args.wait, format=args.format))
