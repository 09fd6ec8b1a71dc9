"""One reconcile over a set of cohorts: load specs, plan each, apply what may be applied.

The CLI's plan and apply and the daemon all come through here, so they agree on every rule:
a broken spec is an error and never an orphan, orphans are pruned only when every spec
loaded, a 401/403 stops the run, any other failure stops only its cohort.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from reconciler.running.applying import CohortOutcome, execute
from reconciler.moengage.client import MoEngageClient
from reconciler.common.errors import FatalApiError
from reconciler.common.statuses import Status
from reconciler.planning.planner import Planner, PreparedPlan
from reconciler.running.progress import Progress
from reconciler.planning.plans import CHANGED, ERROR, ORPHANED, UNCHANGED, CohortPlan, fingerprint
from reconciler.settings.model import Settings
from reconciler.sources.reading import Engines
from reconciler.specs.cohorts import SpecSet, load_specs
from reconciler.state.store import CohortRecord, RunRecord, StateStore

log = logging.getLogger(__name__)
STALE = "its spec, source or synced members changed since the saved plan was made: plan again"


@dataclass
class RunReport:
    run_id: str
    outcomes: list[CohortOutcome] = field(default_factory=list)
    stopped: str | None = None  # why the run stopped early (401/403)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return self.stopped is None and all(o.ok for o in self.outcomes)

    @property
    def plans(self) -> list[CohortPlan]:
        return [o.plan for o in self.outcomes]


class Reconciler:
    """Built once per process by the CLI or the daemon, from the same Settings."""

    def __init__(self, settings: Settings, state: StateStore, client: MoEngageClient | None = None,
                 stop: threading.Event | None = None, progress: Progress | None = None) -> None:
        self.settings, self.state, self.client = settings, state, client
        self.stop = stop or threading.Event()
        self.progress = progress
        self.engines = Engines(settings.connections)
        self.planner = Planner(settings, state, self.engines)

    def close(self) -> None:
        self.engines.close()

    def load(self) -> SpecSet:
        return load_specs(self.settings.cohorts_dir, self.settings.connections)

    def plan(self, specs: SpecSet, only: Iterable[str] = (), *, force: bool = False, prune: bool | None = None) -> list[CohortPlan]:
        plans = []
        for prepared in self.prepare(specs, only, force=force, prune=prune):
            prepared.close()
            plans.append(prepared.plan)
        return plans

    def prepare(self, specs: SpecSet, only: Iterable[str] = (), *, force: bool = False,
                prune: bool | None = None, records: dict[str, CohortRecord] | None = None) -> Iterator[PreparedPlan]:
        """Plan every selected cohort in turn; the caller closes each PreparedPlan."""
        wanted = set(only)
        prune = self.settings.prune if prune is None else prune
        records = self.state.cohorts() if records is None else records
        for plan in spec_error_plans(specs):
            if not wanted or plan.id in wanted:
                yield PreparedPlan(plan)
        for spec in sorted(specs.specs.values(), key=lambda s: s.id):
            if not wanted or spec.id in wanted:
                yield self.planner.plan_cohort(spec, records.get(spec.id), force=force)
        for record in orphans(records, specs):
            if not wanted or record.id in wanted:
                if specs.complete:
                    yield self.planner.plan_orphan(record, prune=prune)
                else:
                    yield self.planner.plan_orphan(record, prune=False, reason=(
                        "its spec is gone, but some specs failed to load: not pruning until they do"))

    def apply(self, specs: SpecSet, only: Iterable[str] = (), *, force: bool = False, prune: bool | None = None,
              dry_run: bool = False, trigger: str = "cli", expected: dict[str, str] | None = None) -> RunReport:
        """Reconcile; with `expected` (a saved plan's fingerprints) a cohort whose plan differs is refused."""
        report = RunReport(uuid.uuid4().hex[:12], dry_run=dry_run)
        records = self.state.cohorts()
        for prepared in self.prepare(specs, only, force=force, prune=prune, records=records):
            try:
                if expected is not None and fingerprint(prepared.plan) != expected.get(prepared.plan.id):
                    report.outcomes.append(CohortOutcome(prepared.plan, Status.STALE, error=STALE))
                    continue
                report.outcomes.append(self._apply_one(prepared, records, report, trigger))
            finally:
                prepared.close()
            if self.stop.is_set() and not report.stopped:
                report.stopped = "shutting down"
            if report.stopped:
                break  # plan no more: nothing more will be sent in this run
        return report

    def _apply_one(self, prepared: PreparedPlan, records: dict[str, CohortRecord], report: RunReport,
                   trigger: str) -> CohortOutcome:
        plan = prepared.plan
        if report.dry_run or not plan.actionable:
            self._note_idle(plan, records.get(plan.id), report.dry_run)
            return CohortOutcome(plan, plan.status, error=plan.reason if plan.status == ERROR else None)
        assert self.client is not None, "apply needs a client"
        run = RunRecord(report.run_id, plan.id, Status.RUNNING, time.time(), trigger,
                        planned_adds=plan.adds, planned_removes=plan.removes)
        try:
            return execute(prepared, self.client, self.state, run, self.stop, self.progress)
        except FatalApiError as exc:
            report.stopped = f"MoEngage refused the credentials or the account: {exc}"
            log.error("run stopped: %s", exc)
            return CohortOutcome(plan, Status.FAILED, error=str(exc))

    def _note_idle(self, plan: CohortPlan, record: CohortRecord | None, dry_run: bool) -> None:
        """Record what changed in a cohort's standing without sending; steady state writes nothing."""
        if dry_run or plan.spec_digest is None:
            return
        if plan.status == UNCHANGED:
            settled = (record is not None and record.converged and record.last_status == Status.CONVERGED
                       and record.spec_digest == plan.spec_digest and record.source_digest == plan.source_digest)
            if not settled:
                self.state.record_outcome(plan.id, plan.name, plan.description, status=Status.CONVERGED, converged=True,
                                          spec_digest=plan.spec_digest, source_digest=plan.source_digest)
        elif plan.status not in (CHANGED, ORPHANED) and (record is None or record.last_status != plan.status
                                                         or record.last_error != plan.reason):
            if record is not None or plan.status != ERROR:
                self.state.record_outcome(plan.id, plan.name, plan.description, status=plan.status, error=plan.reason)


def orphans(records: dict[str, CohortRecord], specs: SpecSet) -> list[CohortRecord]:
    """Cohorts in state with no spec; a spec that exists but failed to load does not count as gone."""
    return [r for cid, r in sorted(records.items()) if cid not in specs.specs and cid not in specs.broken_ids]


def spec_error_plans(specs: SpecSet) -> list[CohortPlan]:
    by_file: dict[str, list[str]] = {}
    for err in specs.errors:
        by_file.setdefault(err.file, []).append(str(err))
    return [CohortPlan(id=specs.broken.get(file) or file, name="", status=ERROR, file=file, reason="; ".join(msgs))
            for file, msgs in sorted(by_file.items())]

