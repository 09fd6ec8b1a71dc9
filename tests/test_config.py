"""The operator config: file, ${VAR} expansion, environment overrides, errors naming the key."""
from __future__ import annotations

import pytest

from reconciler.settings.config import load_settings, require_credentials
from reconciler.common.errors import ConfigError
from reconciler.settings.model import RateLimit, parse_duration


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
    assert s.connections["warehouse"].reveal() == f"sqlite:///{tmp_path}/wh.db"
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
    assert s.connections["sales"].reveal().endswith("/sales.db") and s.moengage.max_payload_bytes == 64000
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
