"""What a run covers and how it runs: built once by the CLI or the daemon, passed down as two objects.

A run covers *targets*: each spec in each of its workspaces, and each orphan (a state record no
spec targets any more) in its own. `Selection` says which targets (cohort ids, workspaces, and
for a replica the state keys it holds); `RunOptions` says what to do with them (force, prune, a
dry run, a resync, a saved plan's fingerprints, what triggered it, when to give way).
"""
from __future__ import annotations

import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace

from reconciler.specs.cohorts import CohortSpec, SpecSet
from reconciler.state.keys import sync_key
from reconciler.state.records import CohortRecord


@dataclass(frozen=True)
class Target:
    """One (workspace, cohort) a run may cover: a spec, or an orphan's record."""

    workspace: str
    spec: CohortSpec | None
    record: CohortRecord | None

    @property
    def cohort(self) -> str:
        return self.spec.id if self.spec is not None else self.record.cohort  # type: ignore[union-attr]

    @property
    def key(self) -> str:
        """The state key: what the cohort's members, runs and lease are kept under."""
        return sync_key(self.workspace, self.spec.id) if self.spec is not None else self.record.id  # type: ignore[union-attr]


@dataclass(frozen=True)
class Selection:
    """Which targets a run covers; an empty field selects everything."""

    cohorts: frozenset[str] = frozenset()  # cohort ids (`--cohort`)
    workspaces: frozenset[str] = frozenset()  # workspace names (`--workspace`, `run --workspace`)
    keys: frozenset[str] | None = None  # state keys: a replica's share; None: every selected one

    @classmethod
    def of(cls, cohorts: Iterable[str] = (), workspaces: Iterable[str] = (),
           keys: Iterable[str] | None = None) -> "Selection":
        return cls(frozenset(cohorts), frozenset(workspaces), None if keys is None else frozenset(keys))

    def covers(self, target: Target) -> bool:
        return (self.covers_cohort(target.cohort) and (not self.workspaces or target.workspace in self.workspaces)
                and (self.keys is None or target.key in self.keys))

    def covers_cohort(self, cohort_id: str) -> bool:
        return not self.cohorts or cohort_id in self.cohorts

    def in_workspace(self, workspace: str) -> "Selection":
        """The same selection, in one workspace only: a run's part for one workspace's thread."""
        return replace(self, workspaces=frozenset({workspace}))

    def targets(self, specs: SpecSet, records: Mapping[str, CohortRecord]) -> list[Target]:
        return [t for t in targets(specs, records) if self.covers(t)]

    def state_keys(self, specs: SpecSet, records: Mapping[str, CohortRecord]) -> set[str]:
        """The state keys a run over this selection touches: what `apply` takes leases on."""
        return {t.key for t in self.targets(specs, records)}

    def workspaces_of(self, specs: SpecSet) -> list[str]:
        """The workspaces the selected specs sync to: the credentials a run needs."""
        return sorted({w for spec in specs.specs.values() if self.covers_cohort(spec.id)
                       for w in spec.workspaces if not self.workspaces or w in self.workspaces})


EVERYTHING = Selection()


@dataclass(frozen=True)
class RunOptions:
    """How a run treats what it covers."""

    force: bool = False  # past the guards
    prune: bool | None = None  # empty orphans; None: the config's `prune`
    dry_run: bool = False  # plan and report, send and write nothing
    resync: bool = False  # every desired uid re-sent, the changelog's leavers removed (planning/resync.py)
    retry_refused: bool = False  # send the uids MoEngage refused before again (state/refused.py)
    trigger: str = "cli"  # what asked for it, as history shows it
    expected: Mapping[str, str] | None = None  # a saved plan's fingerprints per state key: a cohort that differs is refused
    yield_to: threading.Event | None = field(default=None, compare=False)  # once set, no further cohort starts


def targets(specs: SpecSet, records: Mapping[str, CohortRecord]) -> list[Target]:
    """Every target, by workspace then cohort id, orphans after the specs of their workspace."""
    found = [Target(w, spec, records.get(sync_key(w, spec.id))) for spec in specs.specs.values()
             for w in spec.workspaces]
    found += [Target(r.workspace, None, r) for r in orphans(records, specs)]
    return sorted(found, key=lambda t: (t.workspace, t.spec is None, t.cohort))


def orphans(records: Mapping[str, CohortRecord], specs: SpecSet) -> list[CohortRecord]:
    """Cohorts in state no spec syncs to their workspace any more; a spec that exists but failed to
    load does not count as gone (in any workspace)."""
    wanted = {sync_key(w, spec.id) for spec in specs.specs.values() for w in spec.workspaces}
    return [r for key, r in sorted(records.items()) if key not in wanted and r.cohort not in specs.broken_ids]


def target_keys(specs: SpecSet, records: Mapping[str, CohortRecord], chosen: Collection[str] = ()) -> set[str]:
    """Every state key a full run covers (within the `chosen` workspaces, when given)."""
    return Selection.of(workspaces=chosen).state_keys(specs, records)
