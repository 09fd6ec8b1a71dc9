"""MoEngage's Get User API, as far as `check-users` needs it: which of these uids does MoEngage know?

`POST /v1/customers/export` with `{"identifiers": [{"identifier_type": "customer_id", "identifier": uid}],
"user_fields_to_export": [...]}` answers the users found under `data.users` and the others under
`data.users_not_found`. MoEngage allows 20 users a request and 1,000 a minute, counted apart from
the Cohort Sync API: the emulator keeps a window of its own for it (README, "Match rate").
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque

from reconciler.settings.model import RateLimit

LOOKUP_PATH = "/v1/customers/export"
MAX_IDENTIFIERS = 20  # "20 users per payload"
IDENTIFIER_TYPES = ("customer_id", "id")  # the uid, or MoEngage's own id (which the emulator knows for nobody)


class LookupRefused(Exception):
    """A body MoEngage would answer 400: names the attribute at fault."""

    def __init__(self, message: str, attribute: str, type_: str = "ValidationError") -> None:
        super().__init__(message)
        self.message, self.attribute, self.type = message, attribute, type_


class Window:
    """A sliding window of accepted requests; its own lock, so lookups never wait on cohort syncs."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def admit(self, limit: RateLimit) -> float | None:
        """Count a request; seconds until there is room when the window is full (then nothing is counted)."""
        with self._lock:
            now = time.monotonic()
            while self._times and self._times[0] <= now - limit.window:
                self._times.popleft()
            if len(self._times) >= limit.requests:
                return self._times[0] + limit.window - now
            self._times.append(now)
            return None

    def clear(self) -> None:
        with self._lock:
            self._times.clear()


def identifiers(raw: bytes) -> list[dict]:
    """The identifiers asked for, checked as MoEngage documents them; LookupRefused otherwise."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise LookupRefused(f"Malformed JSON: {exc}", "body", "Malformed JSON") from None
    if not isinstance(body, dict):
        raise LookupRefused("The body must be a JSON object", "body")
    asked = body.get("identifiers")
    if asked is None:
        raise LookupRefused("identifiers is required", "identifiers", "MissingAttributeError")
    if not isinstance(asked, list) or not asked:
        raise LookupRefused("identifiers must be a non-empty list", "identifiers")
    if len(asked) > MAX_IDENTIFIERS:
        raise LookupRefused(f"at most {MAX_IDENTIFIERS} users per request, not {len(asked)}", "identifiers")
    for i, item in enumerate(asked):
        if not (isinstance(item, dict) and item.get("identifier_type") in IDENTIFIER_TYPES
                and isinstance(item.get("identifier"), str)):
            raise LookupRefused(f'each identifier must be {{"identifier_type": one of {", ".join(IDENTIFIER_TYPES)}, '
                                f'"identifier": "<string>"}}', f"identifiers[{i}]")
    fields = body.get("user_fields_to_export")
    if fields is not None and not (isinstance(fields, list) and all(isinstance(f, str) for f in fields)):
        raise LookupRefused("user_fields_to_export must be a list of strings", "user_fields_to_export")
    return asked


def answer(asked: list[dict], users: set[str] | None) -> dict:
    """MoEngage's answer: the users it knows (all of them when `users` is None), and the others."""
    def known(item: dict) -> bool:
        return item["identifier_type"] == "customer_id" and (users is None or item["identifier"] in users)

    found = [{"user_attributes": {"customer_id": item["identifier"]}} for item in asked if known(item)]
    missing = [{"identifier_type": item["identifier_type"], "identifier": item["identifier"]}
               for item in asked if not known(item)]
    return {"status": "success", "type": "export_users", "data": {"users_not_found": missing, "users": found}}
