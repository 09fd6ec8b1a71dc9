"""The emulator's HTTP side: MoEngage's checks and answers, plus seeded fault injection.

Order of checks, as a gateway in front of the real service would apply them: latency, a
dropped connection, auth (401), a suspended account (403), the rate window (429), the
content type (415), the body size (413), JSON and fields (400), injected 500s and 429s, the
segment cap (429), then the segment change. Only accepted requests count in the rate window.
A missing MOE-APPKEY is a 400, as MoEngage's API description says (a mismatch is a 401); any other
method or path answers in the documented error shape, never with an HTML page. The user lookup
that `check-users` asks lives in lookup.py, on a rate window of its own.
"""
from __future__ import annotations

import hmac
import json
import logging
import math
import random
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from reconciler.common.actions import Action
from reconciler.emulator import lookup
from reconciler.emulator.store import SegmentStore
from reconciler.emulator.validation import (MISSING, Reply, basic_credentials, lookup_identifiers, refused_member,
                                            validate_body)
from reconciler.common.httpio import RefusedBody, discard_body, read_body, send_json
from reconciler.specs.rules import DEFAULT_NAME_RULE, MAX_ACTIVE_SEGMENTS, SEGMENT_CAP_MESSAGE
from reconciler.settings.model import NAME_RULES, MoEngageSettings, RateLimit

log = logging.getLogger(__name__)
API_PATH = "/v1/integrations/cohortsync"
API_PATHS = (API_PATH, lookup.LOOKUP_PATH)  # MoEngage's: POST only


@dataclass
class EmulatorConfig:
    """What the emulator accepts and which faults it injects; changeable at run time."""

    workspace_id: str | None = None  # when set with api_key, only these credentials pass (with `credentials`)
    api_key: str | None = None
    credentials: dict[str, str] = field(default_factory=dict)  # more workspaces: workspace id -> Data API key
    rate_limit: RateLimit = MoEngageSettings.rate_limit  # the real API's limits, as the client's defaults declare them
    max_payload_bytes: int = MoEngageSettings.max_payload_bytes
    lookup_rate_limit: RateLimit = MoEngageSettings.lookup_rate_limit  # the Get User API's own budget
    name_rule: str = DEFAULT_NAME_RULE  # MoEngage's docs disagree: as the client's moengage.name_rule
    max_segments: int = MAX_ACTIVE_SEGMENTS  # active custom segments a workspace holds
    suspended: bool = False  # 403 for every request
    error_rate: float = 0.0  # fraction answered 500
    throttle_rate: float = 0.0  # fraction answered 429 with Retry-After
    drop_rate: float = 0.0  # fraction whose connection is closed with no answer
    lose_answer_rate: float = 0.0  # fraction applied, then the connection closed with no answer
    latency: float = 0.0  # seconds added to every API request
    answer_latency: float = 0.0  # seconds between applying a request and answering it
    retry_after: float = 1.0  # seconds, sent with injected 429s
    refuse_uids: frozenset[str] = frozenset()  # members answered 400 naming the member (a row-level error)
    seed: int | None = None

    def accounts(self) -> dict[str, str]:
        """The workspaces whose credentials pass; empty: any Basic credentials whose user is MOE-APPKEY."""
        one = {self.workspace_id: self.api_key} if self.workspace_id is not None and self.api_key is not None else {}
        return {**one, **self.credentials}

    def update(self, changes: dict) -> None:
        for key, value in changes.items():
            if key in ("rate_limit", "lookup_rate_limit"):
                value = RateLimit.parse(value)
            elif key == "refuse_uids":
                value = frozenset(map(str, value))
            elif key == "name_rule" and value not in NAME_RULES:
                raise ValueError(f"name_rule must be one of {', '.join(NAME_RULES)}")
            elif not hasattr(self, key) or key == "seed":
                raise ValueError(f"unknown setting {key!r}")
            setattr(self, key, value)


class Emulator:
    """State shared by the handler threads."""

    def __init__(self, config: EmulatorConfig, store: SegmentStore, users: set[str] | None = None) -> None:
        self.config, self.store, self.users = config, store, users
        self.rng = random.Random(config.seed)
        self.lock = threading.Lock()
        self.windows: dict[str, deque[float]] = {}  # per workspace: MoEngage limits each account on its own
        self.lookups: dict[str, lookup.Window] = {}  # per workspace too, apart from the cohort syncs
        self.creating = threading.Lock()  # the segment cap is checked and a segment created as one step
        self.requests: list[dict] = []

    def roll(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self.lock:
            return self.rng.random() < rate

    def admit(self, workspace: str = "") -> float | None:
        """Count a request in its workspace's sliding window; seconds to wait when the window is full."""
        limit = self.config.rate_limit
        with self.lock:
            window = self.windows.setdefault(workspace, deque())
            now = time.monotonic()
            while window and window[0] <= now - limit.window:
                window.popleft()
            if len(window) >= limit.requests:
                return window[0] + limit.window - now
            window.append(now)
            return None

    def record(self, **entry: object) -> None:
        with self.lock:
            self.requests.append({"time": time.time(), **entry})

    def reset(self) -> None:
        self.store.reset()
        with self.lock:
            self.windows.clear()
            self.lookups.clear()
            self.requests.clear()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave in two writes: Nagle would hold the body for the ACK
    server: "EmulatorServer"

    def log_message(self, fmt: str, *args: object) -> None:  # quiet: the request log is at /_emulator/requests
        log.debug("%s " + fmt, self.address_string(), *args)

    # --- routing -------------------------------------------------------------------------
    def do_POST(self) -> None:
        path = urlsplit(self.path).path
        if path == API_PATH:
            self._api()
        elif path == lookup.LOOKUP_PATH:
            self._lookup()
        elif path == "/_emulator/reset":
            self.server.emulator.reset()
            self._json(200, {"status": "reset"})
        elif path == "/_emulator/config":
            self._configure()
        else:
            discard_body(self)
            self._error(Reply(404, f"No such endpoint: POST {path}", "path", "NotFound"))

    def do_PUT(self) -> None:
        self._edit(Action.ADD)

    def do_DELETE(self) -> None:
        self._edit(Action.REMOVE)

    def _edit(self, action: str) -> None:
        """A hand edit in the dashboard: PUT adds, DELETE removes the uids of a JSON list (`?workspace=`
        names the workspace), with no API request logged and no rule checked (drift only a resync repairs)."""
        path = unquote(urlsplit(self.path).path)
        cohort_id = path[len("/_emulator/cohorts/"):-len("/members")]
        if not (path.startswith("/_emulator/cohorts/") and path.endswith("/members")):
            discard_body(self)
            self.send_error(501 if path in API_PATHS else 404)  # the API takes POST only: 405 in its shape
            return
        try:
            uids = json.loads(self._read_body(1 << 24) or b"[]")
            if not isinstance(uids, list) or not all(isinstance(u, str) for u in uids):
                raise ValueError("the body must be a JSON list of uids")
        except (ValueError, Reply) as exc:
            self._json(400, {"error": str(exc)})
            return
        workspace = (parse_qs(urlsplit(self.path).query).get("workspace") or [None])[0]
        try:
            edited = self.server.emulator.store.edit(cohort_id, action, uids, workspace)
        except ValueError as exc:  # the cohort is a segment in several workspaces: name one
            self._json(409, {"error": str(exc)})
            return
        if not edited:
            self._json(404, {"error": "no such cohort"})
            return
        self._json(200, {"status": "ok", "edited": len(uids)})

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        emu = self.server.emulator
        workspace = (parse_qs(urlsplit(self.path).query).get("workspace") or [None])[0]
        if path == "/_emulator/cohorts":
            self._json(200, {"cohorts": emu.store.segments(workspace)})
        elif path.startswith("/_emulator/cohorts/"):
            try:
                seg = emu.store.segment(path[len("/_emulator/cohorts/"):], workspace)
            except ValueError as exc:
                self._json(409, {"error": str(exc)})
                return
            self._json(200 if seg else 404, seg or {"error": "no such cohort"})
        elif path == "/_emulator/refused":
            with emu.lock:
                refused = [u for r in emu.requests for u in r.get("refused", ())]
            self._json(200, {"refuse_uids": sorted(emu.config.refuse_uids), "refused_requests": len(refused),
                             "refused": sorted(set(refused))})
        elif path == "/_emulator/requests":
            with emu.lock:
                self._json(200, {"requests": list(emu.requests)})
        elif path == "/_emulator/healthz":
            self._json(200, {"status": "ok"})
        else:
            self.send_error(501 if path in API_PATHS else 404)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own answers (an unknown method, a bad request line) in MoEngage's error shape, not HTML.

        Any method but POST on an API path is a 405 naming the one allowed."""
        path = urlsplit(getattr(self, "path", "") or "").path
        headers = {}
        if code == 501 and path in API_PATHS:
            code, message, headers = 405, f"Method {self.command} not allowed on {path}: use POST", {"Allow": "POST"}
        elif code == 404:
            message = f"No such endpoint: {self.command} {path}"
        self.close_connection = True  # whatever body came with it is not read
        reason = self.responses.get(code, ("Error",))[0]
        reply = Reply(code, message or reason, "method" if code == 405 else "", reason.replace(" ", ""), headers)
        try:
            self._error(reply)
        except OSError:
            pass

    # --- the API ----------------------------------------------------------------------------
    def _api(self) -> None:
        emu, cfg = self.server.emulator, self.server.emulator.config
        started = time.time()
        if cfg.latency > 0:
            time.sleep(cfg.latency)
        drop = emu.roll(cfg.drop_rate)
        drop_after = (drop and emu.roll(0.5)) or emu.roll(cfg.lose_answer_rate)
        entry: dict = {"workspace": None, "action": None, "cohort_id": None, "members": 0, "bytes": 0}
        try:
            if drop and not drop_after:
                raise ConnectionAbortedError
            body = self._checked_body(entry)
            self._apply(body, entry["workspace"])
            if cfg.answer_latency > 0:
                time.sleep(cfg.answer_latency)
            if drop_after:
                raise ConnectionAbortedError
            emu.record(**entry, status=200, elapsed=time.time() - started)
            self._json(200, {"status": "success", "message": "Your request has been accepted and will be processed soon."})
        except Reply as reply:
            emu.record(**entry, status=reply.status, elapsed=time.time() - started)
            self._error(reply)
        except ConnectionAbortedError:
            emu.record(**entry, status="dropped", elapsed=time.time() - started)
            self._drop()

    def _checked_body(self, entry: dict) -> dict:
        emu, cfg = self.server.emulator, self.server.emulator.config
        entry["workspace"] = workspace = self._check_auth()
        if cfg.suspended:
            discard_body(self)
            raise Reply(403, "Your account is suspended or blocked", "", "Forbidden")
        wait = emu.admit(workspace)
        if wait is not None:
            discard_body(self)
            raise Reply(429, f"Rate limit of {cfg.rate_limit} exceeded", "", "RateLimitExceeded",
                        {"Retry-After": str(max(1, math.ceil(wait)))})
        self._check_content_type()
        raw = self._read_body(cfg.max_payload_bytes)
        entry["bytes"] = len(raw)
        body = validate_body(raw, cfg.name_rule)
        params = body["parameters"]
        entry.update(action=body["action"], cohort_id=params["cohort_id"], members=len(params["members"]))
        refused_member(params["members"], cfg.refuse_uids, entry)
        if emu.roll(cfg.error_rate):
            raise Reply(500, "Internal server error (injected)", "", "InternalServerError")
        if emu.roll(cfg.throttle_rate):
            raise Reply(429, "Rate limit exceeded (injected)", "", "RateLimitExceeded",
                        {"Retry-After": f"{cfg.retry_after:g}"})
        return body

    def _check_content_type(self) -> None:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            discard_body(self)
            raise Reply(415, "Content-Type must be application/json", "Content-Type", "UnsupportedMediaType")

    def _check_auth(self) -> str:
        """The workspace id the request is for, once its credentials pass: Basic auth (401), then
        MOE-APPKEY: absent is a 400 (MoEngage's description), another user a 401."""
        cfg = self.server.emulator.config
        header = self.headers.get("Authorization") or ""
        appkey = self.headers.get("MOE-APPKEY")
        user, password = basic_credentials(header)
        if user is None or not user or not password:
            discard_body(self)
            raise Reply(401, "Authentication required: Basic auth with workspace id and Data API key", "Authorization", "Unauthorized")
        if appkey is None:
            discard_body(self)
            raise Reply(400, "The MOE-APPKEY header is required: the workspace id", "MOE-APPKEY", MISSING)
        if appkey != user:
            discard_body(self)
            raise Reply(401, "MOE-APPKEY must equal the Basic auth username", "MOE-APPKEY", "Unauthorized")
        accounts = cfg.accounts()
        if accounts and not hmac.compare_digest(password.encode(), (accounts.get(user) or "\0").encode()):
            discard_body(self)
            raise Reply(401, "Invalid workspace id or API key", "Authorization", "Unauthorized")
        return user

    def _apply(self, body: dict, workspace: str = "") -> None:
        emu = self.server.emulator
        params = body["parameters"]
        uids = [m["uid"] for m in params["members"]]
        matched = [u for u in uids if u and (emu.users is None or u in emu.users)]  # no user has an empty id
        with emu.creating:
            self._check_cap(workspace, params["cohort_id"])
            emu.store.apply(body["action"], body["partner"], params["cohort_id"], params["cohort_name"],
                            params.get("cohort_description"), matched, len(uids) - len(matched), workspace)

    def _check_cap(self, workspace: str, cohort_id: str) -> None:
        """A request that would create one segment past the workspace's cap: MoEngage's 429 that is not a rate limit."""
        emu = self.server.emulator
        if not emu.store.exists(workspace, cohort_id) and emu.store.count(workspace) >= emu.config.max_segments:
            raise Reply(429, SEGMENT_CAP_MESSAGE, "parameters.cohort_id", "Segment Limit Exceeded")

    # --- the user lookup (check-users) ---------------------------------------------------------
    def _lookup(self) -> None:
        emu, cfg = self.server.emulator, self.server.emulator.config
        entry: dict = {"workspace": None, "action": "lookup", "cohort_id": None, "members": 0, "bytes": 0}
        started = time.time()
        try:
            entry["workspace"] = workspace = self._check_auth()
            if cfg.suspended:
                discard_body(self)
                raise Reply(403, "Your account is suspended or blocked", "", "Forbidden")
            with emu.lock:
                window = emu.lookups.setdefault(workspace, lookup.Window())
            wait = window.admit(cfg.lookup_rate_limit)
            if wait is not None:
                discard_body(self)
                raise Reply(429, f"Rate limit of {cfg.lookup_rate_limit} user lookups exceeded", "", "Rate Limits Exceeded",
                            {"Retry-After": str(max(1, math.ceil(wait)))})
            self._check_content_type()
            raw = self._read_body(cfg.max_payload_bytes)
            entry["bytes"] = len(raw)
            asked = lookup_identifiers(raw)
            entry["members"] = len(asked)
            if emu.roll(cfg.error_rate):
                raise Reply(500, "Internal server error (injected)", "", "InternalServerError")
            emu.record(**entry, status=200, elapsed=time.time() - started)
            self._json(200, lookup.answer(asked, emu.users))
        except Reply as reply:
            emu.record(**entry, status=reply.status, elapsed=time.time() - started)
            self._error(reply)

    # --- plumbing -------------------------------------------------------------------------
    def _read_body(self, limit: int) -> bytes:
        try:
            return read_body(self, limit)
        except RefusedBody as refused:
            if refused.length is None:
                raise Reply(400, "Content-Length is not a number", "Content-Length", "BadRequest") from None
            raise Reply(413, f"Payload of {refused.length} bytes exceeds the limit of {limit} bytes", "body",
                        "PayloadTooLarge") from None

    def _configure(self) -> None:
        try:
            self.server.emulator.config.update(json.loads(self._read_body(1 << 20) or b"{}"))
        except (ValueError, TypeError, Reply) as exc:
            self._json(400, {"error": str(exc)})
            return
        self._json(200, {"status": "ok"})

    def _error(self, reply: Reply) -> None:
        error = {"attribute": reply.attribute, "message": reply.message, "type": reply.type,
                 "request_id": uuid.uuid4().hex}
        self._json(reply.status, {"status": "fail", "error": error}, reply.headers)

    def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
        send_json(self, status, payload, headers)

    def _drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        super().__init__(address, Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"
