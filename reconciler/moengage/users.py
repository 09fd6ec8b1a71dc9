"""MoEngage's Get User API, asked which uids it knows: the match rate that `check-users` reports.

MoEngage silently ignores uids it does not know (the Cohort Sync API never creates users), so a
segment can be much smaller than its query. `POST /v1/customers/export` answers, for up to 20
users a request and 1,000 a minute, which exist (`data.users`) and which do not
(`data.users_not_found`). It is read-only and runs on a rate budget of its own
(`moengage.lookup_rate_limit`), never on the Cohort Sync API's limiter.
"""
from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Iterable

import requests

from reconciler.common.errors import ApiError, TemporaryApiError
from reconciler.common.waiting import pause
from reconciler.moengage.client import Retries, auth_headers, classify
from reconciler.moengage.ratelimit import SlidingWindowLimiter
from reconciler.settings.model import MoEngageSettings

log = logging.getLogger(__name__)
IDENTIFIER_TYPE = "customer_id"  # MoEngage's unique user id: the uid the Cohort Sync API matches on


class UserLookup:
    """Asks which uids MoEngage knows, batch by batch, at the lookup's own pace; changes nothing."""

    def __init__(self, settings: MoEngageSettings, *, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.limiter = SlidingWindowLimiter(settings.lookup_rate_limit, stop=stop)  # never the cohort sync's
        self.requests = 0
        self._session = requests.Session()
        self._stop = stop
        self._rng = random.Random()
        self._headers = auth_headers(settings)

    def __repr__(self) -> str:
        return f"UserLookup({self.settings.lookup_url!r}, workspace={self.settings.workspace_id!r})"

    def close(self) -> None:
        """Its connections; callers hold it in `contextlib.closing`."""
        self._session.close()

    def not_found(self, uids: Iterable[str]) -> set[str]:
        """The uids MoEngage does not know, asked `lookup_batch` at a time."""
        uids = list(dict.fromkeys(uids))
        size = max(1, self.settings.lookup_batch)
        missing: set[str] = set()
        for start in range(0, len(uids), size):
            missing |= self._ask(uids[start:start + size])
        return missing

    def _ask(self, batch: list[str]) -> set[str]:
        """One lookup, retried as the Cohort Sync API's requests are: 429 waits, 5xx and drops back off."""
        body = json.dumps({"identifiers": [{"identifier_type": IDENTIFIER_TYPE, "identifier": uid} for uid in batch],
                           "user_fields_to_export": [IDENTIFIER_TYPE]}).encode()
        retries = Retries(self.settings, self._rng)
        while True:
            try:
                return not_found_in(self._post(body), batch)
            except TemporaryApiError as exc:
                delay = retries.delay(exc)
                if delay is None:
                    raise
                log.info("user lookup: %s; retrying in %.2fs", exc, delay)
                pause(delay, self._stop)

    def _post(self, body: bytes) -> dict:
        with self.limiter.slot():
            try:
                resp = self._session.post(self.settings.lookup_url, data=body, headers=self._headers,
                                          params={"app_id": self.settings.workspace_id}, timeout=self.settings.timeout)
            except requests.RequestException as exc:  # read-only: whether it arrived does not matter
                raise TemporaryApiError(f"user lookup failed ({type(exc).__name__})") from exc
        self.requests += 1
        if resp.status_code != 200:
            raise classify(resp)
        try:
            return resp.json()
        except ValueError as exc:
            raise ApiError("the user lookup answered 200 with a body that is not JSON", status=200) from exc


def not_found_in(answer: dict, asked: list[str]) -> set[str]:
    """The asked uids in `data.users_not_found`; an answer of another shape is an error, not a guess."""
    data = answer.get("data") if isinstance(answer, dict) else None
    missing = data.get("users_not_found") if isinstance(data, dict) else None
    if not isinstance(missing, list):
        raise ApiError("the user lookup answered without data.users_not_found", status=200)
    found = {item.get("identifier") for item in missing if isinstance(item, dict)}
    return {uid for uid in asked if uid in found}
