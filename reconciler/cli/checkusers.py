"""`cohortsync check-users`: the share of each cohort's uids that MoEngage does not know.

MoEngage drops unknown uids without a word, so a segment can be far smaller than its query.
This samples each cohort's desired uids once (sources/sampling.py: the first N after a seeded
shuffle), asks each workspace it is synced to which of them exist (moengage/users.py: MoEngage's
Get User API, on that workspace's own lookup budget) and reports the share not found. Read-only:
it sends nothing to the Cohort Sync API and opens no state.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass

from reconciler.common.errors import CohortApiError, CohortSyncError, SourceError, TemporaryApiError
from reconciler.moengage.users import UserLookup
from reconciler.planning.spills import reading
from reconciler.running.reconciling import load_checked, spec_error_plans
from reconciler.settings.config import load_settings, require_credentials
from reconciler.settings.model import Settings
from reconciler.sources.reading import Engines, open_source
from reconciler.sources.sampling import sample
from reconciler.specs.cohorts import CohortSpec, SpecSet

Z95 = 1.959964  # two-sided 95%


@dataclass
class CohortCheck:
    """One cohort's answer in one workspace; `error` when its spec, source or lookups failed."""

    id: str
    name: str
    workspace: str | None = None  # None for a spec that did not load
    sampled: int = 0
    not_found: int = 0
    error: str | None = None

    @property
    def share(self) -> float | None:
        return self.not_found / self.sampled if self.sampled else None

    def as_json(self) -> dict:
        low, high = wilson(self.not_found, self.sampled)
        return {**asdict(self), "not_found_share": self.share, "interval_95": [low, high] if self.sampled else None}


def wilson(hits: int, n: int) -> tuple[float, float]:
    """The 95% Wilson interval of a share: honest for small samples and for shares near 0 or 1."""
    if n == 0:
        return 0.0, 1.0
    p = hits / n
    centre = (p + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95 ** 2 / (4 * n * n)) / (1 + Z95 ** 2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    unknown = sorted(set(args.workspace) - set(settings.accounts))
    if unknown:
        raise CohortSyncError(f"no workspace named {', '.join(unknown)} in the config (known: {', '.join(settings.accounts)})")
    specs = load_checked(settings)
    selected = _selected(specs, args.cohort, args.workspace)
    require_credentials(settings, sorted({w for spec in selected for w in _targets(spec, args.workspace)}))
    checks = [CohortCheck(p.id, "", error=p.reason) for p in spec_error_plans(specs) if not args.cohort or p.id in args.cohort]
    lookups = {name: UserLookup(settings.account(name)) for name in settings.accounts}
    engines = Engines(settings.connections)
    try:
        for spec in selected:
            checks += check(spec, _targets(spec, args.workspace), settings, engines, lookups, args.sample, args.seed)
    finally:
        engines.close()
        for lookup in lookups.values():
            lookup.close()
    checks.sort(key=lambda c: (c.workspace or "", c.id))
    requests = sum(lookup.requests for lookup in lookups.values())
    print(render_json(checks, args, requests) if args.format == "json" else render_text(checks, requests))
    return 1 if any(c.error for c in checks) else 0


def _targets(spec: CohortSpec, workspaces: list[str]) -> list[str]:
    return [w for w in spec.workspaces if not workspaces or w in workspaces]


def _selected(specs: SpecSet, only: list[str], workspaces: list[str]) -> list[CohortSpec]:
    unknown = sorted(set(only) - set(specs.specs) - specs.broken_ids)
    if unknown:
        raise CohortSyncError(f"no cohort with id {', '.join(unknown)} among the specs")
    return [s for cid, s in sorted(specs.specs.items()) if (not only or cid in only) and _targets(s, workspaces)]


def check(spec: CohortSpec, workspaces: list[str], settings: Settings, engines: Engines,
          lookups: dict[str, UserLookup], size: int, seed: int) -> list[CohortCheck]:
    """Sample one cohort once and look the sample up in each workspace; a failure is that row's error."""
    results = [CohortCheck(spec.id, spec.name, workspace) for workspace in workspaces]
    try:
        with reading(open_source(spec, engines, settings.statement_timeout)) as chunks:
            uids = sample(chunks, size, seed)
    except SourceError as exc:
        for result in results:
            result.error = str(exc)
        return results
    for result in results:
        try:
            result.not_found = len(lookups[result.workspace or ""].not_found(uids))
            result.sampled = len(uids)
        except (CohortApiError, TemporaryApiError) as exc:
            result.error = str(exc)
    return results


def render_text(checks: list[CohortCheck], requests: int) -> str:
    rows = [f"{'workspace':<12} {'cohort':<28} {'sampled':>8} {'not found':>10} {'share':>7}  95% interval"]
    for c in checks:
        if c.error:
            rows.append(f"{c.workspace or '-':<12} {c.id:<28} error: {c.error}")
            continue
        low, high = wilson(c.not_found, c.sampled)
        share = f"{c.share:.1%}" if c.share is not None else "-"
        rows.append(f"{c.workspace:<12} {c.id:<28} {c.sampled:>8,} {c.not_found:>10,} {share:>7}  {low:.1%}-{high:.1%}")
    rows.append(f"\n{len(checks)} cohort(s), {requests} user lookup(s); MoEngage ignores uids it does not know, "
                "so a cohort's segment lacks about that share of its members.")
    return "\n".join(rows)


def render_json(checks: list[CohortCheck], args: argparse.Namespace, requests: int) -> str:
    return json.dumps({"format_version": 1, "sample": args.sample, "seed": args.seed, "lookups": requests,
                       "cohorts": [c.as_json() for c in checks]}, indent=2)
