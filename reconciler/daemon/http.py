"""The daemon's HTTP endpoints: health, readiness, metrics, status, the page, the reconcile trigger and its runs.

POST /reconcile needs the bearer token (constant-time compare) or GitHub's
X-Hub-Signature-256 HMAC of the body; without either configured, it refuses everything.
Bodies are capped, and the server listens on loopback unless told otherwise. GET /runs/{id} (a
trigger's outcome) is read like /status, without the token: its id is 128 random bits, and what it
tells (counts, results, errors) /status tells already.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from reconciler.common.errors import ConfigError, StateError
from reconciler.common.httpio import RefusedBody, discard_body, read_body, send, send_json
from reconciler.daemon import page
from reconciler.settings.model import Secret

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20  # bytes: a GitHub push payload is far smaller
RUNS = "/runs/"


class DaemonAPI:
    """What the endpoints need from the daemon, as plain callables."""

    def __init__(
        self, *, healthy: Callable[[], bool], ready: Callable[[], tuple[bool, str]], metrics: Callable[[], tuple[bytes, str]],
        status: Callable[[], dict], reconcile: Callable[[list[str], str], dict], token: Secret, webhook_secret: Secret,
        cohort: Callable[[str], dict | None] = lambda _id: None, run: Callable[[str], dict | None] = lambda _id: None,
    ) -> None:
        self.healthy, self.ready, self.metrics, self.status, self.reconcile = healthy, ready, metrics, status, reconcile
        self.cohort, self.run = cohort, run
        self.token, self.webhook_secret = token, webhook_secret


def authorized(headers: Any, body: bytes, token: Secret, webhook_secret: Secret) -> bool:
    auth = headers.get("Authorization") or ""
    if token and auth.lower().startswith("bearer "):
        return hmac.compare_digest(auth[7:].strip().encode(), token.reveal().encode())
    signature = headers.get("X-Hub-Signature-256") or ""
    if webhook_secret and signature.startswith("sha256="):
        expected = "sha256=" + hmac.new(webhook_secret.reveal().encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature.encode(), expected.encode())
    return False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave in two writes: Nagle would hold the body for the ACK
    server: "DaemonServer"

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("http: " + fmt, *args)

    def do_GET(self) -> None:
        api, url = self.server.api, urlsplit(self.path)
        path = url.path
        if path == "/healthz":
            ok = api.healthy()
            self._send(200 if ok else 503, {"status": "ok" if ok else "unhealthy"})
        elif path == "/readyz":
            ok, why = api.ready()
            self._send(200 if ok else 503, {"status": "ready" if ok else "not ready", "reason": why})
        elif path == "/metrics":
            data, ctype = api.metrics()
            self._raw(200, data, ctype)
        else:
            try:
                self._read(api, path, url.query)
            except StateError as exc:  # the page says why instead of a dropped connection
                self._send(503, {"error": str(exc)})

    def _read(self, api: DaemonAPI, path: str, query: str) -> None:
        """The routes that read the state: /status and the status page's."""
        if path == "/status":
            self._send(200, api.status())
        elif path.startswith(RUNS):
            run = path[len(RUNS):]
            outcome = api.run(run) if run.isalnum() and len(run) <= 40 else None
            self._send(200, outcome) if outcome else self._send(404, {"error": f"no run {run[:40]}", "state": "unknown"})
        elif (answer := page.answer(path, query, api.cohort)) is not None:
            send(self, answer.status, answer.body, answer.content_type, answer.headers)
        else:
            self._send(404, {"error": f"no route {path}"})

    def do_POST(self) -> None:
        api, url = self.server.api, urlsplit(self.path)
        if url.path != "/reconcile":
            discard_body(self)
            self._send(404, {"error": f"no route {url.path}"})
            return
        try:
            body = read_body(self, MAX_BODY)
        except RefusedBody:
            self._send(413, {"error": f"body over {MAX_BODY} bytes"})
            return
        if not authorized(self.headers, body, api.token, api.webhook_secret):
            self._send(401, {"error": "a valid bearer token or X-Hub-Signature-256 is required"},
                       {"WWW-Authenticate": 'Bearer realm="cohortsync"'})
            return
        cohorts = parse_qs(url.query).get("cohort", [])
        source = "github" if self.headers.get("X-GitHub-Event") else "http"
        self._send(202, api.reconcile(cohorts, source))

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        send_json(self, status, payload, headers)

    def _raw(self, status: int, data: bytes, ctype: str) -> None:
        send(self, status, data, ctype)


class DaemonServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, listen: str, api: DaemonAPI) -> None:
        self.api = api
        super().__init__(parse_listen(listen), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"{listen!r} is not host:port", field="daemon.listen")
    return host.strip("[]") or "127.0.0.1", int(port)
