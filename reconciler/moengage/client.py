"""The one door to MoEngage's Cohort Sync API.

Every `requests` exception is wrapped here into the project's own types, classified by what the
caller does next (errors.py). Batches are sent one at a time through a shared rate limiter; a
batch is only reported acknowledged after a 200, so the caller commits exactly what MoEngage took.
"""
from __future__ import annotations

import base64
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import requests

from reconciler.moengage.batching import Batch
from reconciler.common.errors import (
    ApiError,
    CohortApiError,
    FatalApiError,
    Interrupted,
    MembersRefused,
    PayloadTooLarge,
    TemporaryApiError,
)
from reconciler.common.waiting import pause
from reconciler.moengage.ratelimit import SlidingWindowLimiter
from reconciler.moengage.uids import names_members
from reconciler.settings.model import DEFAULT_WORKSPACE, MoEngageSettings
from reconciler.specs.rules import DEFAULT_NAME_RULE, MAX_ACTIVE_SEGMENTS, how_to_switch

log = logging.getLogger(__name__)
MAX_THROTTLED = 100  # consecutive 429s on one batch before we give up on it


@dataclass
class ClientStats:
    """Counters for history and metrics; read, never reset, by the caller."""

    statuses: Counter[str] = field(default_factory=Counter)  # "200", "429", "error" ...
    retries: int = 0
    throttled: int = 0
    splits: int = 0
    bytes_sent: int = 0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())


class MoEngageClient:
    """Sends batches with auth, keep-alive, timeouts, rate limiting and retries."""

    def __init__(
        self,
        settings: MoEngageSettings,
        *,
        limiter: SlidingWindowLimiter | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        stop: threading.Event | None = None,
        workspace: str = DEFAULT_WORKSPACE,
    ) -> None:
        self.settings, self.workspace = settings, workspace  # the workspace's name, for messages
        self._stop = stop
        self._sleep = sleep
        self.limiter = limiter or SlidingWindowLimiter(settings.rate_limit, stop=stop)
        self.stats = ClientStats()
        self._session = session or requests.Session()
        self._rng = rng or random.Random()
        self._headers = auth_headers(settings)

    def __repr__(self) -> str:
        return f"MoEngageClient({self.settings.url!r}, workspace={self.settings.workspace_id!r})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> "MoEngageClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, batch: Batch, before_post: Callable[[], None] | None = None) -> Iterator[Batch]:
        """Send one packed batch; yield each part MoEngage acknowledged (parts only after a 413).

        `before_post` runs right before each attempt leaves, once its rate slot is held: a replica's
        lease check, so a holder that was paused past its lease sends nothing more.
        """
        pending = [batch]
        while pending:
            part = pending.pop(0)
            try:
                self._send_with_retries(part, before_post)
            except PayloadTooLarge as exc:
                if len(part.uids) <= 1:
                    raise CohortApiError(exc.message, status=413, request_id=exc.request_id) from exc
                self.stats.splits += 1
                log.warning("cohort %s: 413 for %d uids, splitting", part.envelope.cohort_id, len(part.uids))
                pending[:0] = part.split()
                continue
            yield part

    def _send_with_retries(self, batch: Batch, before_post: Callable[[], None] | None = None) -> None:
        """Post until a 200, a definite refusal, or the retries run out; the error that ends it
        says whether any attempt may have been applied (then the batch's outcome is unknown)."""
        retries = Retries(self.settings, self._rng)
        maybe_applied = False
        while True:
            try:
                return self._post(batch, before_post)
            except TemporaryApiError as exc:
                maybe_applied = maybe_applied or exc.maybe_applied
                delay = retries.delay(exc)
                if delay is None:
                    exc.maybe_applied = maybe_applied
                    raise
                if exc.status == 429:
                    self.stats.throttled += 1
                else:
                    self.stats.retries += 1
                log.info("cohort %s: %s; retrying in %.2fs", batch.envelope.cohort_id, exc, delay)
                self._pause(delay, maybe_applied)
            except ApiError as exc:
                exc.maybe_applied = maybe_applied  # a refusal now says nothing of an earlier attempt
                raise
            except Interrupted as exc:  # waiting for a slot, or about to post
                exc.maybe_applied = maybe_applied
                raise

    def _pause(self, delay: float, maybe_applied: bool) -> None:
        """Sleep before a retry; a shutdown cuts it short, and says whether an attempt may have been applied."""
        try:
            pause(delay, self._stop, self._sleep)
        except Interrupted as stopped:
            stopped.maybe_applied = maybe_applied
            raise

    def _post(self, batch: Batch, before_post: Callable[[], None] | None = None) -> None:
        with self.limiter.slot():
            if self._stop is not None and self._stop.is_set():
                raise Interrupted("shutting down")
            if before_post is not None:
                before_post()
            try:
                resp = self._session.post(
                    self.settings.url, data=batch.body, headers=self._headers, timeout=self.settings.timeout
                )
            except requests.ConnectTimeout as exc:  # before a byte of the body left
                self.stats.statuses["timeout"] += 1
                raise TemporaryApiError(f"timed out connecting after {self.settings.timeout:g}s") from exc
            except requests.Timeout as exc:
                self.stats.statuses["timeout"] += 1
                raise _unanswered(TemporaryApiError(f"timed out after {self.settings.timeout:g}s")) from exc
            except requests.RequestException as exc:
                self.stats.statuses["error"] += 1
                error = TemporaryApiError(f"connection failed ({type(exc).__name__})")
                raise (error if _never_connected(exc) else _unanswered(error)) from exc
        self.stats.statuses[str(resp.status_code)] += 1
        self.stats.bytes_sent += len(batch.body)
        if resp.status_code != 200:
            raise classify(resp, self.settings.name_rule, self.workspace)


def auth_headers(settings: MoEngageSettings) -> dict[str, str]:
    """What every Data API request carries: Basic auth (workspace id, Data API key), MOE-APPKEY, JSON."""
    token = f"{settings.workspace_id}:{settings.api_key.reveal()}".encode()
    return {
        "Authorization": "Basic " + base64.b64encode(token).decode("ascii"),
        "MOE-APPKEY": settings.workspace_id,
        "Content-Type": "application/json",
        "User-Agent": "cohortsync",
    }


class Retries:
    """How one request is retried, for every API we ask: a 429 is waited out (MAX_THROTTLED times
    at most, not counted against the retry budget), any other temporary failure backs off and is
    tried again up to `max_retries` times."""

    def __init__(self, settings: MoEngageSettings, rng: random.Random) -> None:
        self.settings, self.rng = settings, rng
        self.attempt = self.throttled = 0

    def delay(self, exc: TemporaryApiError) -> float | None:
        """Seconds to wait before the next attempt (Retry-After when sent), or None: give up."""
        if exc.status == 429 and self.throttled < MAX_THROTTLED:
            self.throttled += 1
            step = min(self.throttled, 6)
        elif exc.status != 429 and self.attempt < self.settings.max_retries:
            self.attempt += 1
            step = self.attempt
        else:
            return None
        return exc.delay if exc.delay is not None else backoff(self.settings, step, self.rng)


def backoff(settings: MoEngageSettings, attempt: int, rng: random.Random) -> float:
    """Exponential backoff with equal jitter: a draw between half the cap and all of it.

    Not full jitter (0 to the cap): that can draw almost nothing and hit a failing server again
    at once; half the cap is still random enough to spread the processes of one account apart.
    """
    cap = min(settings.backoff_max, settings.backoff_base * 2 ** (attempt - 1))
    return rng.uniform(cap / 2, cap)


def classify(resp: requests.Response, name_rule: str = DEFAULT_NAME_RULE,
             workspace: str = DEFAULT_WORKSPACE) -> ApiError:
    """Turn a non-200 answer into the exception that tells the caller what to do.

    Two answers say more than MoEngage's message: a 429 for the segment cap is no rate limit (it
    fails the cohort at once: waiting will not help), and a 400 on the cohort name may be the name
    rule, which MoEngage's own docs disagree on (the error says which is configured, and how to switch).
    A 400 naming the members or no field at all is MembersRefused: the caller bisects the batch.
    """
    status = resp.status_code
    message, request_id, attribute, kind = _error_fields(resp)
    kw = {"status": status, "request_id": request_id, "attribute": attribute}
    if status == 429 and segment_cap(message, kind):
        return CohortApiError(f"{message}: the workspace already holds the most active custom segments MoEngage "
                              f"allows ({MAX_ACTIVE_SEGMENTS:,}, dashboard ones included), so this cohort's segment "
                              "cannot be created; archive unused segments in MoEngage or remove cohorts "
                              "(retrying will not help)", **kw)  # type: ignore[arg-type]
    if status == 429:
        return TemporaryApiError(message, delay=retry_after(resp.headers.get("Retry-After")), **kw)
    if status == 400 and "cohort_name" in f"{attribute} {message}":
        return CohortApiError(f"{message}; {how_to_switch(name_rule, workspace)}", **kw)  # type: ignore[arg-type]
    if status == 400 and names_members(attribute, kind):
        return MembersRefused(message, **kw)  # type: ignore[arg-type]
    if status in (401, 403):
        return FatalApiError(message, **kw)  # type: ignore[arg-type]
    if status == 413:
        return PayloadTooLarge(message, **kw)  # type: ignore[arg-type]
    if status >= 500 or status == 408:  # MoEngage may have applied it before failing
        return _unanswered(TemporaryApiError(message, delay=retry_after(resp.headers.get("Retry-After")), **kw))
    return CohortApiError(message, **kw)  # type: ignore[arg-type]


def _unanswered(error: ApiError) -> ApiError:
    error.maybe_applied = True
    return error


def _never_connected(exc: requests.RequestException) -> bool:
    """A refused or unresolvable connection: the request never reached MoEngage."""
    text = repr(exc)
    return isinstance(exc, requests.ConnectionError) and any(
        mark in text for mark in ("NewConnectionError", "Connection refused", "NameResolutionError"))


def segment_cap(message: str, kind: str | None) -> bool:
    """MoEngage's "Total active segments limit breached": told apart from a rate limit by its words."""
    text = f"{message} {kind or ''}".lower()
    return "segment" in text and ("limit" in text or "breach" in text)


def _error_fields(resp: requests.Response) -> tuple[str, str | None, str | None, str | None]:
    """MoEngage's error body: message, request_id, attribute and type (whatever is there)."""
    try:
        error = resp.json().get("error") or {}
    except (ValueError, AttributeError):
        error = {}
    if not isinstance(error, dict):
        error = {"message": str(error)}
    message = str(error.get("message") or resp.reason or "unexpected answer")
    return message, error.get("request_id"), error.get("attribute"), error.get("type")


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
