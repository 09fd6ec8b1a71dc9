"""Sending alerts from a background worker, so that no target can slow or fail a reconcile.

`emit` only filters, deduplicates and puts the event on its target's bounded queue (full: the
event is dropped and counted); a worker thread per target delivers them with a per-request
timeout, retried with backoff, so a dead target delays neither a reconcile nor another target. A target's URL holds its tokens: logs and errors name a target by its
index and scheme only (`notify[1] slack`), never by its URL.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable

import requests

from reconciler.common.errors import CohortSyncError
from reconciler.notify.events import Event, events_of, wants
from reconciler.running.reconciling import RunReport
from reconciler.settings.model import AlertingSettings, NotifyTarget

log = logging.getLogger(__name__)
QUEUE_SIZE = 1000  # events waiting for the worker; more are dropped (and counted), never waited for
BACKOFF = 1.0  # seconds before the first retry; doubles
SIGNATURE_HEADER = "X-Cohortsync-Signature"


class DeliveryFailed(CohortSyncError):
    """A target did not take an event; the message names no URL."""


def label(index: int, target: NotifyTarget) -> str:
    """How logs and metrics name a target: its index and scheme, never its URL."""
    return f"notify[{index}] {target.url.reveal().split(':', 1)[0].lower()}"


def signature(secret: str, body: bytes) -> str:
    """The webhook's `X-Cohortsync-Signature`: `sha256=` and the HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def deliver(target: NotifyTarget, event: Event, timeout: float) -> None:
    """Send one event to one target, once; raise DeliveryFailed when it did not take it."""
    url = target.url.reveal()
    if url.lower().startswith(("http://", "https://")):
        _webhook(url, target, event, timeout)
    else:
        _apprise(url, event, timeout)


def _webhook(url: str, target: NotifyTarget, event: Event, timeout: float) -> None:
    body = event.body()
    headers = {"Content-Type": "application/json", "User-Agent": "cohortsync", "X-Cohortsync-Event": event.kind}
    if target.secret:
        headers[SIGNATURE_HEADER] = signature(target.secret.reveal(), body)
    try:
        answer = requests.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:  # its message holds the URL: keep only the class
        raise DeliveryFailed(f"no answer ({type(exc).__name__})") from None
    if answer.status_code >= 300:
        raise DeliveryFailed(f"answered HTTP {answer.status_code}")


def _apprise(url: str, event: Event, timeout: float) -> None:
    import apprise  # only when an Apprise target is used
    logging.getLogger("apprise").setLevel(logging.CRITICAL)  # its messages may carry parts of the URL
    sender = apprise.Apprise()
    joined = f"{url}{'&' if '?' in url else '?'}cto={timeout:g}&rto={timeout:g}"
    if not sender.add(joined):
        raise DeliveryFailed("not a URL Apprise knows (see its list of services)")
    kind = apprise.NotifyType.SUCCESS if event.kind == "recovered" else apprise.NotifyType.FAILURE
    if not sender.notify(title=event.title(), body=event.text(), notify_type=kind):
        raise DeliveryFailed("Apprise reported a failure")


class Notifier:
    """Filters, deduplicates and queues events; one worker thread per target delivers them, so a
    dead target delays no other. Built per process."""

    def __init__(self, targets: tuple[NotifyTarget, ...] | None, settings: AlertingSettings, *,
                 send: Callable[[NotifyTarget, Event, float], None] = deliver,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.targets, self.settings, self._send, self._clock = tuple(targets or ()), settings, send, clock
        self.counts: Counter[tuple[str, str]] = Counter()  # (target label, sent|failed|retried|dropped|deduplicated)
        self._queues: list[queue.Queue[Event | None]] = [queue.Queue(QUEUE_SIZE) for _ in self.targets]
        self._workers: dict[int, threading.Thread] = {}
        self._last: dict[tuple[int, str, str | None], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def observe(self, report: RunReport) -> None:
        """The alerts of a run, queued; returns at once."""
        for event in events_of(report):
            self.emit(event)

    def emit(self, event: Event) -> None:
        for index, target in enumerate(self.targets):
            if wants(target, event) and not self._repeat(index, event):
                self._put(index, event)

    def _repeat(self, index: int, event: Event) -> bool:
        """The same event for the same cohort and target within the window is sent once."""
        key, now = (index, event.kind, event.cohort), self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.settings.window:
                self.counts[label(index, self.targets[index]), "deduplicated"] += 1
                return True
            self._last[key] = now
        return False

    def _put(self, index: int, event: Event) -> None:
        with self._lock:
            if index not in self._workers:
                self._workers[index] = threading.Thread(target=self._work, args=(index,), name=f"notify-{index}",
                                                        daemon=True)
                self._workers[index].start()
        try:
            self._queues[index].put_nowait(event)
        except queue.Full:
            self._count(index, "dropped")
            log.error("%s: %s event for %s dropped: %d events already wait", label(index, self.targets[index]),
                      event.kind, event.cohort or "the daemon", QUEUE_SIZE)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued for at most `timeout` seconds, then stop (the rest is dropped, logged)."""
        deadline = time.monotonic() + timeout
        for index in self._workers:
            try:
                self._queues[index].put(None, timeout=max(0.0, deadline - time.monotonic()))
            except queue.Full:
                pass
        for worker in self._workers.values():
            worker.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        left = sum(q.qsize() for q in self._queues)
        if left:
            log.warning("%d alert(s) not delivered before exit", left)

    def _work(self, index: int) -> None:
        while (event := self._queues[index].get()) is not None:
            if not self._stop.is_set():
                self._deliver(index, event)

    def _deliver(self, index: int, event: Event) -> None:
        """One event to one target: tried 1 + retries times, BACKOFF doubling between tries."""
        target, name = self.targets[index], label(index, self.targets[index])
        for attempt in range(self.settings.retries + 1):
            try:
                self._send(target, event, self.settings.timeout)
            except DeliveryFailed as exc:
                if attempt == self.settings.retries or self._stop.wait(BACKOFF * 2 ** attempt):
                    self._count(index, "failed")
                    log.error("%s: %s event for %s not delivered after %d tries: %s", name, event.kind,
                              event.cohort or "the daemon", attempt + 1, exc)
                    return
                self._count(index, "retried")
                continue
            self._count(index, "sent")
            log.info("%s: %s event for %s sent", name, event.kind, event.cohort or "the daemon")
            return

    def _count(self, index: int, result: str) -> None:
        with self._lock:
            self.counts[label(index, self.targets[index]), result] += 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self.counts)
