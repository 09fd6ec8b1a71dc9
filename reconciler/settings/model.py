"""Typed settings, one frozen dataclass per concern, each field with its unit.

Built once from the operator config (see config.py) and passed in explicitly: the CLI, the
daemon and the tests construct the same objects, and nothing reads the environment later.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_RATE = "300/60s"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h)?\s*$")


class Secret:
    """A credential that never prints: repr, str and format all show a mask."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def parse_duration(text: str | int | float) -> float:
    """'15m' -> 900.0 seconds; a bare number is seconds."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"{text!r} is not a duration: use a number with s, m, h or d, e.g. 15m")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


@dataclass(frozen=True)
class RateLimit:
    """At most `requests` requests in any window of `window` seconds."""

    requests: int
    window: float

    @classmethod
    def parse(cls, text: str) -> "RateLimit":
        """'300/60s' -> RateLimit(300, 60.0); '10/2s', '300/m' also work."""
        m = _RATE.match(str(text))
        if not m or int(m.group(1)) < 1:
            raise ValueError(f"{text!r} is not a rate limit: use N/Ss, e.g. 300/60s")
        amount = float(m.group(2) or 1)
        window = amount * _UNIT_SECONDS[m.group(3) or "s"]
        if window <= 0:
            raise ValueError(f"{text!r}: the window must be longer than 0 s")
        return cls(int(m.group(1)), window)

    def __str__(self) -> str:
        return f"{self.requests}/{self.window:g}s"


@dataclass(frozen=True)
class MoEngageSettings:
    """How to reach the Cohort Sync API and at what pace."""

    workspace_id: str = ""
    api_key: Secret = field(default_factory=lambda: Secret(""))
    dc: str = "01"
    base_url: str | None = None  # overrides dc: the emulator or a proxy
    rate_limit: RateLimit = field(default_factory=lambda: RateLimit.parse(DEFAULT_RATE))
    max_payload_bytes: int = 128_000  # request body limit, bytes
    timeout: float = 30.0  # seconds per request
    max_retries: int = 6  # retries of one batch on 5xx, dropped connections, timeouts
    backoff_base: float = 0.5  # seconds; doubles per retry, with full jitter
    backoff_max: float = 30.0  # seconds; cap of one backoff sleep

    @property
    def url(self) -> str:
        base = self.base_url or f"https://api-{self.dc}.moengage.com"
        return base.rstrip("/") + "/v1/integrations/cohortsync"


@dataclass(frozen=True)
class DaemonSettings:
    """The long-lived `run` process."""

    listen: str = "127.0.0.1:8787"
    interval: float = 900.0  # seconds: default cohort schedule
    debounce: float = 2.0  # seconds: file events closer than this make one reconcile
    token: Secret = field(default_factory=lambda: Secret(""))
    webhook_secret: Secret = field(default_factory=lambda: Secret(""))
    git_pull: bool = False


PARALLEL_PLAN_MIN = 1_000_000  # below this, starting a helper process costs more than it saves


@dataclass(frozen=True)
class Settings:
    """Everything an operator configures."""

    cohorts_dir: Path = Path("cohorts")
    state_url: str = "sqlite:///state/cohortsync.db"
    partner: str = "cohortsync"
    prune: bool = False
    moengage: MoEngageSettings = field(default_factory=MoEngageSettings)
    connections: dict[str, Secret] = field(default_factory=dict)  # URLs may hold passwords
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    statement_timeout: float = 300.0  # seconds a source query may run
    parallel_plan_min: int = PARALLEL_PLAN_MIN  # synced members from which a plan uses a helper process and comm
    config_file: str | None = None
