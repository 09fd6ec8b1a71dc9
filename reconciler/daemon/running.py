"""`cohortsync run`: the daemon that keeps every cohort converged.

Threads: watchdog (file events, debounced), a timer (each cohort on its schedule, jittered),
the HTTP server (health, metrics, status, the CI trigger), the lease loop (sharing.py: renew,
claim, give back, pick up triggers other replicas forwarded), and one worker in the main thread
that takes the most urgent work from the scheduler and reconciles it. On SQLite the daemon holds
the writer lease for its whole life; on PostgreSQL it holds leases on its share of the cohorts.
SIGTERM/SIGINT finish the batch in flight, give the leases back and exit 0; SIGHUP reloads.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path

from reconciler.common.errors import CohortSyncError, ConfigError, StateError
from reconciler.daemon.http import DaemonAPI, DaemonServer
from reconciler.daemon.metrics import CONTENT_TYPE, Metrics
from reconciler.daemon.outcomes import log_outcomes
from reconciler.daemon.overview import Live, cohort_document, status_document, work_json
from reconciler.daemon.queueing import ALL, Work
from reconciler.daemon.repository import git_pull
from reconciler.daemon.runbook import RunBook
from reconciler.daemon.scheduling import Chunk, Scheduler
from reconciler.daemon.sharing import sharing_for
from reconciler.daemon.speccache import SpecCache, workspaces_in_use
from reconciler.daemon.standing import Standing
from reconciler.daemon.upkeep import PRUNE_STEP, Upkeep
from reconciler.daemon.watching import Watcher
from reconciler.notify.events import daemon_stopped, lease_lost
from reconciler.notify.sending import Notifier
from reconciler.running.reconciling import Reconciler, RunReport, load_checked
from reconciler.running.selection import RunOptions, Selection
from reconciler.settings.config import load_settings, require_credentials
from reconciler.settings.model import DEFAULT_WORKSPACE, RateLimit, Settings
from reconciler.specs.cohorts import SpecSet
from reconciler.specs.dbt import Manifests
from reconciler.state import leases
from reconciler.state.keys import split_key, sync_key
from reconciler.state.store import StateStore

log = logging.getLogger(__name__)
TICK = 0.5  # seconds between looks at the timers and the stop flag
RUNS_SHOWN = 200  # runs of one cohort on its page and in its charts
CHORES = 5.0  # seconds between looks at resyncs due and the changelog's retention
HANDED_OVER = "handed over"  # a pass's word for a cohort another replica (or an apply) took


class Daemon:
    """Starts the threads and routes their events to the scheduler; the worker reconciles what it hands out."""

    def __init__(self, config_path: str | None, workspaces: list[str] | None = None) -> None:
        self.config_path = config_path
        self.workspaces = list(workspaces or [])  # only these (run --workspace); all when empty
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.queue = Scheduler(lane=lambda key: split_key(key)[0])
        self.metrics = Metrics()
        self.settings: Settings = load_settings(config_path)
        require_credentials(self.settings, workspaces_in_use(self.settings, self.workspaces))
        self.state = StateStore.open(self.settings.state_url)
        self.share = sharing_for(self.state, self.settings.daemon.lease_time)
        self.reconciler: Reconciler | None = None
        self.manifests = Manifests(self.settings.dbt.manifest)  # read again only when dbt wrote it anew
        self.specs = SpecCache(lambda: load_checked(self.settings, self.manifests), self.state, self.settings,
                               self.workspaces, self.manifests.changed)
        self.standing = Standing()
        self._started_at = time.time()
        self.notifier = Notifier(self.settings.notify, self.settings.alerting)
        self.upkeep = Upkeep(self.state)
        self.runs = RunBook(self.state)  # what each trigger asked for and how it ended
        self._chores_at = 0.0

    # --- life cycle -----------------------------------------------------------------------
    def run(self) -> int:
        with self.share.holding(), leases.listening_for_lost(lambda name, holder, why: self.on_lease_lost(
                holder, f"{name}: {why}")):
            self._build()
            self._fresh_specs()
            server = DaemonServer(self.settings.daemon.listen, self._api())
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True).start()
            print(f"cohortsync daemon listening on {server.url}", flush=True)
            log.info("daemon %s started: cohorts in %s, listening on %s", self.share.id, self.settings.cohorts_dir,
                     server.url)
            watcher = Watcher(self.settings.cohorts_dir, self.settings.daemon.debounce, self._on_files)
            watcher.start()
            threading.Thread(target=self._timers, name="timers", daemon=True).start()
            if self.share.shared:
                threading.Thread(target=self._leases, name="leases", daemon=True).start()
            else:
                self.queue.put(self.specs.keys(), "startup")
            try:
                self._work()
            finally:
                watcher.stop()
                server.shutdown()
                server.server_close()
                self._teardown()
                self.notifier.emit(daemon_stopped("shut down" if self.stop.is_set() else "the worker stopped"))
                self.notifier.close(timeout=self.settings.alerting.timeout + 1)
        log.info("daemon stopped")
        return 0

    def install_signals(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, lambda *_: self.reload.set())  # the worker looks at it every TICK

    def _on_stop(self, signum: int, _frame: object) -> None:
        log.info("%s: finishing the batch in flight, then exiting", signal.Signals(signum).name)
        self.stop.set()
        self.queue.close()

    def _build(self) -> None:
        """The reconciler makes a client per workspace (its own rate limiter) when it first sends there."""
        self.reconciler = Reconciler(self.settings, self.state, stop=self.stop, fences=self.share.fence)

    def _teardown(self) -> None:
        if self.reconciler:
            self.reconciler.close()

    def _reload(self) -> None:
        """SIGHUP: read the config again; keep the old one when the new one is broken."""
        self.reload.clear()
        try:
            settings = load_settings(self.config_path)
            require_credentials(settings, workspaces_in_use(settings, self.workspaces))
        except CohortSyncError as exc:
            log.error("config reload failed, keeping the running config: %s", exc)
            return
        self._teardown()
        self.settings = settings
        self.manifests = Manifests(settings.dbt.manifest)
        manifests = self.manifests
        self.specs.rebind(lambda: load_checked(settings, manifests), settings, manifests.changed)
        self.metrics.observe_notifier(self.notifier.snapshot())
        self.notifier.close(timeout=1.0)
        self.notifier = Notifier(settings.notify, settings.alerting)
        self.metrics.forget_client()
        self._build()
        log.info("config reloaded")

    # --- the worker -------------------------------------------------------------------------
    def _work(self) -> None:
        while not self.stop.is_set():
            if self.reload.is_set():
                self._reload()
                self.queue.put(self.share.mine(self._fresh_keys()), "reload")
            chunk = self.queue.take(timeout=TICK)
            if chunk is not None:
                self._reconcile(chunk)

    def _reconcile(self, chunk: Chunk) -> None:
        """A few cohorts this replica holds: marked busy, reconciled, each logged only if it changed or failed."""
        assert self.reconciler is not None
        if chunk.git_pull and self.settings.daemon.git_pull:
            git_pull(self.settings.cohorts_dir)
            self.specs.mark_dirty()
        started = time.monotonic()
        specs = self._fresh_specs()
        keys = [k for k in chunk.keys if self.share.begin(k)]
        self.queue.drop(set(chunk.keys) - set(keys), HANDED_OVER)
        if not keys:
            self.queue.done({})
            return
        log.debug("reconciling %s (%s)", ", ".join(keys), ", ".join(sorted(chunk.reasons)))
        resync = self.standing.start(set(keys), set(chunk.reasons))
        # a trigger whose git pull is still to come waits for the chunk that pulls
        attempt = self.runs.begin(keys if chunk.git_pull or not self.settings.daemon.git_pull else [])
        try:
            report = self._apply(specs, keys, chunk, resync)
        except CohortSyncError as exc:  # the state database went away: the timers try again
            log.error("reconcile of %s failed: %s", ", ".join(keys), exc)
            self.runs.failed(attempt, keys, str(exc))
            self.queue.done({k: "failed" for k in keys})
            return
        finally:
            for key in keys:
                self.share.end(key)
            self.standing.stop()
        log_outcomes(report)
        done = {o.plan.key: str(o.result) for o in report.outcomes if not o.yielded}
        left = [k for k in keys if k not in done]
        yielded = {o.plan.key for o in report.outcomes if o.yielded}
        gave_way = chunk.routine and self.queue.urgent.is_set()  # the cohorts not started wait for their turn
        known = self.specs.keys()
        again = [k for k in left if k in known and (k in yielded or gave_way) and not self.stop.is_set()]
        self.queue.requeue(again, set(chunk.reasons))
        self.runs.end(attempt, report, keys, set(again) | (set(left) if self.stop.is_set() else set()))
        self.queue.done({**done, **{k: "not started" for k in left if k not in again}})
        self._after(report, started)

    def _apply(self, specs: SpecSet, keys: list[str], chunk: Chunk, resync: set[str]) -> RunReport:
        """The chunk's cohorts, then a resync of those among them that are due one."""
        assert self.reconciler is not None
        selection = Selection.of(workspaces=self.workspaces, keys=keys)
        options = RunOptions(trigger=",".join(sorted(chunk.reasons))[:32],
                             yield_to=self.queue.urgent if chunk.routine else None)
        report = self.reconciler.apply(specs, selection, options)
        self.notifier.observe(report)
        resync_keys = {k for k in keys if split_key(k)[1] in resync}
        if resync_keys:
            log.info("resyncing %s", ", ".join(sorted(resync_keys)))
            resynced = self.reconciler.apply(specs, Selection.of(sorted(resync), self.workspaces, resync_keys),
                                             RunOptions(trigger="resync", resync=True))
            self.notifier.observe(resynced)
            report.outcomes += resynced.outcomes
        return report

    def _fresh_specs(self) -> SpecSet:
        """The specs as SpecCache has them; the standing forgets cohorts they no longer name."""
        specs = self.specs.fresh()
        self.standing.keep(self.specs.keys(), specs.broken_ids)
        return specs

    def _fresh_keys(self) -> set[str]:
        self._fresh_specs()
        return self.specs.keys()

    def _leases(self) -> None:
        """A shared state: renew every third of the lease time; claim or give back; pick up forwarded triggers."""
        renew_every, next_renew = self.settings.daemon.lease_time / 3, 0.0
        while not self.stop.wait(0 if next_renew == 0.0 else TICK):
            try:
                if time.monotonic() >= next_renew:
                    next_renew = time.monotonic() + renew_every
                    _, running = self.queue.snapshot()
                    changes = self.share.look(self._fresh_keys(), running, renew=True)
                    self.queue.drop(changes.lost + changes.released, HANDED_OVER)
                    if changes.released:
                        log.info("gave back %d cohort(s) to share them with the other replicas", len(changes.released))
                    if changes.claimed:
                        self._claimed(changes.claimed)
                for key, reason in self.share.asked().items():
                    for r in reason.split(","):
                        self.queue.put({key}, r, git_pull=r in ("http", "github"))
            except StateError as exc:  # the database went away: try again; leases expire meanwhile
                log.warning("leases: %s", exc)

    def _claimed(self, keys: list[str]) -> None:
        """Cohorts this replica just took: reconciled now, a new one ahead of routine work."""
        records = self.state.cohorts()
        new = {k for k in keys if k not in records}
        log.info("took %d cohort(s): %s", len(keys), ", ".join(keys[:10]) + (" ..." if len(keys) > 10 else ""))
        self.queue.put(new, "new")
        self.queue.put(set(keys) - new, "claimed")

    def _after(self, report: RunReport, started: float) -> None:
        assert self.reconciler is not None
        records = self.state.cohorts()
        self.metrics.observe_run(report, time.monotonic() - started,
                                 {cid: r.synced_count for cid, r in records.items()},
                                 {cid: r.last_success_at for cid, r in records.items() if r.last_success_at},
                                 {cid: r.unconfirmed for cid, r in records.items()},
                                 {cid: r.refused for cid, r in records.items()})
        for workspace, client in list(self.reconciler.clients.items()):
            self.metrics.observe_client(client.stats, client.limiter.waits, workspace)
        self.standing.finished(report, self.specs.schedule)

    # --- events -----------------------------------------------------------------------------
    def on_lease_lost(self, holder: str, reason: str) -> None:
        """Alert that this daemon lost a lease (called wherever the loss is found: leases.lease_lost)."""
        self.notifier.emit(lease_lost(holder, reason))

    def _chores(self, now: float) -> None:
        """Resyncs due, and one step of changelog pruning; a full step looks again at the next tick."""
        try:
            due = self.upkeep.resyncs_due(self.settings, self.specs.current, now)
            pruned = self.upkeep.prune_step(self.settings, now)
        except StateError as exc:
            log.error("upkeep: %s", exc)
            due, pruned = set(), 0
        due = self.standing.queue_resyncs(due)
        if due:
            self.queue.put(self.share.mine(self.specs.keys_of(due)), "resync")
        self._chores_at = now + (TICK if pruned == PRUNE_STEP else CHORES)

    def _timers(self) -> None:
        while not self.stop.wait(TICK):
            now = time.time()
            if now >= self._chores_at:
                self._chores(now)
            mine = self.share.mine(self.standing.due_now(now))
            if mine:
                self.queue.put(mine, "timer")

    def _on_files(self, paths: set[Path]) -> None:
        affected = self.specs.affected(paths)
        if affected:
            log.info("%d file(s) changed", len(paths))
            self.specs.mark_dirty()
            keys = self._fresh_keys() if ALL in affected else self.specs.keys_of(affected)
            self.queue.put(self.share.mine(keys), "files")

    def _on_http(self, cohorts: list[str], source: str) -> dict:
        """Queue the work here, or (replicas) ask whichever replica holds each cohort, this one included."""
        self.metrics.triggers.labels(source).inc()
        keys = self.specs.keys_of(set(cohorts)) if cohorts else self._fresh_keys()
        unknown = {sync_key(DEFAULT_WORKSPACE, c) for c in cohorts if not self.specs.keys_of({c})}
        run = self.runs.new(keys | unknown, source)  # written down first: a restart after it loses no trigger
        if not self.share.forward(keys, cohorts, source):
            self.queue.put(keys | unknown, source, git_pull=True)
        return {"accepted": True, "cohorts": cohorts or "all", "queued": work_json(self._pending_work()), "run": run}

    def _pending_work(self) -> Work | None:
        waiting, _ = self.queue.snapshot()
        if not waiting:
            return None
        return Work(set(waiting), reasons=set().union(*waiting.values()))

    # --- HTTP -------------------------------------------------------------------------------
    def _api(self) -> DaemonAPI:
        return DaemonAPI(
            healthy=lambda: not self.stop.is_set(),
            ready=self._ready,
            metrics=self._metrics,
            status=self._status,
            cohort=self._cohort,
            reconcile=self._on_http,
            run=self.runs.outcome,
            token=self.settings.daemon.token,
            webhook_secret=self.settings.daemon.webhook_secret,
        )

    def _ready(self) -> tuple[bool, str]:
        try:
            self.state.schema_version()
        except StateError as exc:
            return False, f"state unreachable: {exc}"
        specs = self.specs.current
        if specs is None:
            return False, "specs not loaded yet"
        held = "" if not self.share.shared else f", {len(self.share.mine(self.specs.keys()))} held here"
        return True, f"{len(specs.specs)} cohort(s) loaded, {len(specs.errors)} spec error(s){held}"

    def _metrics(self) -> tuple[bytes, str]:
        self.metrics.up.set(1 if self._ready()[0] else 0)
        self.metrics.observe_notifier(self.notifier.snapshot())
        try:
            mine = self.share.mine(self.specs.keys())
            _, replicas, _ = self.share.describe(mine)
            self.metrics.observe_holding(self.share.id, mine, len(replicas))
        except StateError as exc:
            log.debug("metrics: leases unreadable: %s", exc)
        return self.metrics.exposition(), CONTENT_TYPE

    def _status(self) -> dict:
        return status_document(self.state.cohorts(), self.standing.last_changes(self.state), self._live())

    def _cohort(self, cohort_id: str) -> dict | None:
        live = self._live()
        status = status_document(self.state.cohorts(), self.standing.last_changes(self.state), live)
        return cohort_document(cohort_id, status, self.state.runs(cohort_id, limit=RUNS_SHOWN), live)

    def _live(self) -> Live:
        """The daemon's own facts for /status (readiness asks the state first)."""
        ready = self._ready()
        rates = self._rates()
        replica, replicas, holders = self.share.describe(self.share.mine(self.specs.keys()))
        default = next((r for r in rates if r[0] == DEFAULT_WORKSPACE), (None, self.settings.moengage.rate_limit, 0))
        return Live(replica=replica, replicas=replicas, holders=holders, now=time.time(), started_at=self._started_at,
                    cohorts_dir=self.settings.cohorts_dir, specs=self.specs.current, ready=ready,
                    rate=default[1], rate_in_use=default[2], rates=rates, interval=self.settings.daemon.interval,
                    pending=self._pending_work(), **self.standing.copy())

    def _rates(self) -> list[tuple[str, RateLimit, int]]:
        """Each workspace this daemon syncs to: its rate limit and the places taken in its window now."""
        clients = self.reconciler.clients if self.reconciler else {}
        return [(name, account.rate_limit, clients[name].limiter.in_use() if name in clients else 0)
                for name, account in self.settings.accounts.items()
                if not self.workspaces or name in self.workspaces]


def run(args: object) -> int:
    try:
        daemon = Daemon(getattr(args, "config", None), getattr(args, "workspace", None))
    except KeyError as exc:
        raise ConfigError(str(exc.args[0]), field="--workspace") from None
    daemon.install_signals()
    return daemon.run()
