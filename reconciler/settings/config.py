"""The operator config: `cohortsync.yaml`, `${VAR}` expansion, environment overrides, Settings.

`${VAR}` and `${VAR:-default}` are expanded in this file only (specs never read the
environment). Every key can also come from an environment variable, which wins over the file.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reconciler.common.documents import Document, parse_yaml, schema_problems
from reconciler.common.errors import ConfigError
from reconciler.settings.model import (PARALLEL_PLAN_MIN, DaemonSettings, MoEngageSettings, RateLimit, Secret, Settings,
                                 parse_duration)

DEFAULT_CONFIG = "cohortsync.yaml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

# environment variable -> config key path; the environment wins over the file
ENV_KEYS: dict[str, tuple[str, ...]] = {
    "COHORTSYNC_COHORTS_DIR": ("cohorts_dir",),
    "COHORTSYNC_STATE_URL": ("state_url",),
    "COHORTSYNC_PARTNER": ("partner",),
    "COHORTSYNC_PRUNE": ("prune",),
    "COHORTSYNC_STATEMENT_TIMEOUT": ("statement_timeout",),
    "COHORTSYNC_PARALLEL_PLAN_MIN": ("parallel_plan_min",),
    "MOENGAGE_DC": ("moengage", "dc"),
    "MOENGAGE_BASE_URL": ("moengage", "base_url"),
    "MOENGAGE_WORKSPACE_ID": ("moengage", "workspace_id"),
    "MOENGAGE_API_KEY": ("moengage", "api_key"),
    "COHORTSYNC_RATE_LIMIT": ("moengage", "rate_limit"),
    "COHORTSYNC_MAX_PAYLOAD_BYTES": ("moengage", "max_payload_bytes"),
    "COHORTSYNC_TIMEOUT": ("moengage", "timeout"),
    "COHORTSYNC_MAX_RETRIES": ("moengage", "max_retries"),
    "COHORTSYNC_LISTEN": ("daemon", "listen"),
    "COHORTSYNC_INTERVAL": ("daemon", "interval"),
    "COHORTSYNC_DEBOUNCE": ("daemon", "debounce"),
    "COHORTSYNC_TOKEN": ("daemon", "token"),
    "COHORTSYNC_WEBHOOK_SECRET": ("daemon", "webhook_secret"),
    "COHORTSYNC_GIT_PULL": ("daemon", "git_pull"),
}
CONNECTION_PREFIX = "COHORTSYNC_CONNECTION_"  # COHORTSYNC_CONNECTION_WAREHOUSE=postgresql://...
_BOOLEAN = {"prune", "git_pull"}
_INTEGER = {"max_payload_bytes", "max_retries", "parallel_plan_min"}


def load_settings(path: str | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the config file (explicit, or ./cohortsync.yaml if present) and the environment."""
    env = os.environ if env is None else env
    file = path or (DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    data: dict[str, Any] = {}
    if file:
        data = _read(file, env)
    _apply_env(data, env)
    doc = Document(data, None)
    problems = schema_problems(doc, "config.schema.json")
    if problems:
        p = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ConfigError(p.message + more, file=file or "environment", field=p.field)
    base = Path(file).resolve().parent if file else Path.cwd()
    return _settings(data, base, file)


def _read(file: str, env: Mapping[str, str]) -> dict[str, Any]:
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the config: {exc}", file=file) from exc
    doc, problems = parse_yaml(text)
    if problems:
        p = problems[0]
        raise ConfigError(f"{p.message}" + (f" (line {p.line})" if p.line else ""), file=file, field=p.field or None)
    assert doc is not None
    if doc.data is None:
        return {}
    if not isinstance(doc.data, dict):
        raise ConfigError("the config must be a YAML mapping", file=file)
    return _expand(doc.data, env, file, ())


def _expand(value: Any, env: Mapping[str, str], file: str, path: tuple[str, ...]) -> Any:
    """Replace ${VAR} and ${VAR:-default}; an unset VAR without default becomes empty."""
    if isinstance(value, dict):
        return {k: _expand(v, env, file, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, env, file, path) for v in value]
    if isinstance(value, str) and "${" in value:
        expanded = _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
        return expanded or None
    return value


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> None:
    for var, keys in ENV_KEYS.items():
        if env.get(var) not in (None, ""):
            target = data
            for key in keys[:-1]:
                if not isinstance(target.get(key), dict):
                    target[key] = {}
                target = target[key]
            target[keys[-1]] = _typed(keys[-1], env[var], var)
    for var, value in env.items():
        if var.startswith(CONNECTION_PREFIX) and value:
            data.setdefault("connections", {})[var[len(CONNECTION_PREFIX):].lower()] = value


def _typed(key: str, value: str, var: str) -> Any:
    if key in _BOOLEAN:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{value!r} is not a boolean: use true or false", file="environment", field=var)
    if key in _INTEGER:
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{value!r} is not a whole number", file="environment", field=var) from None
    return value


def _settings(data: dict[str, Any], base: Path, file: str | None) -> Settings:
    where = file or "environment"
    moe, daemon = data.get("moengage") or {}, data.get("daemon") or {}
    try:
        moengage = MoEngageSettings(
            workspace_id=str(moe.get("workspace_id") or ""),
            api_key=Secret(str(moe.get("api_key") or "")),
            dc=str(moe.get("dc") or "01"),
            base_url=moe.get("base_url") or None,
            rate_limit=_parsed(RateLimit.parse, moe.get("rate_limit", "300/60s"), where, "moengage.rate_limit"),
            max_payload_bytes=int(moe.get("max_payload_bytes", 128_000)),
            timeout=_parsed(parse_duration, moe.get("timeout", 30), where, "moengage.timeout"),
            max_retries=int(moe.get("max_retries", 6)),
        )
        daemon_settings = DaemonSettings(
            listen=str(daemon.get("listen", "127.0.0.1:8787")),
            interval=_parsed(parse_duration, daemon.get("interval", "15m"), where, "daemon.interval"),
            debounce=_parsed(parse_duration, daemon.get("debounce", "2s"), where, "daemon.debounce"),
            token=Secret(str(daemon.get("token") or "")),
            webhook_secret=Secret(str(daemon.get("webhook_secret") or "")),
            git_pull=bool(daemon.get("git_pull", False)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), file=where) from exc
    cohorts_dir = Path(data.get("cohorts_dir") or "cohorts")
    return Settings(
        cohorts_dir=cohorts_dir if cohorts_dir.is_absolute() else base / cohorts_dir,
        state_url=sqlite_relative_to(str(data.get("state_url") or "sqlite:///state/cohortsync.db"), base),
        partner=str(data.get("partner") or "cohortsync"),
        prune=bool(data.get("prune", False)),
        moengage=moengage,
        connections={k: Secret(sqlite_relative_to(str(v), base)) for k, v in (data.get("connections") or {}).items() if v},
        daemon=daemon_settings,
        statement_timeout=_parsed(parse_duration, data.get("statement_timeout", "5m"), where, "statement_timeout"),
        parallel_plan_min=int(data.get("parallel_plan_min", PARALLEL_PLAN_MIN)),
        config_file=file,
    )


def _parsed(parse: Any, value: Any, file: str, field: str) -> Any:
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigError(str(exc), file=file, field=field) from exc


def sqlite_relative_to(url: str, base: Path) -> str:
    """Relative SQLite paths are taken from the config file's folder, not the working directory."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url[len(prefix):] not in ("", ":memory:"):
        return prefix + str(base / url[len(prefix):])
    return url


def require_credentials(settings: Settings) -> None:
    """apply and run need credentials; validate and plan do not."""
    if not settings.moengage.workspace_id:
        raise ConfigError("no workspace id: set MOENGAGE_WORKSPACE_ID", file=settings.config_file or "environment",
                          field="moengage.workspace_id")
    if not settings.moengage.api_key:
        raise ConfigError("no Data API key: set MOENGAGE_API_KEY", file=settings.config_file or "environment",
                          field="moengage.api_key")
