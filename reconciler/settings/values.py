"""The values settings are made of, apart from the settings themselves: a secret that never prints,
durations and rates as operators write them, and SQLite and DuckDB paths taken from the config's folder."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from reconciler.common.quoting import shown

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
        raise ValueError(f"{shown(text)} is not a duration: use a number with s, m, h or d, e.g. 15m")
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
            raise ValueError(f"{shown(text)} is not a rate limit: use N/Ss, e.g. 300/60s")
        amount = float(m.group(2) or 1)
        window = amount * _UNIT_SECONDS[m.group(3) or "s"]
        if window <= 0:
            raise ValueError(f"{shown(text)}: the window must be longer than 0 s")
        return cls(int(m.group(1)), window)

    def __str__(self) -> str:
        return f"{self.requests}/{self.window:g}s"


FILE_DATABASES = ("sqlite", "duckdb")  # URLs whose database is a file path: `sqlite:///relative.db`
_FILE_URL = re.compile(rf"^((?:{'|'.join(FILE_DATABASES)})(?:\+\w+)?://)(/?)(.*)$", re.DOTALL)


def file_database(url: str) -> tuple[str, str] | None:
    """(kind, path) of a SQLite or DuckDB URL, the path '' or ':memory:' for a database in memory; None
    for a URL of any other database."""
    found = _FILE_URL.match(url)
    if found is None:
        return None
    return found.group(1).split("+")[0].split(":")[0], found.group(3).split("?")[0] if found.group(2) else ""


def file_url_relative_to(url: str, base: Path) -> str:
    """Relative SQLite and DuckDB paths are taken from the config file's folder, not the working directory."""
    found = file_database(url)
    if found is None or found[1] in ("", ":memory:") or found[1].startswith("/"):
        return url
    prefix = url[:url.index("://") + 4]  # through the third slash; the relative path follows it
    return prefix + str(base / url[len(prefix):])
