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
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

from reconciler.moengage.client import MoEngageClient
from reconciler.settings.config import load_settings, require_credentials
from reconciler.daemon.http import DaemonAPI, DaemonServer
from reconciler.daemon.metrics import CONTENT_TYPE, Metrics
from reconciler.daemon.overview import Live, Verdict, cohort_document, status_document, work_json
from reconciler.daemon.queueing import ALL, Work
from reconciler.daemon.scheduling import Chunk, Scheduler
from reconciler.daemon.sharing import sharing_for
from reconciler.daemon.upkeep import PRUNE_STEP, Upkeep
from reconciler.daemon.watching import Watcher
from reconciler.common.errors import CohortSyncError, ConfigError, StateError
from reconciler.common.statuses import Status
from reconciler.notify.events import daemon_stopped, lease_lost
from reconciler.notify.sending import Notifier
from reconciler.running.reconciling import Reconciler, RunReport, target_keys, workspaces_of
from reconciler.state import leases
from reconciler.settings.model import DEFAULT_WORKSPACE, Settings
from reconciler.specs.cohorts import SpecSet, load_specs
from reconciler.state.store import RunRecord, StateStore, split_key, sync_key

log = logging.getLogger(__name__)
JITTER = 0.1  # timers fire within ±10% of a cohort's schedule
TICK = 0.5  # seconds between looks at the timers and the stop flag
RUNS_SHOWN = 200  # runs of one cohort on its page and in its charts
CHANGES_TTL = 30.0  # seconds a /status answer may reuse each cohort's last change (read again after every run here)
CHORES = 5.0  # seconds between looks at resyncs due and the changelog's retention
SPECS_TTL = 5.0  # seconds the worker and the lease loop reuse the loaded specs unless a file changed
QUIET = (Status.UNCHANGED, Status.CONVERGED, Status.SUSPENDED)  # results logged at DEBUG when nothing was sent
HANDED_OVER = "handed over"  # a pass's word for a cohort another replica (or an apply) took


class Daemon:
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
        self._lock = threading.Lock()
        self._specs: SpecSet | None = None
        self._specs_at = 0.0  # monotonic time of the last load
        self._specs_dirty = True
        self._load_lock = threading.Lock()
        self._keys: set[str] = set()  # every state key the specs and the state name
        self._logged_errors: set[str] = set()
        self._index: dict[Path, set[str]] = {}
        self._due: dict[str, float] = {}
        self._last_run: dict = {}
        self._verdicts: dict[str, Verdict] = {}  # each cohort's latest result here: the state keeps no spec errors
        self._running: tuple[Work, float] | None = None  # what the worker reconciles now, since when
        self._started_at = time.time()
        self._runs_done = 0  # grows after each run: a cached last change read before it is stale
        self._changes: tuple[float, int, dict[str, RunRecord]] | None = None  # (monotonic time, _runs_done, read)
        self.notifier = Notifier(self.settings.notify, self.settings.alerting)
        self.upkeep = Upkeep(self.state)
        self._resync: set[str] = set()  # cohorts due for a resync, queued
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
            watcher = self._watch()
            timer = threading.Thread(target=self._timers, name="timers", daemon=True)
            timer.start()
            if self.share.shared:
                threading.Thread(target=self._leases, name="leases", daemon=True).start()
            else:
                self.queue.put(self._keys, "startup")
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
        self.reconciler = Reconciler(self.settings, self.state, stop=self.stop)
        self.reconciler.fences = self.share.fence

    @property
    def client(self) -> MoEngageClient | None:
        """The default workspace's client, once it sent something."""
        return self.reconciler.client if self.reconciler else None

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
                self._specs_dirty = True
                self.queue.put(self.share.mine(self._fresh_specs_keys()), "reload")
            chunk = self.queue.take(timeout=TICK)
            if chunk is not None:
                self._reconcile(chunk)

    def _reconcile(self, chunk: Chunk) -> None:
        """A few cohorts this replica holds: marked busy, reconciled, each logged only if it changed or failed."""
        assert self.reconciler is not None
        if chunk.git_pull and self.settings.daemon.git_pull:
            git_pull(self.settings.cohorts_dir)
            self._specs_dirty = True
        started = time.monotonic()
        specs = self._fresh_specs()
        keys = [k for k in chunk.keys if self.share.begin(k)]
        self.queue.drop(set(chunk.keys) - set(keys), HANDED_OVER)
        if not keys:
            self.queue.done({})
            return
        log.debug("reconciling %s (%s)", ", ".join(keys), ", ".join(sorted(chunk.reasons)))
        with self._lock:
            self._running = (Work(set(keys), reasons=set(chunk.reasons)), time.time())
            resync, self._resync = self._resync, set()
        try:
            report = self.reconciler.apply(specs, keys=set(keys), trigger=",".join(sorted(chunk.reasons))[:32],
                                           yield_to=self.queue.urgent if chunk.routine else None,
                                           workspaces=self.workspaces)
            self.notifier.observe(report)
            resync_keys = {k for k in keys if split_key(k)[1] in resync}
            if resync_keys:
                log.info("resyncing %s", ", ".join(sorted(resync_keys)))
                resynced = self.reconciler.apply(specs, sorted(resync), trigger="resync", workspaces=self.workspaces,
                                                 resync=True, keys=resync_keys)
                self.notifier.observe(resynced)
                report.outcomes += resynced.outcomes
        except CohortSyncError as exc:  # the state database went away: the timers try again
            log.error("reconcile of %s failed: %s", ", ".join(keys), exc)
            self.queue.done({k: "failed" for k in keys})
            return
        finally:
            for key in keys:
                self.share.end(key)
            with self._lock:
                self._running = None
        for o in report.outcomes:
            if o.result == Status.CONVERGED and (o.sent_adds or o.sent_removes):
                continue  # applying.py said so already, with the counts
            quiet = o.result in QUIET and not (o.sent_adds or o.sent_removes or o.requests)
            level = (logging.DEBUG if quiet else logging.INFO if o.ok or o.yielded
                     else logging.WARNING if o.result == Status.INTERRUPTED else logging.ERROR)
            log.log(level, "cohort %s: %s (+%d -%d)%s", o.plan.key, o.result, o.sent_adds, o.sent_removes,
                    f": {o.error or o.plan.reason}" if (o.error or not o.ok) else "")
        done = {o.plan.key: str(o.result) for o in report.outcomes if not o.yielded}
        left = [k for k in keys if k not in done]
        yielded = {o.plan.key for o in report.outcomes if o.yielded}
        gave_way = chunk.routine and self.queue.urgent.is_set()  # the cohorts not started wait for their turn
        again = [k for k in left if k in self._keys and (k in yielded or gave_way) and not self.stop.is_set()]
        self.queue.requeue(again, set(chunk.reasons))
        self.queue.done({**done, **{k: "not started" for k in left if k not in again}})
        self._after(report, started)

    def _fresh_specs(self) -> SpecSet:
        """The specs, loaded again when a file changed or SPECS_TTL passed; every key they and the state name."""
        with self._load_lock:
            if self._specs is not None and not self._specs_dirty and time.monotonic() - self._specs_at < SPECS_TTL:
                return self._specs
            assert self.reconciler is not None
            self._specs_dirty = False
            specs = self.reconciler.load()
            errors = {str(err) for err in specs.errors}
            for err in sorted(errors - self._logged_errors):
                log.error("spec %s", err)
            self._logged_errors = errors
            self._index_specs(specs)
            keys = {k for k in target_keys(specs, self.state.cohorts(), self.settings.accounts)
                    if not self.workspaces or split_key(k)[0] in self.workspaces}  # run --workspace
            with self._lock:
                self._keys, self._specs_at = keys, time.monotonic()
                self._verdicts = {k: v for k, v in self._verdicts.items() if k in keys or k in specs.broken_ids}
            return specs

    def _leases(self) -> None:
        """PostgreSQL: renew every third of the lease time; claim or give back; pick up forwarded triggers."""
        renew_every, next_renew = self.settings.daemon.lease_time / 3, 0.0
        while not self.stop.wait(0 if next_renew == 0.0 else TICK):
            try:
                renew = time.monotonic() >= next_renew
                if renew:
                    next_renew = time.monotonic() + renew_every
                    self._fresh_specs()
                    with self._lock:
                        keys = set(self._keys)
                    _, running = self.queue.snapshot()
                    changes = self.share.look(keys, running, renew=True)
                    self.queue.drop(changes.lost + changes.released, HANDED_OVER)
                    if changes.released:
                        log.info("gave back %d cohort(s) to share them with the other replicas", len(changes.released))
                    if changes.claimed:
                        self._claimed(changes.claimed)
                for key, reason in self.share.asked().items():
                    reasons = reason.split(",")
                    for r in reasons:
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
                                 {cid: r.unconfirmed for cid, r in records.items()})
        for workspace, client in list(self.reconciler.clients.items()):
            self.metrics.observe_client(client.stats, client.limiter.waits, workspace)
        now = time.time()
        with self._lock:
            self._runs_done += 1
            for o in report.outcomes:
                self._due[o.plan.key] = now + self._schedule(o.plan.id) * random.uniform(1 - JITTER, 1 + JITTER)
                self._verdicts[o.plan.key] = Verdict(o.result, o.error or o.plan.reason, now)
            self._last_run = {"run_id": report.run_id, "finished_at": now, "ok": report.ok, "stopped": report.stopped}

    def _schedule(self, cohort_id: str) -> float:
        spec = self._specs.specs.get(cohort_id) if self._specs else None
        return (spec.schedule if spec and spec.schedule else None) or self.settings.daemon.interval

    # --- triggers -------------------------------------------------------------------------
    def on_lease_lost(self, holder: str, reason: str) -> None:
        """Alert that this daemon lost its writer lease (called by the lease keeper)."""
        self.notifier.emit(lease_lost(holder, reason))

    def _chores(self, now: float) -> None:
        """Resyncs due, and one step of changelog pruning; a full step looks again at the next tick."""
        try:
            due = self.upkeep.resyncs_due(self.settings, self._specs, now)
            pruned = self.upkeep.prune_step(self.settings, now)
        except StateError as exc:
            log.error("upkeep: %s", exc)
            due, pruned = set(), 0
        with self._lock:
            due -= self._resync
            self._resync |= due
        if due:
            self.queue.put(self.share.mine(self._keys_of(due)), "resync")
        self._chores_at = now + (TICK if pruned == PRUNE_STEP else CHORES)

    def _timers(self) -> None:
        while not self.stop.wait(TICK):
            now = time.time()
            if now >= self._chores_at:
                self._chores(now)
            with self._lock:
                due = {key for key, at in self._due.items() if at <= now}
                for key in due:
                    del self._due[key]
            mine = self.share.mine(due)
            if mine:
                self.queue.put(mine, "timer")

    def _watch(self) -> Watcher:
        watcher = Watcher(self.settings.cohorts_dir, self.settings.daemon.debounce, self._on_files)
        watcher.start()
        return watcher

    def _on_files(self, paths: set[Path]) -> None:
        with self._lock:
            affected: set[str] = set()
            for path in paths:
                if path in self._index:
                    affected |= self._index[path]
                elif path.suffix.lower() in (".yaml", ".yml") or path == self.settings.cohorts_dir.resolve():
                    affected = {ALL}  # a new spec, or one never loaded: look at everything
                    break
        if affected:
            log.info("%d file(s) changed", len(paths))
            self._specs_dirty = True
            keys = self._fresh_specs_keys() if ALL in affected else self._keys_of(affected)
            self.queue.put(self.share.mine(keys), "files")

    def _fresh_specs_keys(self) -> set[str]:
        self._fresh_specs()
        with self._lock:
            return set(self._keys)

    def _keys_of(self, cohort_ids: set[str]) -> set[str]:
        """The state keys of these cohorts, in each workspace they are synced to (or were, for an orphan)."""
        with self._lock:
            return {k for k in self._keys if split_key(k)[1] in cohort_ids}

    def _index_specs(self, specs: SpecSet) -> None:
        """Which files each cohort depends on, for mapping file events to cohorts."""
        root = self.settings.cohorts_dir.resolve()
        index: dict[Path, set[str]] = {}
        for spec in specs.specs.values():
            index.setdefault(root / spec.file, set()).add(spec.id)
            if spec.source.path is not None:
                index.setdefault(spec.source.path, set()).add(spec.id)
        for file, cid in specs.broken.items():
            if cid:
                index.setdefault(root / file, set()).add(cid)
        with self._lock:
            for path, ids in self._index.items():  # deleted specs still map to their cohort: an orphan
                if path not in index and path.suffix.lower() in (".yaml", ".yml"):
                    index[path] = ids
            self._index, self._specs = index, specs

    def _on_http(self, cohorts: list[str], source: str) -> dict:
        """Queue the work here, or (replicas) ask whichever replica holds each cohort, this one included."""
        self.metrics.triggers.labels(source).inc()
        keys = self._keys_of(set(cohorts)) if cohorts else self._fresh_specs_keys()
        if not self.share.forward(keys, cohorts, source):
            self.queue.put(keys | {sync_key(DEFAULT_WORKSPACE, c) for c in cohorts if not self._keys_of({c})},
                           source, git_pull=True)
        return {"accepted": True, "cohorts": cohorts or "all", "queued": work_json(self._pending_work())}

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
            token=self.settings.daemon.token,
            webhook_secret=self.settings.daemon.webhook_secret,
        )

    def _ready(self) -> tuple[bool, str]:
        try:
            self.state.schema_version()
        except StateError as exc:
            return False, f"state unreachable: {exc}"
        if self._specs is None:
            return False, "specs not loaded yet"
        held = "" if not self.share.shared else f", {len(self.share.mine(self._keys))} held here"
        return True, f"{len(self._specs.specs)} cohort(s) loaded, {len(self._specs.errors)} spec error(s){held}"

    def _metrics(self) -> tuple[bytes, str]:
        self.metrics.up.set(1 if self._ready()[0] else 0)
        self.metrics.observe_notifier(self.notifier.snapshot())
        try:
            me, replicas, _ = self.share.describe(self.share.mine(self._keys))
            self.metrics.observe_holding(self.share.id, self.share.mine(self._keys), len(replicas))
        except StateError as exc:
            log.debug("metrics: leases unreadable: %s", exc)
        return self.metrics.exposition(), CONTENT_TYPE

    def _status(self) -> dict:
        return status_document(self.state.cohorts(), self._last_changes(), self._live())

    def _cohort(self, cohort_id: str) -> dict | None:
        live = self._live()
        status = status_document(self.state.cohorts(), self._last_changes(), live)
        return cohort_document(cohort_id, status, self.state.runs(cohort_id, limit=RUNS_SHOWN), live)

    def _last_changes(self) -> dict[str, RunRecord]:
        """Each cohort's last change, read again only after a run or CHANGES_TTL: a page polls every few seconds,
        and the query groups the whole runs table."""
        with self._lock:
            cached, runs_done = self._changes, self._runs_done
        if cached is None or cached[1] != runs_done or time.monotonic() - cached[0] > CHANGES_TTL:
            cached = (time.monotonic(), runs_done, self.state.last_changes())
            with self._lock:
                self._changes = cached
        return cached[2]

    def _live(self) -> Live:
        """The daemon's own facts for /status, copied under the lock (readiness asks the state first)."""
        ready = self._ready()
        limiter = self.client.limiter if self.client else None
        replica, replicas, holders = self.share.describe(self.share.mine(self._keys))
        pending = self._pending_work()
        with self._lock:
            running, since = self._running or (None, None)
            return Live(replica=replica, replicas=replicas, holders=holders, now=time.time(), started_at=self._started_at, cohorts_dir=self.settings.cohorts_dir,
                        specs=self._specs, ready=ready, rate=self.settings.moengage.rate_limit,
                        interval=self.settings.daemon.interval,
                        rate_in_use=limiter.in_use() if limiter else 0, due=dict(self._due),
                        verdicts=dict(self._verdicts), last_run=dict(self._last_run), pending=pending,
                        running=running, running_since=since)


def workspaces_in_use(settings: Settings, chosen: list[str]) -> list[str]:
    """The workspaces the specs on disk sync to, within `chosen` when given (default when none loads):
    the daemon needs their credentials."""
    for name in chosen:
        settings.account(name)  # a KeyError naming the known ones
    specs = load_specs(settings.cohorts_dir, settings.connections, settings.accounts)
    return workspaces_of(specs, (), chosen) or (chosen or [DEFAULT_WORKSPACE])


def git_pull(cohorts_dir: Path) -> None:
    """`git pull --ff-only` in the repository holding the cohorts; a failure is logged, not fatal."""
    try:
        top = subprocess.run(["git", "-C", str(cohorts_dir), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=30, check=True).stdout.strip()
        out = subprocess.run(["git", "-C", top, "pull", "--ff-only", "--quiet"], capture_output=True, text=True,
                             timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        log.error("git pull failed: %s", exc)
        return
    if out.returncode != 0:
        log.error("git pull --ff-only failed: %s", (out.stderr or out.stdout).strip()[:500])
    else:
        log.info("git pull --ff-only done in %s", top)


def run(args: object) -> int:
    try:
        daemon = Daemon(getattr(args, "config", None), getattr(args, "workspace", None))
    except KeyError as exc:
        raise ConfigError(str(exc.args[0]), field="--workspace") from None
    daemon.install_signals()
    return daemon.run()
