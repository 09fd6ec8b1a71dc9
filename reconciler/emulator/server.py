"""The emulator's HTTP side: MoEngage's checks and answers, plus seeded fault injection.

Order of checks, as a gateway in front of the real service would apply them: latency, a
dropped connection, auth (401), a suspended account (403), the rate window (429), the
content type (415), the body size (413), JSON and fields (400), injected 500s and 429s, then the
segment change. Only accepted requests count in the rate window.
"""
from __future__ import annotations

import base64
import binascii
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

from reconciler.moengage.batching import ACTIONS
from reconciler.emulator.store import SegmentStore
from reconciler.common.httpio import RefusedBody, discard_body, read_body, send_json
from reconciler.specs.rules import cohort_name_problem
from reconciler.settings.model import MoEngageSettings, RateLimit

log = logging.getLogger(__name__)
API_PATH = "/v1/integrations/cohortsync"


@dataclass
class EmulatorConfig:
    """What the emulator accepts and which faults it injects; changeable at run time."""

    workspace_id: str | None = None  # when set with api_key, only these credentials pass (with `credentials`)
    api_key: str | None = None
    credentials: dict[str, str] = field(default_factory=dict)  # more workspaces: workspace id -> Data API key
    rate_limit: RateLimit = MoEngageSettings.rate_limit  # the real API's limits, as the client's defaults declare them
    max_payload_bytes: int = MoEngageSettings.max_payload_bytes
    suspended: bool = False  # 403 for every request
    error_rate: float = 0.0  # fraction answered 500
    throttle_rate: float = 0.0  # fraction answered 429 with Retry-After
    drop_rate: float = 0.0  # fraction whose connection is closed with no answer
    lose_answer_rate: float = 0.0  # fraction applied, then the connection closed with no answer
    latency: float = 0.0  # seconds added to every API request
    answer_latency: float = 0.0  # seconds between applying a request and answering it
    retry_after: float = 1.0  # seconds, sent with injected 429s
    seed: int | None = None

    def accounts(self) -> dict[str, str]:
        """The workspaces whose credentials pass; empty: any Basic credentials whose user is MOE-APPKEY."""
        one = {self.workspace_id: self.api_key} if self.workspace_id is not None and self.api_key is not None else {}
        return {**one, **self.credentials}

    def update(self, changes: dict) -> None:
        for key, value in changes.items():
            if key == "rate_limit":
                value = RateLimit.parse(value)
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
            self.requests.clear()


class Reply(Exception):
    """An error answer in MoEngage's documented shape."""

    def __init__(self, status: int, message: str, attribute: str = "", type_: str = "", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.attribute, self.type = status, message, attribute, type_
        self.headers = headers or {}


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
        elif path == "/_emulator/reset":
            self.server.emulator.reset()
            self._json(200, {"status": "reset"})
        elif path == "/_emulator/config":
            self._configure()
        else:
            discard_body(self)
            self._json(404, {"status": "fail", "error": {"message": f"no route {path}"}})

    def do_PUT(self) -> None:
        self._edit("add_members")

    def do_DELETE(self) -> None:
        self._edit("remove_members")

    def _edit(self, action: str) -> None:
        """A hand edit in the dashboard: PUT adds, DELETE removes the uids of a JSON list (`?workspace=`
        names the workspace), with no API request logged and no rule checked (drift only a resync repairs)."""
        path = unquote(urlsplit(self.path).path)
        cohort_id = path[len("/_emulator/cohorts/"):-len("/members")]
        if not (path.startswith("/_emulator/cohorts/") and path.endswith("/members")):
            discard_body(self)
            self._json(404, {"error": f"no route {path}"})
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
        elif path == "/_emulator/requests":
            with emu.lock:
                self._json(200, {"requests": list(emu.requests)})
        elif path == "/_emulator/healthz":
            self._json(200, {"status": "ok"})
        else:
            self._json(404, {"error": f"no route {path}"})

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
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            discard_body(self)
            raise Reply(415, "Content-Type must be application/json", "Content-Type", "UnsupportedMediaType")
        raw = self._read_body(cfg.max_payload_bytes)
        entry["bytes"] = len(raw)
        body = validate_body(raw)
        params = body["parameters"]
        entry.update(action=body["action"], cohort_id=params["cohort_id"], members=len(params["members"]))
        if emu.roll(cfg.error_rate):
            raise Reply(500, "Internal server error (injected)", "", "InternalServerError")
        if emu.roll(cfg.throttle_rate):
            raise Reply(429, "Rate limit exceeded (injected)", "", "RateLimitExceeded",
                        {"Retry-After": f"{cfg.retry_after:g}"})
        return body

    def _check_auth(self) -> str:
        """The workspace id the request is for, once its credentials pass."""
        cfg = self.server.emulator.config
        header = self.headers.get("Authorization") or ""
        appkey = self.headers.get("MOE-APPKEY") or ""
        user, password = _basic(header)
        if user is None or not user or not password:
            discard_body(self)
            raise Reply(401, "Authentication required: Basic auth with workspace id and Data API key", "Authorization", "Unauthorized")
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
        matched = uids if emu.users is None else [u for u in uids if u in emu.users]
        emu.store.apply(body["action"], body["partner"], params["cohort_id"], params["cohort_name"],
                        params.get("cohort_description"), matched, len(uids) - len(matched), workspace)

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


def _basic(header: str) -> tuple[str | None, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None, ""
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, ""
    return (user, password) if sep else (None, "")


def validate_body(raw: bytes) -> dict:
    """MoEngage's documented body checks; a Reply(400) names the attribute at fault."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Reply(400, f"Malformed JSON: {exc}", "body", "InvalidJSON")
    if not isinstance(body, dict):
        raise Reply(400, "The body must be a JSON object", "body", "ValidationError")
    _require_str(body, "action", "action")
    if body["action"] not in ACTIONS:
        raise Reply(400, f"action must be one of {', '.join(ACTIONS)}", "action", "ValidationError")
    _require_str(body, "partner", "partner")
    params = body.get("parameters")
    if not isinstance(params, dict):
        raise Reply(400, "parameters is required and must be an object", "parameters", "ValidationError")
    _require_str(params, "cohort_id", "parameters.cohort_id")
    _require_str(params, "cohort_name", "parameters.cohort_name")
    problem = cohort_name_problem(params["cohort_name"])
    if problem:
        raise Reply(400, problem, "parameters.cohort_name", "ValidationError")
    if "cohort_description" in params and not isinstance(params["cohort_description"], str):
        raise Reply(400, "cohort_description must be a string", "parameters.cohort_description", "ValidationError")
    members = params.get("members")
    if not isinstance(members, list) or not members:
        raise Reply(400, "members is required and must be a non-empty list", "parameters.members", "ValidationError")
    for i, member in enumerate(members):
        if not isinstance(member, dict) or not isinstance(member.get("uid"), str) or not member["uid"]:
            raise Reply(400, 'each member must be {"uid": "<non-empty string>"}', f"parameters.members[{i}]", "ValidationError")
    return body


def _require_str(obj: dict, key: str, attribute: str) -> None:
    if not isinstance(obj.get(key), str) or not obj[key]:
        raise Reply(400, f"{attribute} is required and must be a non-empty string", attribute, "ValidationError")


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


def load_users(path: str) -> set[str]:
    with open(path, encoding="utf-8") as fh:
        return {line.strip() for line in fh if line.strip()}
