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
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from reconciler.running.applying import CohortOutcome, execute
from reconciler.moengage.client import MoEngageClient
from reconciler.common.errors import ConfigError, FatalApiError, LeaseLost
from reconciler.common.statuses import Status
from reconciler.planning.planner import Planner, PreparedPlan
from reconciler.running.progress import Progress
from reconciler.planning.plans import CHANGED, ERROR, ORPHANED, UNCHANGED, CohortPlan, fingerprint
from reconciler.settings.config import require_credentials
from reconciler.settings.model import DEFAULT_WORKSPACE, MoEngageSettings, Settings
from reconciler.sources.reading import Engines
from reconciler.specs.cohorts import CohortSpec, SpecSet, load_specs, name_rules
from reconciler.state.budget import SharedBudget
from reconciler.state.fencing import Fence
from reconciler.state.store import CohortRecord, RunRecord, StateStore, sync_key

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
    only: list[str]
    force: bool
    prune: bool | None
    records: dict[str, CohortRecord]
    report: RunReport
    trigger: str
    expected: dict[str, str] | None  # a saved plan's fingerprints, per state key
    resync: bool = False  # every desired uid re-sent, the changelog's leavers removed (planning/resync.py)
    keys: Collection[str] | None = None  # only these state keys (a replica's share); None: every selected one
    yield_to: threading.Event | None = None  # once set, no further cohort starts, and a long one gives way


class Reconciler:
    """Built once per process by the CLI or the daemon, from the same Settings.

    Each (workspace, cohort) is its own sync; a run sends to different workspaces at the same
    time, one thread each, every workspace at its own rate limit, so that one workspace failing or
    throttled holds up none of the others.
    """

    def __init__(self, settings: Settings, state: StateStore, client: MoEngageClient | None = None,
                 stop: threading.Event | None = None, progress: Progress | None = None,
                 clients: dict[str, MoEngageClient] | None = None) -> None:
        self.settings, self.state = settings, state
        self.stop = stop or threading.Event()
        self.progress = progress
        self.clients = dict(clients or {})
        if client is not None:
            self.clients.setdefault(DEFAULT_WORKSPACE, client)
        self._own: list[MoEngageClient] = []  # clients made here, closed here
        self._lock = threading.Lock()
        self.fences: Callable[[str], Fence | None] = lambda key: None  # a replica's lease per state key
        self.engines = Engines(settings.connections)
        self.planner = Planner(settings, state, self.engines)

    @property
    def client(self) -> MoEngageClient | None:
        """The default workspace's client, when there is one."""
        return self.clients.get(DEFAULT_WORKSPACE)

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
        """On PostgreSQL every process shares one rate budget per account (MoEngage counts per account:
        workspace id and data centre); on SQLite one process writes, and its own limiter suffices."""
        if self.state.engine.dialect.name != "postgresql":
            return None
        return SharedBudget(self.state, f"{account.workspace_id}@{account.url}", account.rate_limit,
                            flight=account.timeout + 5.0, stop=self.stop)

    def close(self) -> None:
        self.engines.close()
        for client in self._own:
            client.close()

    def load(self) -> SpecSet:
        return load_checked(self.settings)

    @property
    def changelog(self) -> bool:
        """Whether settled batches are logged (`changelog.retention` above 0)."""
        return self.settings.changelog.retention > 0

    def keys(self, specs: SpecSet, only: Iterable[str] = (), workspaces: Iterable[str] = ()) -> set[str]:
        """The state keys a run over these cohorts (all when none) touches: what `apply` takes leases on."""
        wanted, chosen = set(only), set(workspaces)
        return {target_key(w, spec, record) for w, spec, record in targets(specs, self.state.cohorts(),
                                                                           self.settings.accounts)
                if (not wanted or (spec.id if spec else record.cohort) in wanted)  # type: ignore[union-attr]
                and (not chosen or w in chosen)}

    def plan(self, specs: SpecSet, only: Iterable[str] = (), *, force: bool = False, prune: bool | None = None,
             workspaces: Iterable[str] = (), resync: bool = False) -> list[CohortPlan]:
        plans = []
        for prepared in self.prepare(specs, only, force=force, prune=prune, workspaces=workspaces, resync=resync):
            prepared.close()
            plans.append(prepared.plan)
        return plans

    def prepare(self, specs: SpecSet, only: Iterable[str] = (), *, force: bool = False,
                prune: bool | None = None, records: dict[str, CohortRecord] | None = None,
                workspaces: Iterable[str] = (), errors: bool = True, resync: bool = False,
                keys: Collection[str] | None = None) -> Iterator[PreparedPlan]:
        """Plan every selected (workspace, cohort) in turn, by workspace then id (`resync`: as
        planning/resync.py says); the caller closes each.

        `keys` (state keys) narrows the selection further: a replica plans only the cohorts it holds.
        """
        wanted, in_workspaces = set(only), set(workspaces)
        prune = self.settings.prune if prune is None else prune
        records = self.state.cohorts() if records is None else records
        if errors:
            for plan in spec_error_plans(specs):
                if not wanted or plan.id in wanted:
                    yield PreparedPlan(plan)
        for workspace, spec, record in targets(specs, records, self.settings.accounts):
            if (wanted and (spec.id if spec else record.cohort) not in wanted) or \
                    (in_workspaces and workspace not in in_workspaces) or \
                    (keys is not None and target_key(workspace, spec, record) not in keys):
                continue
            if spec is not None and resync:
                yield self.planner.plan_resync(spec, record, force=force, workspace=workspace, changelog=self.changelog)
            elif spec is not None:
                yield self.planner.plan_cohort(spec, record, force=force, workspace=workspace)
            elif workspace not in self.settings.accounts:
                yield self.planner.plan_orphan(record, prune=False, reason=(
                    f"its workspace {workspace!r} is no longer in the config: members left as they are"))
            elif specs.complete:
                yield self.planner.plan_orphan(record, prune=prune)
            else:
                yield self.planner.plan_orphan(record, prune=False, reason=(
                    "its spec is gone, but some specs failed to load: not pruning until they do"))

    def apply(self, specs: SpecSet, only: Iterable[str] = (), *, force: bool = False, prune: bool | None = None,
              dry_run: bool = False, trigger: str = "cli", expected: dict[str, str] | None = None,
              workspaces: Iterable[str] = (), resync: bool = False, keys: Collection[str] | None = None,
              yield_to: threading.Event | None = None) -> RunReport:
        """Reconcile; with `expected` (a saved plan's fingerprints) a cohort whose plan differs is refused.

        `keys` limits the run to these state keys (a daemon's share; spec errors are then left to
        the daemon's own log); once `yield_to` is set no further cohort starts, so that more urgent
        work goes first: the report's outcomes say which cohorts were done.
        """
        report = RunReport(uuid.uuid4().hex[:12], dry_run=dry_run)
        run = _Run(specs, list(only), force, prune, self.state.cohorts(), report, trigger, expected, resync, keys,
                   yield_to)
        report.before = run.records
        for plan in spec_error_plans(specs) if keys is None else ():
            if not run.only or plan.id in run.only:
                run.report.outcomes.append(self._apply_one(PreparedPlan(plan), run))
        errors = len(run.report.outcomes)
        chosen = set(workspaces)
        groups = sorted({w for w, spec, record in targets(specs, run.records, self.settings.accounts)
                         if (not chosen or w in chosen) and (keys is None or target_key(w, spec, record) in keys)})
        if len(groups) > 1 and not dry_run:
            with ThreadPoolExecutor(len(groups), thread_name_prefix="workspace") as pool:
                list(pool.map(functools.partial(self._apply_workspace, run), groups))
        else:
            for group in groups:
                self._apply_workspace(run, group)
        outcomes = run.report.outcomes
        outcomes[errors:] = sorted(outcomes[errors:], key=lambda o: (o.plan.workspace, o.plan.status == ORPHANED,
                                                                     o.plan.id))
        if self.stop.is_set():
            run.report.stop("shutting down")
        return run.report

    def _apply_workspace(self, run: "_Run", workspace: str) -> None:
        """One workspace's cohorts in turn; a 401/403 or a shutdown stops this workspace only."""
        for prepared in self.prepare(run.specs, run.only, force=run.force, prune=run.prune, records=run.records,
                                     workspaces=[workspace], errors=False, resync=run.resync, keys=run.keys):
            if run.yield_to is not None and run.yield_to.is_set():
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
        plan = prepared.plan
        if run.expected is not None and fingerprint(plan) != run.expected.get(plan.key):
            return CohortOutcome(plan, Status.STALE, error=STALE)
        if run.report.dry_run or not plan.actionable:
            try:
                self._note_idle(plan, run.records.get(plan.key), run.report.dry_run)
            except LeaseLost as exc:  # another replica or an apply took the cohort: it records the standing
                fence = self.fences(plan.key)
                if fence is not None:
                    fence.lost(str(exc))
                return CohortOutcome(plan, Status.INTERRUPTED, error=str(exc))
            return CohortOutcome(plan, plan.status, error=plan.reason if plan.status == ERROR else None)
        record = RunRecord(run.report.run_id, plan.key, Status.RUNNING, time.time(), run.trigger,
                           planned_adds=plan.adds, planned_removes=plan.removes)
        try:
            client = self.client_for(plan.workspace)
        except ConfigError as exc:
            return CohortOutcome(plan, Status.FAILED, error=str(exc))
        try:
            return execute(prepared, client, self.state, record, self.stop, self.progress, changelog=self.changelog,
                           fence=self.fences(plan.key), yield_to=run.yield_to)
        except FatalApiError as exc:
            where = f"workspace {plan.workspace}: " if plan.workspace != DEFAULT_WORKSPACE else ""
            run.report.stop(f"{where}MoEngage refused the credentials or the account: {exc}")
            log.error("run stopped for workspace %s: %s", plan.workspace, exc)
            return CohortOutcome(plan, Status.FAILED, error=str(exc), fatal=True)

    def _note_idle(self, plan: CohortPlan, record: CohortRecord | None, dry_run: bool) -> None:
        """Record what changed in a cohort's standing without sending; steady state writes nothing."""
        if dry_run or plan.spec_digest is None:
            return
        if plan.status == UNCHANGED:
            settled = (record is not None and record.converged and record.last_status == Status.CONVERGED
                       and record.spec_digest == plan.spec_digest and record.source_digest == plan.source_digest)
            if not settled:
                self.state.record_outcome(plan.key, plan.name, plan.description, status=Status.CONVERGED,
                                          converged=True, spec_digest=plan.spec_digest, source_digest=plan.source_digest,
                                          fence=self.fences(plan.key))
        elif plan.status not in (CHANGED, ORPHANED) and (record is None or record.last_status != plan.status
                                                         or record.last_error != plan.reason):
            if record is not None or plan.status != ERROR:
                self.state.record_outcome(plan.key, plan.name, plan.description, status=plan.status, error=plan.reason,
                                          fence=self.fences(plan.key))


def workspaces_of(specs: SpecSet, only: Iterable[str] = (), chosen: Iterable[str] = ()) -> list[str]:
    """The workspaces the selected specs sync to (within `chosen`, when given)."""
    wanted, chosen = set(only), set(chosen)
    return sorted({w for spec in specs.specs.values() if not wanted or spec.id in wanted
                   for w in spec.workspaces if not chosen or w in chosen})


def targets(specs: SpecSet, records: dict[str, CohortRecord],
            accounts: Iterable[str]) -> list[tuple[str, CohortSpec | None, CohortRecord | None]]:
    """Every (workspace, spec, record) a run covers, by workspace then cohort id: each spec in each of
    its workspaces, and each orphan (a record no spec targets any more) in its own."""
    found = [(w, spec, records.get(sync_key(w, spec.id))) for spec in specs.specs.values() for w in spec.workspaces]
    found += [(r.workspace, None, r) for r in orphans(records, specs)]
    return sorted(found, key=lambda t: (t[0], t[1] is None, t[1].id if t[1] else t[2].cohort))  # type: ignore[union-attr]


def load_checked(settings: Settings) -> SpecSet:
    """Every spec, checked also against what the operator config says of its workspaces (their name rules)."""
    accounts = settings.accounts
    return load_specs(settings.cohorts_dir, settings.connections, accounts, name_rules(accounts))


def target_key(workspace: str, spec: CohortSpec | None, record: CohortRecord | None) -> str:
    """The state key of one of `targets`' entries: what a replica's lease is named after."""
    return sync_key(workspace, spec.id) if spec is not None else record.id  # type: ignore[union-attr]


def target_keys(specs: SpecSet, records: dict[str, CohortRecord], accounts: Iterable[str]) -> list[str]:
    """Every state key a full run covers (each spec in each of its workspaces, and each orphan)."""
    return [target_key(w, spec, record) for w, spec, record in targets(specs, records, accounts)]


def orphans(records: dict[str, CohortRecord], specs: SpecSet) -> list[CohortRecord]:
    """Cohorts in state no spec syncs to their workspace any more; a spec that exists but failed to
    load does not count as gone (in any workspace)."""
    wanted = {sync_key(w, spec.id) for spec in specs.specs.values() for w in spec.workspaces}
    return [r for key, r in sorted(records.items()) if key not in wanted and r.cohort not in specs.broken_ids]


def spec_error_plans(specs: SpecSet) -> list[CohortPlan]:
    by_file: dict[str, list[str]] = {}
    for err in specs.errors:
        by_file.setdefault(err.file, []).append(str(err))
    return [CohortPlan(id=specs.broken.get(file) or file, name="", status=ERROR, file=file, reason="; ".join(msgs))
            for file, msgs in sorted(by_file.items())]

