"""Watching the cohorts directory: file events, filtered and debounced into cohort ids.

Editors save through swap and temp files, git writes into .git, and a `git pull` touches many
files at once; all of that must make one reconcile of the cohorts affected, not fifty.
"""
from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)
IGNORED = ("*.swp", "*.swx", "*.swo", "*~", ".#*", "#*#", "4913", "*.tmp", "*.part", ".DS_Store", "*.kate-swp")


def ignored(path: Path, root: Path) -> bool:
    """True for editor droppings, hidden folders (.git included) and anything outside root."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return True
    if any(p.startswith(".") for p in parts[:-1]):
        return True
    name = parts[-1] if parts else ""
    return any(fnmatch.fnmatch(name, pattern) for pattern in IGNORED)


class Debouncer:
    """Collects paths; calls `flush(paths)` once no new path arrived for `delay` seconds."""

    def __init__(self, delay: float, flush: Callable[[set[Path]], None]) -> None:
        self.delay, self._flush = delay, flush
        self._paths: set[Path] = set()
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def add(self, path: Path) -> None:
        with self._lock:
            self._paths.add(path)
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.delay, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            paths, self._paths, self._timer = self._paths, set(), None
        if paths:
            self._flush(paths)

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()


class _Handler(FileSystemEventHandler):
    def __init__(self, root: Path, debouncer: Debouncer) -> None:
        self.root, self.debouncer = root, debouncer

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                path = Path(raw if isinstance(raw, str) else raw.decode())
                if not ignored(path, self.root) and not (event.is_directory and event.event_type == "modified"):
                    self.debouncer.add(path)


class Watcher:
    """watchdog on the cohorts directory, recursively; `on_change` gets the settled paths."""

    def __init__(self, root: Path, debounce: float, on_change: Callable[[set[Path]], None]) -> None:
        self.root = root.resolve()
        self.debouncer = Debouncer(debounce, on_change)
        self._observer = Observer()
        self._observer.schedule(_Handler(self.root, self.debouncer), str(self.root), recursive=True)

    def start(self) -> None:
        self._observer.start()

    def stop(self) -> None:
        self.debouncer.cancel()
        self._observer.stop()
        self._observer.join(timeout=5)
