"""The operator config: `cohortsync.yaml`, `${VAR}` expansion, environment overrides, Settings.

`${VAR}` and `${VAR:-default}` are expanded in this file only (specs never read the
environment). Every key can also come from an environment variable, which wins over the file.
Which keys exist, their defaults, kinds and variables are declared once, on the settings
dataclasses (model.py); this module only reads them (keys.py), it repeats none of them.
"""
from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from reconciler.common.documents import Document, parse_yaml, schema_problems
from reconciler.common.errors import ConfigError
from reconciler.common.quoting import shown
from reconciler.settings.keys import KEYS
from reconciler.settings.model import DEFAULT_WORKSPACE, WORKSPACE_NAME, Settings, workspace_variable

DEFAULT_CONFIG = "cohortsync.yaml"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

CONNECTION_PREFIX = next(k.env for k in KEYS if k.path == "connections")  # COHORTSYNC_CONNECTION_WAREHOUSE=...


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
    _check_workspaces(data, file or "environment")
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
    for key in KEYS:
        if key.kind.named or env.get(key.env) in (None, ""):
            continue
        *groups, name = key.path.split(".")
        target = data
        for group in groups:
            if not isinstance(target.get(group), dict):
                target[group] = {}
            target = target[group]
        target[name] = _parsed(key.kind.from_env, env[key.env], "environment", key.env)
    for var, value in env.items():
        if var.startswith(CONNECTION_PREFIX) and value:
            connections, name = data.setdefault("connections", {}), var[len(CONNECTION_PREFIX):].lower()
            if isinstance(connections.get(name), dict):  # the file's mapping keeps its `snapshots`
                connections[name]["url"] = value
            else:
                connections[name] = value
    for name, account in (data.get("workspaces") or {}).items():
        if isinstance(account, dict):
            for key in ("workspace_id", "api_key"):
                if not account.get(key) and env.get(workspace_variable(str(name), key)):
                    account[key] = env[workspace_variable(str(name), key)]


def _settings(data: dict[str, Any], base: Path, file: str | None) -> Settings:
    return Settings(**_values(Settings, data, base, file or "environment", ""), config_file=file)


def _values(cls: type, data: dict[str, Any], base: Path, where: str, prefix: str) -> dict[str, Any]:
    """The fields of one settings dataclass from its part of the config; an unset or null key keeps its default."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f.metadata.get("key")
        if key is not None and key.kind.group is not None:  # named groups of keys: workspaces
            values[f.name] = {str(name): key.kind.group(**_values(key.kind.group, group or {}, base, where,
                                                                    f"{prefix}{f.name}.{name}."))
                              for name, group in (data.get(f.name) or {}).items()}
        elif key is not None:
            raw = key.default if data.get(f.name) is None else data[f.name]
            if raw is not None:  # else the dataclass default: None, or no connections
                values[f.name] = _parsed(key.kind.parse, raw, where, prefix + f.name, base)
        elif dataclasses.is_dataclass(f.default_factory):
            group = data.get(f.name) or {}
            values[f.name] = f.default_factory(**_values(f.default_factory, group, base, where, f"{prefix}{f.name}."))
    return values


def _parsed(parse: Callable[..., Any], value: Any, file: str, field: str, *args: Any) -> Any:
    try:
        return parse(value, *args)
    except (TypeError, ValueError) as exc:
        message = str(exc)
        if message.startswith(field + ".") and ": " in message:  # the error names a field inside this one
            field, message = message.split(": ", 1)
        raise ConfigError(message, file=file, field=field) from exc


def require_credentials(settings: Settings, workspaces: Iterable[str] = (DEFAULT_WORKSPACE,)) -> None:
    """apply and run need the credentials of the workspaces they send to; validate and plan do not."""
    where = settings.config_file or "environment"
    for name in workspaces:
        account = settings.account(name)
        group = "moengage" if name == DEFAULT_WORKSPACE else f"workspaces.{name}"
        for key, what in (("workspace_id", "workspace id"), ("api_key", "Data API key")):
            if not getattr(account, key):
                variable = f"MOENGAGE_{key.upper()}" if name == DEFAULT_WORKSPACE else workspace_variable(name, key)
                raise ConfigError(f"no {what} for workspace {name}: set {variable}", file=where,
                                  field=f"{group}.{key}")


def _check_workspaces(data: dict[str, Any], file: str) -> None:
    for name in data.get("workspaces") or {}:
        if name == DEFAULT_WORKSPACE:
            raise ConfigError("the workspace `default` is the `moengage:` block: configure it there",
                              file=file, field="workspaces.default")
        if not WORKSPACE_NAME.match(str(name)):
            raise ConfigError(f"{shown(name)} is not a workspace name: lower-case letters, digits and _, "
                              "starting with a letter", file=file, field=f"workspaces.{name}")
