"""Typed settings, one frozen dataclass per concern, each field with its unit.

Built once from the operator config (see config.py) and passed in explicitly: the CLI, the
daemon and the tests construct the same objects, and nothing reads the environment later.

Each field that an operator sets is declared once, with `setting(...)`: its default as written in
cohortsync.yaml, its kind (type and unit), its environment variable and one line of meaning.
Everything else is derived from that declaration: the dataclass default, the config builder and
the environment mapping (config.py), and the flat list of keys (keys.py) that the README's table
and schema/config.schema.json are tested against.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.common.quoting import shown
from reconciler.settings.values import RateLimit, Secret, file_database, file_url_relative_to, parse_duration  # importable here too

def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{shown(text)} is not a boolean: use true or false")


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{shown(text)} is not a whole number") from None


DATA_CENTRES = ("01", "02", "03", "04", "05", "06", "101")  # MoEngage's: https://api-{dc}.moengage.com
# MoEngage's own API descriptions disagree on whether a cohort name starts with "." (specs/rules.py applies it)
NAME_RULES = ("leading_period", "no_leading_period")


def data_centre(value: Any, base: Path | None = None) -> str:
    """'01'..'06' or '101'; an unquoted `dc: 1` in YAML (an integer) or "1" means '01', not api-1."""
    text = str(value).strip()
    if not isinstance(value, bool) and text.isdigit() and int(text) in (1, 2, 3, 4, 5, 6, 101):
        return f"{int(text):02d}"
    raise ValueError(f"{shown(value)} is not a MoEngage data centre: use one of {', '.join(DATA_CENTRES)}")


def _name_rule(value: Any, base: Path | None = None) -> str:
    if value not in NAME_RULES:
        raise ValueError(f"{shown(value)} is not a cohort-name rule: use {' or '.join(NAME_RULES)}")
    return str(value)


def _path(value: Any, base: Path | None) -> Path:
    if "\0" in str(value):
        raise ValueError("contains a NUL byte, which no path can hold")
    path = Path(value)
    return path if base is None or path.is_absolute() else base / path


def _url(value: Any, base: Path | None) -> str:
    return str(value) if base is None else file_url_relative_to(str(value), base)


IN_MEMORY_EXAMPLE = {"sqlite": "sqlite:///warehouse.db", "duckdb": "duckdb:///warehouse.duckdb"}


@dataclass(frozen=True)
class ConnectionSettings:
    """A warehouse for `sql` sources; with `snapshots` (a schema), its cohorts are diffed in the
    warehouse against a snapshot table per (workspace, cohort) kept in that schema."""

    url: Secret
    snapshots: str | None = None


def _connection(name: str, value: Any, base: Path | None) -> ConnectionSettings | None:
    """A URL string, or a mapping {url, snapshots} (its keys and the schema's name checked by
    config.schema.json); None for an empty one (an unset ${VAR})."""
    if not isinstance(value, dict):
        return ConnectionSettings(Secret(_url(value, base))) if value else None
    if not value.get("url"):
        return None
    url, snapshots = _url(value["url"], base), value.get("snapshots")
    if snapshots is not None:
        _check_snapshot_place(name, url, str(snapshots))
    return ConnectionSettings(Secret(url), str(snapshots) if snapshots is not None else None)


def _check_snapshot_place(name: str, url: str, schema: str) -> None:
    """Refuse, before any run, a place no snapshot could be kept: a database in memory, or on SQLite a
    schema other than `main` (the only one a file has, and an attached file is not one we create)."""
    found = file_database(url)
    if found is None:
        return
    kind, path = found
    if path in ("", ":memory:"):
        raise ValueError(f"connections.{name}.snapshots: a {kind} database in memory keeps no snapshot from one run to "
                         f"the next: give the connection a file (`url: {IN_MEMORY_EXAMPLE[kind]}`)")
    if kind == "sqlite" and schema != "main":
        raise ValueError(f"connections.{name}.snapshots: SQLite keeps its tables in the schema `main`: write "
                         "`snapshots: main`")


def _urls(value: Any, base: Path | None) -> dict[str, ConnectionSettings]:
    found = {str(k): _connection(str(k), v, base) for k, v in (value or {}).items()}
    return {k: c for k, c in found.items() if c is not None}


@dataclass(frozen=True)
class NotifyTarget:
    """Where alerts go: an Apprise URL or an http(s) webhook (signed with `secret`), filtered by
    event kind and cohort id glob (empty: all). The URL holds tokens: it is a Secret."""

    url: Secret
    events: tuple[str, ...] = ()
    cohorts: tuple[str, ...] = ()
    secret: Secret = Secret("")


def _targets(value: Any, base: Path | None) -> tuple[NotifyTarget, ...]:
    if not isinstance(value, list):
        raise ValueError("notify must be a list of {url, events, cohorts, secret}")
    targets = []
    for i, item in enumerate(value):
        if not isinstance(item, dict) or not item.get("url"):
            raise ValueError(f"notify[{i}] needs a url")
        targets.append(NotifyTarget(Secret(str(item["url"])), tuple(map(str, item.get("events") or ())),
                                    tuple(map(str, item.get("cohorts") or ())), Secret(str(item.get("secret") or ""))))
    return tuple(targets)


def _json_list(text: str) -> Any:
    import json
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError("not a JSON list of targets, e.g. [{\"url\": \"json://host/path\"}]") from None


@dataclass(frozen=True)
class Kind:
    """How a kind of value is written in cohortsync.yaml and the environment, and what it becomes."""

    name: str  # the type column of the README's table
    json: tuple[str, ...]  # the JSON types config.schema.json allows (besides null for a key with no default)
    parse: Callable[[Any, Path | None], Any]  # YAML value -> setting; relative paths are taken from base
    from_env: Callable[[str], Any] = str  # environment text -> YAML value
    named: bool = False  # a mapping of names to values: `connections.NAME`, one variable per name
    group: type | None = None  # for a named kind whose values are groups of keys: the dataclass of one


TEXT = Kind("text", ("string",), lambda v, base: str(v))
DC = Kind("text", ("string", "integer"), data_centre)  # text that the schema also takes as a number
OPTIONAL_TEXT = Kind("text", ("string",), lambda v, base: str(v) or None)
SECRET = Kind("secret", ("string",), lambda v, base: Secret(str(v)))
FLAG = Kind("boolean", ("boolean",), lambda v, base: bool(v), _flag)
COUNT = Kind("whole number", ("integer",), lambda v, base: int(v), _whole)
DURATION = Kind("duration", ("string", "number"), lambda v, base: parse_duration(v))
RATE = Kind("rate N/S", ("string",), lambda v, base: RateLimit.parse(v))
NAME_RULE = Kind("`leading_period` or `no_leading_period`", ("string",), _name_rule)
PATH = Kind("path", ("string",), _path)
URL = Kind("SQLAlchemy URL", ("string",), _url)
URLS = Kind("SQLAlchemy URL, or `{url, snapshots}`", ("object",), _urls, named=True)
TARGETS = Kind("list of targets", ("array",), _targets, _json_list)


@dataclass(frozen=True)
class Key:
    """One config key, declared once: what keys.py lists and config.py reads."""

    kind: Kind
    default: Any  # as written in cohortsync.yaml; None: unset
    env: str  # the environment variable; for a named kind, the prefix of one variable per name
    doc: str  # the meaning, one line (Markdown)
    unit: str = ""  # for numbers that are not durations: bytes, members, retries
    path: str = ""  # "moengage.timeout": filled in by keys.py

    @property
    def name(self) -> str:
        """The key as the README writes it: `connections.NAME` for a named kind."""
        return f"{self.path}.NAME" if self.kind.named else self.path

    @property
    def variable(self) -> str:
        """The environment variable as the README writes it: `COHORTSYNC_CONNECTION_NAME` for a named kind."""
        if "{NAME}" in self.env:
            return self.env.replace("{NAME}", "NAME")
        return f"{self.env}NAME" if self.kind.named else self.env


def setting(default: Any, kind: Kind, env: str, doc: str, unit: str = "") -> Any:
    """A dataclass field for a config key: its default is the parsed `default`, its metadata the whole declaration."""
    key = Key(kind, default, env, doc, unit)
    if kind.named:
        return field(default_factory=dict, metadata={"key": key})
    return field(default=None if default is None else kind.parse(default, None), metadata={"key": key})


@dataclass(frozen=True)
class MoEngageSettings:
    """How to reach the Cohort Sync API and at what pace."""

    dc: str = setting("01", DC, "MOENGAGE_DC", "data centre: `01` to `06` or `101` (`1` means `01`); "
                      "`https://api-{dc}.moengage.com`")
    base_url: str | None = setting(None, OPTIONAL_TEXT, "MOENGAGE_BASE_URL", "overrides `dc` (the emulator, a proxy)")
    workspace_id: str = setting("", TEXT, "MOENGAGE_WORKSPACE_ID", "Basic-auth user and `MOE-APPKEY`")
    api_key: Secret = setting("", SECRET, "MOENGAGE_API_KEY", "Basic-auth password (the Data API key)")
    rate_limit: RateLimit = setting("300/60s", RATE, "COHORTSYNC_RATE_LIMIT", "at most N requests in any window of S")
    max_payload_bytes: int = setting(128_000, COUNT, "COHORTSYNC_MAX_PAYLOAD_BYTES", "request body limit", "bytes")
    timeout: float = setting("30s", DURATION, "COHORTSYNC_TIMEOUT", "per request")
    max_retries: int = setting(6, COUNT, "COHORTSYNC_MAX_RETRIES", "retries of one batch on 5xx, drops, timeouts",
                               "retries")
    backoff_base: float = setting("500ms", DURATION, "COHORTSYNC_BACKOFF_BASE",
                                  "the first retry's backoff; it doubles with each retry (equal jitter: a draw "
                                  "between half of it and all of it)")
    backoff_max: float = setting("30s", DURATION, "COHORTSYNC_BACKOFF_MAX", "the longest backoff before one retry")
    name_rule: str = setting("leading_period", NAME_RULE, "COHORTSYNC_NAME_RULE",
                             "whether this account wants cohort names to start with `.` (`leading_period`) or "
                             "not (`no_leading_period`); MoEngage's own API descriptions disagree")
    # MoEngage's Get User API allows 20 users a request and 1,000 a minute: 50 requests of 20 (README, check-users)
    lookup_rate_limit: RateLimit = setting("50/60s", RATE, "COHORTSYNC_LOOKUP_RATE_LIMIT",
                                           "`check-users`: at most N user lookups in any window of S, a budget "
                                           "of its own")
    lookup_batch: int = setting(20, COUNT, "COHORTSYNC_LOOKUP_BATCH", "`check-users`: uids asked per lookup",
                                "users")

    @property
    def api_base(self) -> str:
        return (self.base_url or f"https://api-{self.dc}.moengage.com").rstrip("/")

    @property
    def url(self) -> str:
        return self.api_base + "/v1/integrations/cohortsync"

    @property
    def lookup_url(self) -> str:
        """MoEngage's Get User API, which says which uids it knows (check-users)."""
        return self.api_base + "/v1/customers/export"


WORKSPACE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")  # also a part of environment variables' names
DEFAULT_WORKSPACE = "default"  # the `moengage:` block's name
WORKSPACES = Kind("workspace", ("object",), lambda v, base: v, named=True, group=MoEngageSettings)


def workspace_variable(name: str, key: str) -> str:
    """Where a named workspace's credentials come from by default: MOENGAGE_LIVE_API_KEY."""
    return f"MOENGAGE_{name.upper()}_{key.upper()}"


@dataclass(frozen=True)
class DaemonSettings:
    """The long-lived `run` process."""

    listen: str = setting("127.0.0.1:8787", TEXT, "COHORTSYNC_LISTEN", "the daemon's HTTP address")
    interval: float = setting("15m", DURATION, "COHORTSYNC_INTERVAL", "default cohort schedule")
    debounce: float = setting("2s", DURATION, "COHORTSYNC_DEBOUNCE", "file events closer than this make one reconcile")
    token: Secret = setting("", SECRET, "COHORTSYNC_TOKEN", "bearer token for `POST /reconcile`")
    webhook_secret: Secret = setting("", SECRET, "COHORTSYNC_WEBHOOK_SECRET",
                                     "GitHub webhook secret (`X-Hub-Signature-256`)")
    git_pull: bool = setting(False, FLAG, "COHORTSYNC_GIT_PULL", "`git pull --ff-only` before a triggered reconcile")
    lease_time: float = setting("30s", DURATION, "COHORTSYNC_LEASE_TIME",
                                "how long a lease on the state (SQLite) or on a cohort (PostgreSQL) lives unless "
                                "renewed; renewed every third of it, taken over once it expires")
    resync: float | None = setting(None, DURATION, "COHORTSYNC_RESYNC",
                                   "resync every cohort this often (a spec's `resync` wins); unset: never")


@dataclass(frozen=True)
class ChangelogSettings:
    """The membership changelog: who entered or left which cohort, when, in which run."""

    retention: float = setting("180d", DURATION, "COHORTSYNC_CHANGELOG_RETENTION",
                               "how long an entry is kept (the daemon prunes older ones); `0`: nothing is "
                               "logged, and resync can only re-add")

    @property
    def logs(self) -> bool:
        """Whether settled batches are logged at all."""
        return self.retention > 0


@dataclass(frozen=True)
class AlertingSettings:
    """How alerts to the `notify` targets are sent: never in a reconcile's way."""

    window: float = setting("1h", DURATION, "COHORTSYNC_ALERT_WINDOW",
                            "the same event for the same cohort and target is sent once in this window")
    timeout: float = setting("5s", DURATION, "COHORTSYNC_ALERT_TIMEOUT", "per notification request")
    retries: int = setting(3, COUNT, "COHORTSYNC_ALERT_RETRIES",
                           "retries of a failed notification, 1 s doubling between them", "retries")


@dataclass(frozen=True)
class DbtSettings:
    """Where dbt's artifacts are: specs that name a `dbt_model` resolve it through the manifest."""

    manifest: Path = setting("target/manifest.json", PATH, "COHORTSYNC_DBT_MANIFEST",
                             "dbt's `manifest.json`, through which a spec's `source.dbt_model` resolves to its "
                             "relation (see dbt)")


@dataclass(frozen=True)
class Settings:
    """Everything an operator configures; `moengage` and `daemon` are the keys' groups (`moengage.dc`)."""

    cohorts_dir: Path = setting("cohorts", PATH, "COHORTSYNC_COHORTS_DIR", "where the specs live")
    state_url: str = setting("sqlite:///state/cohortsync.db", URL, "COHORTSYNC_STATE_URL",
                             "the state database; PostgreSQL for HA")
    partner: str = setting("cohortsync", TEXT, "COHORTSYNC_PARTNER", "sent as `partner`")
    prune: bool = setting(False, FLAG, "COHORTSYNC_PRUNE", "empty cohorts whose spec was deleted")
    statement_timeout: float = setting("5m", DURATION, "COHORTSYNC_STATEMENT_TIMEOUT", "how long a source query may run")
    # below a million members, starting a helper process costs more than it saves
    parallel_plan_min: int = setting(1_000_000, COUNT, "COHORTSYNC_PARALLEL_PLAN_MIN",
                                     "synced members from which a plan reads the state in a helper process and "
                                     "diffs with GNU `comm` (see Performance); `0`: always", "members")
    moengage: MoEngageSettings = field(default_factory=MoEngageSettings)
    workspaces: dict[str, MoEngageSettings] = setting(
        None, WORKSPACES, "MOENGAGE_{NAME}_WORKSPACE_ID",
        "more MoEngage accounts, each with the keys of `moengage` (`moengage` is the workspace `default`); "
        "credentials from `MOENGAGE_NAME_WORKSPACE_ID` and `MOENGAGE_NAME_API_KEY` unless given")
    connections: dict[str, ConnectionSettings] = setting(None, URLS, "COHORTSYNC_CONNECTION_",
                                                 "a warehouse for `sql` sources (`connection: NAME`); with "
                                                 "`snapshots: SCHEMA`, its cohorts are diffed in the warehouse "
                                                 "(see The diff inside the warehouse); the variable sets the URL")
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    changelog: ChangelogSettings = field(default_factory=ChangelogSettings)
    notify: tuple[NotifyTarget, ...] | None = setting(None, TARGETS, "COHORTSYNC_NOTIFY",
                                                      "alert targets: `{url, events, cohorts, secret}` each "
                                                      "(see Alerts); from the environment as JSON")
    alerting: AlertingSettings = field(default_factory=AlertingSettings)
    dbt: DbtSettings = field(default_factory=DbtSettings)
    config_file: str | None = None  # where the settings came from; not a key

    @property
    def accounts(self) -> dict[str, MoEngageSettings]:
        """Every MoEngage workspace by name, `default` (the `moengage:` block) first."""
        return {DEFAULT_WORKSPACE: self.moengage, **self.workspaces}

    def account(self, name: str) -> MoEngageSettings:
        try:
            return self.accounts[name]
        except KeyError:
            raise KeyError(f"no workspace named {name!r} in the config (known: {', '.join(self.accounts)})") from None
