"""`cohortsync trigger [--wait]`: ask a running daemon to reconcile now, and wait for the outcome.

`trigger` is the client the CLI, the dbt command and the Airflow and Dagster integrations call: it
imports nothing but `requests` at the top, so an orchestrator's environment can use it without
cohortsync's own dependencies. Waiting polls GET /runs/{id} (any replica answers it) until the run
is terminal or the timeout passes: then the outcome is `unknown`, never a hang.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field

import requests

from reconciler.common.errors import CohortSyncError

TERMINAL = ("converged", "failed", "unknown")
POLL = 1.0  # seconds between looks at the run, at first; doubles up to POLL_MAX
POLL_MAX = 5.0
REQUEST_TIMEOUT = 10.0  # seconds for one request to the daemon


@dataclass
class RunOutcome:
    """A trigger's run as the daemon last told it: `state` is queued, running, converged, failed or unknown."""

    run: str | None
    state: str
    cohorts: list[dict] = field(default_factory=list)
    accepted: dict = field(default_factory=dict)  # POST /reconcile's answer
    reason: str | None = None  # why it is unknown, when this side decided it (the wait timed out)

    @property
    def ok(self) -> bool:
        return self.state == "converged"

    def total(self, key: str) -> int:
        return sum(int(c.get(key) or 0) for c in self.cohorts)

    def as_json(self) -> dict:
        return {"run": self.run, "state": self.state, "ok": self.ok, "reason": self.reason, "cohorts": self.cohorts,
                **{k: self.total(k) for k in ("adds", "removes", "unconfirmed", "refused")}}

    def text(self) -> str:
        lines = [f"run {self.run}: {self.state}" + (f" ({self.reason})" if self.reason else "")]
        for c in self.cohorts:
            where = "" if c.get("workspace") in (None, "default") else f" [{c['workspace']}]"
            lines.append(f"  {c['cohort']}{where}: {c['state']} ({c.get('result') or '-'}) +{c.get('adds', 0)} "
                         f"-{c.get('removes', 0)} unconfirmed {c.get('unconfirmed', 0)} refused {c.get('refused', 0)}"
                         + (f": {c['error']}" if c.get("error") else ""))
        lines.append(f"total: +{self.total('adds')} -{self.total('removes')} unconfirmed {self.total('unconfirmed')}"
                     f" refused {self.total('refused')}")
        return "\n".join(lines)


def _call(method: str, url: str, token: str, timeout: float, **kwargs: object) -> requests.Response:
    try:
        return requests.request(method, url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout,
                                **kwargs)  # type: ignore[arg-type]
    except requests.RequestException as exc:
        raise CohortSyncError(f"cannot reach the daemon at {url}: {type(exc).__name__}") from exc


def start(url: str, token: str, cohorts: list[str] | tuple[str, ...] = (), timeout: float = REQUEST_TIMEOUT) -> dict:
    """POST /reconcile: the daemon's answer (`run` is the id to wait on)."""
    if not token:
        raise CohortSyncError("no token: set COHORTSYNC_TOKEN to the daemon's daemon.token")
    resp = _call("POST", f"{url.rstrip('/')}/reconcile", token, timeout, params=[("cohort", c) for c in cohorts])
    if resp.status_code != 202:
        raise CohortSyncError(f"the daemon at {url} answered {resp.status_code}: {resp.text[:200]}")
    return resp.json()


def look(url: str, token: str, run: str, timeout: float = REQUEST_TIMEOUT) -> RunOutcome:
    """GET /runs/{id} once: a 404 is `unknown` (the daemon keeps no such run)."""
    resp = _call("GET", f"{url.rstrip('/')}/runs/{run}", token, timeout)
    if resp.status_code == 404:
        return RunOutcome(run, "unknown", reason="the daemon keeps no such run")
    if resp.status_code != 200:
        raise CohortSyncError(f"the daemon at {url} answered {resp.status_code}: {resp.text[:200]}")
    body = resp.json()
    return RunOutcome(run, body["state"], body.get("cohorts", []))


def wait(url: str, token: str, run: str, timeout: float, poll: float = POLL) -> RunOutcome:
    """Poll until the run is terminal; `unknown` once `timeout` seconds passed. A daemon that does not
    answer for a while (a restart) is asked again until then."""
    deadline, last, error = time.monotonic() + timeout, RunOutcome(run, "queued"), ""
    while True:
        try:
            last, error = look(url, token, run), ""
        except CohortSyncError as exc:
            error = str(exc)
        if last.state in TERMINAL:
            return last
        left = deadline - time.monotonic()
        if left <= 0:
            why = f"still {last.state} after {timeout:g}s" + (f"; last error: {error}" if error else "")
            return RunOutcome(run, "unknown", last.cohorts, reason=why)
        time.sleep(min(poll, left))
        poll = min(poll * 2, POLL_MAX)


def trigger(url: str, token: str, cohorts: list[str] | tuple[str, ...] = (), wait_for: bool = True,
            timeout: float = 3600.0, poll: float = POLL) -> RunOutcome:
    """Trigger a reconcile of `cohorts` (all when empty) and, with `wait_for`, wait up to `timeout` seconds
    for its outcome. Raises CohortSyncError when the daemon cannot be reached or refuses the trigger."""
    accepted = start(url, token, cohorts, timeout=min(REQUEST_TIMEOUT, timeout))
    run = accepted.get("run")
    if not wait_for:
        return RunOutcome(run, "queued", accepted=accepted)
    if not run:
        return RunOutcome(None, "unknown", accepted=accepted, reason="the daemon gives no run id (older than this client)")
    outcome = wait(url, token, run, timeout, poll)
    outcome.accepted = accepted
    return outcome


def run(args: argparse.Namespace) -> int:
    from reconciler.settings.config import load_settings  # here: the client above needs only requests

    settings = load_settings(args.config)
    url = (args.url or os.environ.get("COHORTSYNC_URL") or f"http://{settings.daemon.listen}").rstrip("/")
    token = settings.daemon.token.reveal()
    if not args.wait:
        body = start(url, token, args.cohort, timeout=args.timeout or REQUEST_TIMEOUT)
        if args.format == "json":
            print(json.dumps(body, sort_keys=True))
        else:
            print(f"accepted: {json.dumps(body.get('cohorts'))} will be reconciled (run {body.get('run')})")
        return 0
    outcome = trigger(url, token, args.cohort, wait_for=True, timeout=args.timeout or 3600.0)
    print(json.dumps(outcome.as_json(), sort_keys=True) if args.format == "json" else outcome.text())
    return 0 if outcome.ok else 1
