"""Saved plans (`plan --out`, `apply --plan`): review a plan, then apply exactly that plan.

A plan file records the state version and, per cohort, a fingerprint of what the plan was
computed from and what it would do. `apply --plan` refuses the file once the state has moved
on or any cohort's spec, source or synced members differ, so what was reviewed is what is sent.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.common.errors import CohortSyncError
from reconciler.planning.plans import CohortPlan, fingerprint, totals
from reconciler.settings.model import DEFAULT_WORKSPACE
from reconciler.state.keys import sync_key

KIND = "cohortsync-plan"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SavedPlan:
    state_version: int
    cohorts: list[str]  # the --cohort selection it was made with
    force: bool
    prune: bool
    fingerprints: dict[str, str]  # per state key: a cohort in one workspace
    workspaces: list[str] = field(default_factory=list)  # the --workspace selection it was made with


def write(path: Path, plans: list[CohortPlan], *, state_version: int, cohorts: list[str], force: bool,
          prune: bool, workspaces: list[str] | None = None) -> None:
    doc = {
        "kind": KIND, "format_version": FORMAT_VERSION, "created_at": time.time(), "state_version": state_version,
        "options": {"cohorts": cohorts, "force": force, "prune": prune, "workspaces": workspaces or []},
        "cohorts": [{**p.as_json(), "fingerprint": fingerprint(p)} for p in plans],
        "totals": totals(plans),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def read(path: Path) -> SavedPlan:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CohortSyncError(f"{path}: not a readable plan file ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise CohortSyncError(f"{path}: not a cohortsync plan file (make one with `cohortsync plan --out FILE`)")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CohortSyncError(f"{path}: plan format {doc.get('format_version')} is not {FORMAT_VERSION}: plan again")
    try:
        options = doc["options"]
        return SavedPlan(int(doc["state_version"]), list(options["cohorts"]), bool(options["force"]),
                         bool(options["prune"]),
                         {sync_key(c.get("workspace", DEFAULT_WORKSPACE), c["id"]): c["fingerprint"]
                          for c in doc["cohorts"]}, list(options.get("workspaces", [])))
    except (KeyError, TypeError, ValueError) as exc:
        raise CohortSyncError(f"{path}: the plan file is damaged ({exc!r}): plan again") from exc


def moved(saved: SavedPlan, current_state_version: int, plans: list[CohortPlan]) -> list[str]:
    """Why the saved plan no longer holds; empty when it still does."""
    reasons = []
    if current_state_version != saved.state_version:
        reasons.append(f"the state moved on (version {saved.state_version} when planned, {current_state_version} now)")
    now = {p.key: fingerprint(p) for p in plans}
    for cid in sorted(set(now) | set(saved.fingerprints)):
        if cid not in now:
            reasons.append(f"cohort {cid} is no longer there")
        elif cid not in saved.fingerprints:
            reasons.append(f"cohort {cid} is new since the plan")
        elif now[cid] != saved.fingerprints[cid]:
            reasons.append(f"cohort {cid}: its spec, source or synced members changed")
    return reasons
