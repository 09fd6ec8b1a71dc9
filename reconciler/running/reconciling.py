"""One reconcile over a set of cohorts: load specs, plan each, apply what may be applied.

The CLI's plan and apply and the daemon all come through here, so they agree on every rule:
a broken spec is an error and never an orphan, orphans are pruned only when every spec
loaded, a 401/403 stops the run, any other failure stops only its cohort.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from reconciler.common.errors import ConfigError, FatalApiError, LeaseLost, StateError
from reconciler.common.statuses import Status
from reconciler.moengage.client import MoEngageClient
from reconciler.planning.planner import Planner
from reconciler.planning.spills import PreparedPlan
from reconciler.planning.plans import CHANGED, ERROR, ORPHANED, UNCHANGED, CohortPlan, fingerprint
from reconciler.running.applying import Applier, CohortOutcome
from reconciler.running.progress import Progress
from reconciler.running.selection import EVERYTHING, RunOptions, Selection
from reconciler.settings.config import require_credentials
from reconciler.snapshots.moving import Mover
from reconciler.settings.model import DEFAULT_WORKSPACE, MoEngageSettings, Settings
from reconciler.sources.reading import Engines
from reconciler.specs.cohorts import SpecSet, load_specs, name_rules
from reconciler.specs.dbt import Manifests
from reconciler.state.budget import SharedBudget
from reconciler.state.fencing import Fence
from reconciler.state.records import CohortRecord, RunRecord, Ending
from reconciler.state.store import StateStore

log = logging.getLogger(__name__)
STALE = "its spec, source or synced members changed since the saved plan was made: plan again"


@dataclass
class RunReport:
    run_id: str
    outcomes: list[CohortOutcome] = field(default_factory=list)
    stopped: str | None = None  # why the run (or a workspace's part of it) stopped early: 401/403, a shutdown
    dry_run: bool = False
    before: dict[str, CohortRecord] = field(default_factory=dict)  # the records as the run found them, by state key

    @property
    def ok(self) -> bool:
        return self.stopped is None and all(o.ok for o in self.outcomes)

    @property
    def plans(self) -> list[CohortPlan]:
        return [o.plan for o in self.outcomes]

    def stop(self, why: str) -> None:
        self.stopped = why if not self.stopped or why in self.stopped else f"{self.stopped}; {why}"


@dataclass
class _Run:
    """What one apply shares across the threads of its workspaces."""

    specs: SpecSet
    selection: Selection
    options: RunOptions
    records: dict[str, CohortRecord]
    report: RunReport


class Reconciler:
    """Built once per process by the CLI or the daemon, from the same Settings.

    Each (workspace, cohort) is its own sync; a run sends to different workspaces at the same
    time, one thread each, every workspace at its own rate limit, so that one workspace failing or
    throttled holds up none of the others. `fences` names the lease each state key's writes are
    made under (a replica's, or an apply's beside replicas); `digest_desired` makes plans
    fingerprint SQL cohorts by their desired set (saved plans).
    """

    def __init__(self, settings: Settings, state: StateStore, *, stop: threading.Event | None = None,
                 progress: Progress | None = None, clients: dict[str, MoEngageClient] | None = None,
                 fences: Callable[[str], Fence | None] = lambda key: None, digest_desired: bool = False) -> None:
        self.settings, self.state = settings, state
        self.stop = stop or threading.Event()
        self.clients = dict(clients or {})
        self._own: list[MoEngageClient] = []  # clients made here, closed here
        self._lock = threading.Lock()
        self.fences = fences
        self.engines = Engines(settings.connections)
        self.planner = Planner(settings, state, self.engines, digest_desired=digest_desired)
        self.applier = Applier(state, self.stop, progress, changelog=settings.changelog.logs)
        self.mover = Mover(state, self.planner.snapshots)

    def client_for(self, workspace: str) -> MoEngageClient:
        """The workspace's client (its own rate limiter), made on first use from its settings."""
        with self._lock:
            if workspace not in self.clients:
                require_credentials(self.settings, [workspace])
                account = self.settings.account(workspace)
                client = MoEngageClient(account, stop=self.stop, limiter=self._shared_budget(account),
                                        workspace=workspace)
                self.clients[workspace] = client
                self._own.append(client)
            return self.clients[workspace]

    def _shared_budget(self, account: MoEngageSettings) -> SharedBudget | None:
        """On a shared state every process shares one rate budget per account (MoEngage counts per
        account: workspace id and data centre); with one writer its own limiter suffices."""
        if not self.state.shared:
            return None
        return SharedBudget(self.state, f"{account.workspace_id}@{account.url}", account.rate_limit,
                            flight=account.timeout + 5.0, stop=self.stop)

    def close(self) -> None:
        self.engines.close()
        for client in self._own:
            client.close()

    def load(self) -> SpecSet:
        return load_checked(self.settings)

    def plan(self, specs: SpecSet, selection: Selection = EVERYTHING,
             options: RunOptions = RunOptions()) -> list[CohortPlan]:
        plans = []
        for prepared in self.prepare(specs, selection, options):
            prepared.close()
            plans.append(prepared.plan)
        return plans

    def prepare(self, specs: SpecSet, selection: Selection = EVERYTHING, options: RunOptions = RunOptions(), *,
                records: dict[str, CohortRecord] | None = None, errors: bool = True) -> Iterator[PreparedPlan]:
        """Plan every selected (workspace, cohort) in turn, by workspace then id (a resync as
        planning/resync.py says), after the broken specs' error plans (with `errors`); the caller
        closes each."""
        prune = self.settings.prune if options.prune is None else options.prune
        records = self.state.cohorts() if records is None else records
        if errors:
            for plan in spec_error_plans(specs):
                if selection.covers_cohort(plan.id):
                    yield PreparedPlan(plan)
        for target in selection.targets(specs, records):
            spec, record, workspace = target.spec, target.record, target.workspace
            if spec is not None and options.resync:
                yield self.planner.plan_resync(spec, record, force=options.force, workspace=workspace,
                                               retry_refused=options.retry_refused)
            elif spec is not None:
                yield self.planner.plan_cohort(spec, record, force=options.force, workspace=workspace,
                                               retry_refused=options.retry_refused)
            elif workspace not in self.settings.accounts:
                yield self.planner.plan_orphan(record, prune=False, reason=(  # type: ignore[arg-type]
                    f"its workspace {workspace!r} is no longer in the config: members left as they are"))
            elif specs.complete:
                yield self.planner.plan_orphan(record, prune=prune)  # type: ignore[arg-type]
            else:
                yield self.planner.plan_orphan(record, prune=False, reason=(  # type: ignore[arg-type]
                    "its spec is gone, but some specs failed to load: not pruning until they do"))

    def apply(self, specs: SpecSet, selection: Selection = EVERYTHING,
              options: RunOptions = RunOptions()) -> RunReport:
        """Reconcile; with `options.expected` (a saved plan's fingerprints) a cohort whose plan differs is refused.

        A selection by state keys (a daemon's share) leaves spec errors to the daemon's own log;
        once `options.yield_to` is set no further cohort starts, so that more urgent work goes
        first: the report's outcomes say which cohorts were done.
        """
        report = RunReport(uuid.uuid4().hex[:12], dry_run=options.dry_run)
        run = _Run(specs, selection, options, self.state.cohorts(), report)
        report.before = run.records
        for plan in spec_error_plans(specs) if selection.keys is None else ():
            if selection.covers_cohort(plan.id):
                report.outcomes.append(self._apply_one(PreparedPlan(plan), run))
        errors = len(report.outcomes)
        groups = sorted({t.workspace for t in selection.targets(specs, run.records)})
        if len(groups) > 1 and not options.dry_run:
            with ThreadPoolExecutor(len(groups), thread_name_prefix="workspace") as pool:
                list(pool.map(functools.partial(self._apply_workspace, run), groups))
        else:
            for group in groups:
                self._apply_workspace(run, group)
        outcomes = report.outcomes
        outcomes[errors:] = sorted(outcomes[errors:], key=lambda o: (o.plan.workspace, o.plan.status == ORPHANED,
                                                                     o.plan.id))
        if self.stop.is_set():
            report.stop("shutting down")
        return report

    def _apply_workspace(self, run: "_Run", workspace: str) -> None:
        """One workspace's cohorts in turn; a 401/403 or a shutdown stops this workspace only."""
        yield_to = run.options.yield_to
        for prepared in self.prepare(run.specs, run.selection.in_workspace(workspace), run.options,
                                     records=run.records, errors=False):
            if yield_to is not None and yield_to.is_set():
                prepared.close()
                break
            try:
                outcome = self._apply_one(prepared, run)
            finally:
                prepared.close()
            run.report.outcomes.append(outcome)
            if self.stop.is_set() or outcome.fatal:
                break  # plan no more: nothing more will be sent to this workspace in this run

    def _apply_one(self, prepared: PreparedPlan, run: "_Run") -> CohortOutcome:
        plan, options = prepared.plan, run.options
        if options.expected is not None and fingerprint(plan) != options.expected.get(plan.key):
            return CohortOutcome(plan, Status.STALE, error=STALE)
        if not options.dry_run and plan.status != ERROR:
            failed = self._place(prepared, run.report.run_id)
            if failed is not None:
                return failed
        if options.dry_run or not plan.actionable:
            try:
                self._note_idle(plan, run.records.get(plan.key), options.dry_run)
                if not options.dry_run:
                    self.applier.note_refusals(prepared, self.fences(plan.key))
            except LeaseLost as exc:  # another replica or an apply took the cohort: it records the standing
                fence = self.fences(plan.key)
                if fence is not None:
                    fence.lost(str(exc))
                return CohortOutcome(plan, Status.INTERRUPTED, error=str(exc))
            return CohortOutcome(plan, plan.status, error=plan.reason if plan.status == ERROR else None)
        record = RunRecord(run.report.run_id, plan.key, Status.RUNNING, time.time(), options.trigger,
                           planned_adds=plan.adds, planned_removes=plan.removes)
        try:
            client = self.client_for(plan.workspace)
        except ConfigError as exc:
            return CohortOutcome(plan, Status.FAILED, error=str(exc))
        try:
            return self.applier.execute(prepared, client, record, fence=self.fences(plan.key),
                                        yield_to=options.yield_to)
        except FatalApiError as exc:
            where = f"workspace {plan.workspace}: " if plan.workspace != DEFAULT_WORKSPACE else ""
            run.report.stop(f"{where}MoEngage refused the credentials or the account: {exc}")
            log.error("run stopped for workspace %s: %s", plan.workspace, exc)
            return CohortOutcome(plan, Status.FAILED, error=str(exc), fatal=True)

    def _place(self, prepared: PreparedPlan, run_id: str) -> CohortOutcome | None:
        """Before sending: members moved to where the config wants them (snapshots/moving.py); an outcome
        when that failed (nothing is sent), else None."""
        plan, fence = prepared.plan, self.fences(prepared.plan.key)
        placement = prepared.placement if plan.status != ORPHANED else None  # an orphan's members stay where they are
        try:
            prepared.keeping = self.mover.settle(plan.cohort, placement, prepared.keeping, fence, run_id)
        except LeaseLost as exc:
            if fence is not None:
                fence.lost(str(exc))
            return CohortOutcome(plan, Status.INTERRUPTED, error=str(exc))
        except StateError as exc:
            log.error("cohort %s: %s", plan.key, exc)
            try:
                self.state.record_outcome(plan.cohort, Ending(Status.FAILED, error=str(exc)), fence)
            except (StateError, LeaseLost) as why:  # the outcome says it all the same
                log.warning("cohort %s: its failure could not be recorded in the state: %s", plan.key, why)
            return CohortOutcome(plan, Status.FAILED, error=str(exc))
        return None

    def _note_idle(self, plan: CohortPlan, record: CohortRecord | None, dry_run: bool) -> None:
        """Record what changed in a cohort's standing without sending; steady state writes nothing."""
        if dry_run or plan.spec_digest is None:
            return
        fence = self.fences(plan.key)
        if plan.status == UNCHANGED:
            settled = (record is not None and record.last_status == Status.CONVERGED
                       and record.converged_on(plan.spec_digest, plan.source_digest))
            if not settled:
                self.state.record_outcome(plan.cohort, Ending(Status.CONVERGED, converged=True,
                                                                spec_digest=plan.spec_digest,
                                                                source_digest=plan.source_digest), fence)
        elif plan.status not in (CHANGED, ORPHANED) and (record is None or record.last_status != plan.status
                                                         or record.last_error != plan.reason):
            if record is not None or plan.status != ERROR:
                self.state.record_outcome(plan.cohort, Ending(plan.status, error=plan.reason), fence)


def load_checked(settings: Settings, manifests: Manifests | None = None) -> SpecSet:
    """Every spec, checked also against what the operator config says of its workspaces (their name rules),
    its dbt models resolved through `manifests` (one that keeps its last read, for the daemon) or dbt.manifest."""
    accounts = settings.accounts
    return load_specs(settings.cohorts_dir, settings.connections, accounts, name_rules(accounts),
                      manifests or Manifests(settings.dbt.manifest))


def spec_error_plans(specs: SpecSet) -> list[CohortPlan]:
    by_file: dict[str, list[str]] = {}
    for err in specs.errors:
        by_file.setdefault(err.file, []).append(str(err))
    return [CohortPlan(id=specs.broken.get(file) or file, name="", status=ERROR, file=file, reason="; ".join(msgs))
            for file, msgs in sorted(by_file.items())]

