"""The daemon's specs: loaded again only when a file changed or a few seconds passed, and what they name.

The worker, the lease loop, the timers and the HTTP threads all ask which cohorts exist; a load
reads every spec file, so they share one load here. Alongside the specs it keeps every state key
the specs and the state name (what a replica shares out), and which files each cohort depends on
(to turn file events into cohorts). A spec error is logged once, when it first appears.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from reconciler.daemon.queueing import ALL
from reconciler.running.selection import Selection, target_keys
from reconciler.settings.model import DEFAULT_WORKSPACE, Settings
from reconciler.specs.cohorts import SpecSet, load_specs
from reconciler.specs.dbt import Manifests
from reconciler.state.keys import split_key
from reconciler.state.store import StateStore

log = logging.getLogger(__name__)
SPECS_TTL = 5.0  # seconds a load is reused unless a file changed


class SpecCache:
    """Thread-safe: the last load of the specs, the keys they name, and the file index."""

    def __init__(self, load: Callable[[], SpecSet], state: StateStore, settings: Settings,
                 workspaces: Iterable[str] = (), stale: Callable[[], bool] = lambda: False) -> None:
        self._load, self.state, self.settings = load, state, settings
        self._stale = stale  # True when something the specs resolve through changed (dbt's manifest)
        self.workspaces = set(workspaces)  # only these (run --workspace); all when empty
        self._lock = threading.Lock()  # guards the fields below
        self._load_lock = threading.Lock()  # one load at a time
        self._specs: SpecSet | None = None
        self._at = 0.0  # monotonic time of the last load
        self._dirty = True
        self._keys: set[str] = set()
        self._index: dict[Path, set[str]] = {}
        self._logged: set[str] = set()

    def rebind(self, load: Callable[[], SpecSet], settings: Settings, stale: Callable[[], bool] = lambda: False) -> None:
        """After a config reload: the next look loads the specs anew with the new settings."""
        with self._lock:
            self._load, self.settings, self._stale, self._dirty = load, settings, stale, True

    def mark_dirty(self) -> None:
        self._dirty = True

    @property
    def current(self) -> SpecSet | None:
        """The last load (None before the first), without loading."""
        with self._lock:
            return self._specs

    def fresh(self) -> SpecSet:
        """The specs, loaded again when a file or dbt's manifest changed, or SPECS_TTL passed."""
        with self._load_lock:
            with self._lock:
                if self._specs is not None and not self._dirty and time.monotonic() - self._at < SPECS_TTL \
                        and not self._stale():
                    return self._specs
                self._dirty = False
            specs = self._load()
            self._log_errors(specs)
            keys = {k for k in target_keys(specs, self.state.cohorts(), self.workspaces)}
            index = self._indexed(specs)
            with self._lock:
                self._specs, self._keys, self._index, self._at = specs, keys, index, time.monotonic()
            return specs

    def keys(self, *, fresh: bool = False) -> set[str]:
        """Every state key the specs and the state name (each spec in each workspace, and each orphan)."""
        if fresh:
            self.fresh()
        with self._lock:
            return set(self._keys)

    def keys_of(self, cohort_ids: set[str]) -> set[str]:
        """The state keys of these cohorts, in each workspace they are synced to (or were, for an orphan)."""
        with self._lock:
            return {k for k in self._keys if split_key(k)[1] in cohort_ids}

    def affected(self, paths: set[Path]) -> set[str]:
        """The cohorts these changed files belong to; {ALL} for a new spec or one never loaded."""
        root = self.settings.cohorts_dir.resolve()
        with self._lock:
            affected: set[str] = set()
            for path in paths:
                if path in self._index:
                    affected |= self._index[path]
                elif path.suffix.lower() in (".yaml", ".yml") or path == root:
                    return {ALL}
            return affected

    def schedule(self, cohort_id: str) -> float:
        """Seconds between a cohort's timers: its spec's schedule, else the daemon's interval."""
        specs = self.current
        spec = specs.specs.get(cohort_id) if specs else None
        return (spec.schedule if spec and spec.schedule else None) or self.settings.daemon.interval

    def _log_errors(self, specs: SpecSet) -> None:
        errors = {str(err) for err in specs.errors}
        for err in sorted(errors - self._logged):
            log.error("spec %s", err)
        self._logged = errors

    def _indexed(self, specs: SpecSet) -> dict[Path, set[str]]:
        """Which files each cohort depends on; deleted specs still map to their cohort (an orphan)."""
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
            for path, ids in self._index.items():
                if path not in index and path.suffix.lower() in (".yaml", ".yml"):
                    index[path] = ids
        return index


def workspaces_in_use(settings: Settings, chosen: list[str]) -> list[str]:
    """The workspaces the specs on disk sync to, within `chosen` when given (default when none loads):
    the daemon needs their credentials."""
    for name in chosen:
        settings.account(name)  # a KeyError naming the known ones
    specs = load_specs(settings.cohorts_dir, settings.connections, settings.accounts,
                       manifests=Manifests(settings.dbt.manifest))
    return Selection.of(workspaces=chosen).workspaces_of(specs) or (chosen or [DEFAULT_WORKSPACE])
