"""The operator config: file, ${VAR} expansion, environment overrides, errors naming the key."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from reconciler.emulator.main import add_arguments
from reconciler.emulator.server import EmulatorConfig
from reconciler.settings import model
from reconciler.settings.config import load_settings, require_credentials
from reconciler.common.errors import ConfigError
from reconciler.settings.keys import KEYS, markdown_table
from reconciler.settings.model import MoEngageSettings, RateLimit, parse_duration


def write(tmp_path, text: str) -> str:
    path = tmp_path / "cohortsync.yaml"
    path.write_text(text)
    return str(path)


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings(None, env={})
    assert s.moengage.url == "https://api-01.moengage.com/v1/integrations/cohortsync"
    assert s.moengage.rate_limit == RateLimit(300, 60.0) and s.moengage.max_payload_bytes == 128_000
    assert s.state_url == f"sqlite:///{tmp_path}/state/cohortsync.db"
    assert s.daemon.interval == 900 and s.daemon.debounce == 2 and s.prune is False
    assert s.parallel_plan_min == 1_000_000


def test_variables_expand_in_the_config_with_defaults(tmp_path):
    cfg = write(tmp_path, "moengage:\n  workspace_id: ${WS}\n  api_key: ${KEY}\n  dc: ${DC:-03}\n"
                          "connections:\n  warehouse: ${WH:-sqlite:///wh.db}\n  unset: ${NOPE}\n")
    s = load_settings(cfg, env={"WS": "W1", "KEY": "k"})
    assert s.moengage.workspace_id == "W1" and s.moengage.api_key.reveal() == "k"
    assert s.moengage.url.startswith("https://api-03.")
    assert s.connections["warehouse"].url.reveal() == f"sqlite:///{tmp_path}/wh.db"
    assert "unset" not in s.connections


def test_environment_wins_over_the_file(tmp_path):
    cfg = write(tmp_path, "partner: file\nmoengage: {rate_limit: 10/1s}\ndaemon: {listen: '127.0.0.1:1'}\n")
    env = {"COHORTSYNC_PARTNER": "env", "COHORTSYNC_RATE_LIMIT": "20/2s", "COHORTSYNC_LISTEN": "127.0.0.1:2",
           "MOENGAGE_BASE_URL": "http://127.0.0.1:9", "COHORTSYNC_PRUNE": "true",
           "COHORTSYNC_CONNECTION_SALES": "sqlite:///sales.db", "COHORTSYNC_MAX_PAYLOAD_BYTES": "64000",
           "COHORTSYNC_PARALLEL_PLAN_MIN": "0"}
    s = load_settings(cfg, env=env)
    assert s.partner == "env" and s.moengage.rate_limit == RateLimit(20, 2.0) and s.daemon.listen == "127.0.0.1:2"
    assert s.moengage.url == "http://127.0.0.1:9/v1/integrations/cohortsync" and s.prune is True
    assert s.connections["sales"].url.reveal().endswith("/sales.db") and s.moengage.max_payload_bytes == 64000
    assert s.parallel_plan_min == 0


@pytest.mark.parametrize("text, env, field", [
    ("moengage: {dc: '99'}\n", {}, "moengage.dc"),
    ("moengage: {max_payload_bytes: 10}\n", {}, "moengage.max_payload_bytes"),
    ("daemon: {interval: often}\n", {}, "daemon.interval"),
    ("colour: red\n", {}, "colour"),
    ("prune: [1]\n", {}, "prune"),
    ("parallel_plan_min: -1\n", {}, "parallel_plan_min"),
    ("", {"COHORTSYNC_PARALLEL_PLAN_MIN": "lots"}, "COHORTSYNC_PARALLEL_PLAN_MIN"),
    ("", {"COHORTSYNC_PRUNE": "perhaps"}, "COHORTSYNC_PRUNE"),
    ("", {"COHORTSYNC_RATE_LIMIT": "lots"}, "moengage.rate_limit"),
    ("a: [\n", {}, None),
])
def test_errors_name_the_key(tmp_path, text, env, field):
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), env=env)
    if field:
        assert field in str(info.value)
    assert "cohortsync.yaml" in str(info.value) or "environment" in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(str(tmp_path / "nope.yaml"), env={})


def test_credentials_required_only_when_sending(tmp_path):
    s = load_settings(write(tmp_path, "{}\n"), env={})
    with pytest.raises(ConfigError, match="MOENGAGE_WORKSPACE_ID"):
        require_credentials(s)
    s = load_settings(write(tmp_path, "{}\n"), env={"MOENGAGE_WORKSPACE_ID": "W"})
    with pytest.raises(ConfigError, match="MOENGAGE_API_KEY"):
        require_credentials(s)


def test_secrets_never_in_repr(tmp_path):
    s = load_settings(write(tmp_path, "connections: {w: 'postgresql://u:pw-123@h/db'}\n"),
                      env={"MOENGAGE_API_KEY": "key-456", "COHORTSYNC_TOKEN": "tok-789", "MOENGAGE_WORKSPACE_ID": "W"})
    text = repr(s) + str(s)
    for secret in ("pw-123", "key-456", "tok-789"):
        assert secret not in text


@pytest.mark.parametrize("text, seconds", [("15m", 900), ("2s", 2), ("1.5h", 5400), ("1d", 86400), (30, 30), ("250ms", 0.25)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text, limit", [("300/60s", RateLimit(300, 60)), ("10/2s", RateLimit(10, 2)),
                                         ("300/m", RateLimit(300, 60)), ("5/500ms", RateLimit(5, 0.5))])
def test_rate_limits(text, limit):
    assert RateLimit.parse(text) == limit


# --- one declaration per key: the README, the schema, the environment and the emulator follow it ----------

ROOT = Path(__file__).resolve().parent.parent
# the contract (DESIGN.md, the README): names users and scripts rely on; a key may be added, never renamed
CONTRACT = {
    "cohorts_dir": "COHORTSYNC_COHORTS_DIR", "state_url": "COHORTSYNC_STATE_URL", "partner": "COHORTSYNC_PARTNER",
    "prune": "COHORTSYNC_PRUNE", "statement_timeout": "COHORTSYNC_STATEMENT_TIMEOUT",
    "parallel_plan_min": "COHORTSYNC_PARALLEL_PLAN_MIN", "moengage.dc": "MOENGAGE_DC",
    "moengage.base_url": "MOENGAGE_BASE_URL", "moengage.workspace_id": "MOENGAGE_WORKSPACE_ID",
    "moengage.api_key": "MOENGAGE_API_KEY", "moengage.rate_limit": "COHORTSYNC_RATE_LIMIT",
    "moengage.max_payload_bytes": "COHORTSYNC_MAX_PAYLOAD_BYTES", "moengage.timeout": "COHORTSYNC_TIMEOUT",
    "moengage.max_retries": "COHORTSYNC_MAX_RETRIES", "connections.NAME": "COHORTSYNC_CONNECTION_NAME",
    "daemon.listen": "COHORTSYNC_LISTEN", "daemon.interval": "COHORTSYNC_INTERVAL", "daemon.debounce": "COHORTSYNC_DEBOUNCE",
    "daemon.token": "COHORTSYNC_TOKEN", "daemon.webhook_secret": "COHORTSYNC_WEBHOOK_SECRET",
    "daemon.git_pull": "COHORTSYNC_GIT_PULL",
}
# a value other than the default, as the environment would give it, for each kind of key
SAMPLES = {model.TEXT: "other", model.DC: "02", model.OPTIONAL_TEXT: "http://127.0.0.1:9", model.SECRET: "s3cr3t",
           model.FLAG: "true", model.COUNT: "4096", model.DURATION: "7s", model.RATE: "7/7s", model.PATH: "elsewhere",
           model.URL: "sqlite:///elsewhere.db", model.NAME_RULE: "no_leading_period",
           model.TARGETS: '[{"url": "json://127.0.0.1:9/x", "events": ["failed"]}]'}


def test_every_name_of_the_contract_is_kept_and_no_variable_serves_two_keys():
    envs = {key.name: key.variable for key in KEYS}
    assert {path: envs.get(path) for path in CONTRACT} == CONTRACT
    assert len(set(envs.values())) == len(envs)


def test_the_readme_table_is_the_declared_keys():
    """Regenerate with: python -c 'from reconciler.settings.keys import markdown_table; print(markdown_table())'"""
    assert markdown_table() in (ROOT / "README.md").read_text()


def schema_properties(node: dict, prefix: str = "") -> dict[str, dict]:
    found = {}
    for name, prop in node["properties"].items():
        if "properties" in prop:
            found.update(schema_properties(prop, f"{prefix}{name}."))
        else:
            found[f"{prefix}{name}.NAME" if prop.get("type") == "object" else prefix + name] = prop
    return found


def test_the_schema_has_each_declared_key_with_its_type_default_and_meaning():
    schema = schema_properties(json.loads((ROOT / "schema/config.schema.json").read_text()))
    assert sorted(schema) == sorted(key.name for key in KEYS)
    for key in KEYS:
        prop, optional = schema[key.name], key.default in (None, "") and not key.kind.named
        types = {prop["type"]} if isinstance(prop["type"], str) else set(prop["type"])
        assert types == set(key.kind.json) | ({"null"} if optional else set()), key.path
        assert prop.get("default") == (None if optional else key.default), key.path
        assert prop["description"] == key.doc, key.path


@pytest.mark.parametrize("key", [k for k in KEYS if not k.kind.named], ids=lambda k: k.path)
def test_every_key_is_read_from_the_file_and_from_the_environment(tmp_path, monkeypatch, key):
    monkeypatch.chdir(tmp_path)
    *groups, name = key.path.split(".")
    value = key.kind.from_env(SAMPLES[key.kind])
    doc: dict = {name: value}
    for group in reversed(groups):
        doc = {group: doc}
    default = load_settings(None, env={})
    from_env = load_settings(None, env={key.env: SAMPLES[key.kind]})
    from_file = load_settings(write(tmp_path, json.dumps(doc)), env={})
    assert setting_at(from_file, key.path) == setting_at(from_env, key.path) != setting_at(default, key.path)


def setting_at(settings, path: str):
    for name in path.split("."):
        settings = getattr(settings, name)
    return settings


def test_backoff_is_set_in_the_config(tmp_path):
    s = load_settings(write(tmp_path, "moengage: {backoff_base: 250ms, backoff_max: 4s}\n"), env={})
    assert (s.moengage.backoff_base, s.moengage.backoff_max) == (0.25, 4.0)
    assert load_settings(None, env={"COHORTSYNC_BACKOFF_MAX": "1m"}).moengage.backoff_max == 60.0


def test_the_emulator_starts_with_the_limits_the_client_assumes():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args, api = parser.parse_args([]), MoEngageSettings()
    assert (args.rate_limit, args.max_payload_bytes) == (api.rate_limit, api.max_payload_bytes)
    assert (EmulatorConfig().rate_limit, EmulatorConfig().max_payload_bytes) == (api.rate_limit, api.max_payload_bytes)


@pytest.mark.parametrize("connection, field, says", [
    ("{url: 'sqlite:///wh.db', snapshots: bad-name}", "connections.wh.snapshots", "is not a schema name cohortsync takes"),
    ("{url: 'postgresql://h/db', snapshots: Cohorts}", "connections.wh.snapshots", "lower-case letters"),
    ("{url: 'postgresql://h/db', snapshots: 1st}", "connections.wh.snapshots", "not starting with a digit"),
    ("{url: 'postgresql://h/db', snapshot: cohortsync}", "connections.wh.snapshot", "unknown key 'snapshot'"),
    ("{snapshots: cohortsync}", "connections.wh", "'url' is required"),
    ("{url: 'duckdb:///:memory:', snapshots: cohortsync}", "connections.wh.snapshots", "keeps no snapshot"),
    ("{url: 'sqlite://', snapshots: main}", "connections.wh.snapshots", "keeps no snapshot"),
    ("{url: 'sqlite:///wh.db', snapshots: cohortsync}", "connections.wh.snapshots", "write `snapshots: main`"),
])
def test_a_connection_with_snapshots_is_checked_key_by_key(tmp_path, connection, field, says):
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, f"connections:\n  wh: {connection}\n"), env={})
    assert caught.value.field == field and says in str(caught.value), str(caught.value)


def test_duckdb_and_sqlite_urls_are_taken_from_the_config_folder(tmp_path):
    s = load_settings(write(tmp_path, "connections:\n  files: {url: 'duckdb:///wh.duckdb', snapshots: cs}\n"
                                      "  lite: sqlite:///lite.db\n  mem: 'duckdb:///:memory:'\n"
                                      "  abs: 'duckdb:////srv/wh.duckdb'\n  drv: 'sqlite+pysqlite:///drv.db'\n"), env={})
    urls = {name: c.url.reveal() for name, c in s.connections.items()}
    assert urls == {"files": f"duckdb:///{tmp_path}/wh.duckdb", "lite": f"sqlite:///{tmp_path}/lite.db",
                    "mem": "duckdb:///:memory:", "abs": "duckdb:////srv/wh.duckdb",
                    "drv": f"sqlite+pysqlite:///{tmp_path}/drv.db"}
    assert s.connections["files"].snapshots == "cs"
