"""Several MoEngage workspaces: each (workspace, cohort) an independent sync, sent at the same time.

End to end against emulator processes: two workspaces on one emulator and on two; one cohort in
both and one in each; a failing or slow workspace holds up none of the others; a state written
before workspaces keeps every member under `default`.
"""
from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa
import yaml

from reconciler.common.errors import ConfigError
from reconciler.settings.config import load_settings
from reconciler.state.keys import split_key, sync_key
from reconciler.state.schema import SCHEMA_VERSION, meta
from reconciler.state.store import StateStore
from tests.conftest import API_KEY, WORKSPACE
from tests.helpers import Repo

LIVE_WS, LIVE_KEY = "WS_LIVE_5678", "live-key-DO-NOT-LOG"
USERS = [f"u{i:05d}" for i in range(3000)]


@pytest.fixture
def live_env(monkeypatch):
    monkeypatch.setenv("TEST_WS", WORKSPACE)
    monkeypatch.setenv("TEST_KEY", API_KEY)
    monkeypatch.setenv("MOENGAGE_LIVE_WORKSPACE_ID", LIVE_WS)  # the default place of a named workspace's credentials
    monkeypatch.setenv("MOENGAGE_LIVE_API_KEY", LIVE_KEY)


def two_workspaces(tmp_path, default_url: str, live_url: str, **live: object) -> Repo:
    repo = Repo(tmp_path, base_url=default_url, workspaces={"live": {"base_url": live_url, "max_retries": 1, **live}})
    repo.file_cohort("both", USERS[:1000], workspaces=["default", "live"])
    repo.file_cohort("only_default", USERS[1000:1500])
    repo.file_cohort("only_live", USERS[1500:2500], workspaces=["live"])
    return repo


def test_two_workspaces_on_one_emulator_converge_independently(tmp_path, start_emulator, live_env, capsys):
    emu = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--workspace-id", LIVE_WS,
                         "--api-key", LIVE_KEY)
    repo = two_workspaces(tmp_path, emu.url, emu.url)
    code, out, err = repo.run(capsys, "apply")
    assert code == 0, out + err
    assert set(emu.segments(WORKSPACE)) == {"both", "only_default"}
    assert set(emu.segments(LIVE_WS)) == {"both", "only_live"}
    assert emu.members("both", WORKSPACE) == emu.members("both", LIVE_WS) == USERS[:1000]
    assert emu.members("only_live", LIVE_WS) == USERS[1500:2500]
    assert "live:both" in out and "LIVE_KEY" not in out and LIVE_KEY not in out + err

    repo.uids("both", USERS[500:1200])
    code, out, _ = repo.run(capsys, "plan", "--format", "json")
    plans = {(c["workspace"], c["id"]): c for c in json.loads(out)["cohorts"]}
    assert (plans["default", "both"]["adds"], plans["default", "both"]["removes"]) == (200, 500)
    assert (plans["live", "both"]["adds"], plans["live", "both"]["removes"]) == (200, 500)
    assert plans["live", "only_live"]["status"] == "unchanged"

    assert repo.run(capsys, "apply", "--workspace", "live")[0] == 0  # one workspace at a time, as a release might
    assert emu.members("both", LIVE_WS) == USERS[500:1200] and emu.members("both", WORKSPACE) == USERS[:1000]
    code, out, _ = repo.run(capsys, "plan", "--workspace", "default")
    assert "both" in out and "only_live" not in out
    assert repo.run(capsys, "apply")[0] == 0
    assert emu.members("both", WORKSPACE) == USERS[500:1200]

    code, out, _ = repo.run(capsys, "status", "--workspace", "live", "--format", "json")
    rows = json.loads(out)["cohorts"]
    assert {(r["workspace"], r["cohort"]) for r in rows} == {("live", "both"), ("live", "only_live")}
    code, out, _ = repo.run(capsys, "history", "--cohort", "both", "--format", "json")
    assert {split_key(r["cohort_id"])[0] for r in json.loads(out)["runs"]} == {"default", "live"}


def test_a_failing_workspace_stops_none_of_the_others(tmp_path, start_emulator, live_env, capsys):
    default = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY)
    live = start_emulator("--workspace-id", LIVE_WS, "--api-key", LIVE_KEY, "--suspended")  # 403: nothing passes
    repo = two_workspaces(tmp_path, default.url, live.url)
    code, out, err = repo.run(capsys, "apply")
    assert code == 1 and "workspace live" in out + err
    assert default.members("both") == USERS[:1000] and default.members("only_default") == USERS[1000:1500]
    assert live.segments() == {}


def test_a_slow_workspace_holds_up_none_of_the_others(tmp_path, start_emulator, live_env, capsys):
    default = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY)
    live = start_emulator("--workspace-id", LIVE_WS, "--api-key", LIVE_KEY, "--rate-limit", "2/1s")
    repo = two_workspaces(tmp_path, default.url, live.url, max_payload_bytes=2048, rate_limit="2/1s")
    started = time.time()
    code, out, err = repo.run(capsys, "apply")
    assert code == 0, out + err
    default_done = max(r["time"] for r in default.requests())
    live_times = [r["time"] for r in live.requests()]
    assert len(live_times) > 10 and max(live_times) - started > 4  # throttled to 2 a second
    assert default_done - started < 3 and default_done < max(live_times) - 3  # done long before live
    assert live.members("only_live") == USERS[1500:2500] and default.members("both") == USERS[:1000]


def test_a_state_from_before_workspaces_keeps_every_member_under_default(tmp_path, start_emulator, live_env, capsys):
    emu = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY)
    repo = Repo(tmp_path, base_url=emu.url)
    repo.file_cohort("beta", USERS[:500])
    assert repo.run(capsys, "apply")[0] == 0
    state = StateStore.open(f"sqlite:///{repo.root / 'state.db'}")
    with state.engine.begin() as conn:  # what schema version 2 wrote
        conn.exec_driver_sql("DROP TABLE cs_batches")
        conn.exec_driver_sql("ALTER TABLE cs_runs DROP COLUMN unconfirmed")
        conn.execute(meta.update().where(meta.c.key == "schema_version").values(value="2"))
    state.close()
    before = len(emu.requests())
    code, out, _ = repo.run(capsys, "plan", "--detailed-exitcode")
    assert code == 0, out  # nothing to send: every member is known, under default
    state = StateStore.open(f"sqlite:///{repo.root / 'state.db'}")
    assert state.schema_version() == SCHEMA_VERSION and state.cohort("beta").workspace == "default"
    assert state.cohort("beta").synced_count == 500
    state.close()
    assert len(emu.requests()) == before


def test_keys_name_the_workspace_except_default():
    assert sync_key("default", "beta") == "beta" and sync_key("live", "beta") == "live:beta"
    assert split_key("beta") == ("default", "beta") and split_key("live:beta") == ("live", "beta")


def write_config(tmp_path, doc: dict) -> str:
    path = tmp_path / "cohortsync.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_workspaces_in_the_config(tmp_path):
    env = {"MOENGAGE_LIVE_WORKSPACE_ID": "L1", "MOENGAGE_LIVE_API_KEY": "lk", "MOENGAGE_WORKSPACE_ID": "D1"}
    settings = load_settings(write_config(tmp_path, {"workspaces": {
        "live": {"dc": "02", "rate_limit": "100/60s"}, "test": {"workspace_id": "T1", "api_key": "tk"}}}), env=env)
    assert list(settings.accounts) == ["default", "live", "test"]
    live = settings.account("live")
    assert (live.workspace_id, live.api_key.reveal(), live.url, live.rate_limit.requests) == (
        "L1", "lk", "https://api-02.moengage.com/v1/integrations/cohortsync", 100)
    assert settings.account("default").workspace_id == "D1" and settings.account("test").workspace_id == "T1"
    with pytest.raises(ConfigError, match="workspaces.default"):
        load_settings(write_config(tmp_path, {"workspaces": {"default": {}}}), env={})
    with pytest.raises(ConfigError, match="workspaces"):
        load_settings(write_config(tmp_path, {"workspaces": {"Bad-Name": {}}}), env={})
    with pytest.raises(ConfigError, match="max_payload_bytes"):
        load_settings(write_config(tmp_path, {"workspaces": {"live": {"max_payload_bytes": 10}}}), env={})


def test_a_spec_naming_an_unknown_workspace_is_an_error_naming_the_file_and_field(tmp_path, capsys):
    repo = Repo(tmp_path)
    repo.file_cohort("beta", USERS[:5], workspaces=["nowhere"])
    code, _, err = repo.run(capsys, "validate")
    assert code == 1 and "beta.yaml" in err and "workspaces" in err and "nowhere" in err


def test_apply_needs_the_credentials_of_every_workspace_it_sends_to(tmp_path, start_emulator, capsys, monkeypatch):
    emu = start_emulator()
    monkeypatch.setenv("TEST_WS", WORKSPACE)
    monkeypatch.setenv("TEST_KEY", API_KEY)
    repo = Repo(tmp_path, base_url=emu.url, workspaces={"live": {"base_url": emu.url}})
    repo.file_cohort("beta", USERS[:5], workspaces=["live"])
    code, _, err = repo.run(capsys, "apply")
    assert code == 1 and "MOENGAGE_LIVE_WORKSPACE_ID" in err and emu.requests() == []
    assert repo.run(capsys, "plan")[0] == 0  # planning needs no credentials


def test_the_emulator_keeps_segments_per_workspace(start_emulator, tmp_path):
    creds = tmp_path / "creds.txt"
    creds.write_text("# id:key\nWS_A:ka\nWS_B:kb\n")
    emu = start_emulator("--credentials", str(creds))
    import base64
    import urllib.request
    for ws, key in (("WS_A", "ka"), ("WS_B", "kb")):
        body = json.dumps({"action": "add_members", "partner": "t", "parameters": {
            "cohort_name": ".same", "cohort_id": "same", "members": [{"uid": ws.lower()}]}}).encode()
        req = urllib.request.Request(emu.url + "/v1/integrations/cohortsync", data=body, headers={
            "Authorization": "Basic " + base64.b64encode(f"{ws}:{key}".encode()).decode(), "MOE-APPKEY": ws,
            "Content-Type": "application/json"})
        assert urllib.request.urlopen(req, timeout=10).status == 200
    assert emu.members("same", "WS_A") == ["ws_a"] and emu.members("same", "WS_B") == ["ws_b"]
    with pytest.raises(Exception, match="409"):
        emu.members("same")  # in two workspaces: the inspection API asks which
    assert {(s["workspace"], s["size"]) for s in emu.get("/_emulator/cohorts")["cohorts"]} == {("WS_A", 1), ("WS_B", 1)}


def test_runs_of_a_cohort_are_found_in_every_workspace_and_ids_with_wildcards_match_exactly(tmp_path):
    from reconciler.state.records import RunRecord
    state = StateStore.open(f"sqlite:///{tmp_path / 's.db'}")
    for key in ("a_b", "live:a_b", "live:aXb", "test:zz"):
        state.record_run(RunRecord("r", key, "converged", started_at=1.0))
    assert sorted(r.cohort_id for r in state.runs("a_b")) == ["a_b", "live:a_b"]
    assert [r.cohort_id for r in state.runs("a_b", workspaces=["live"])] == ["live:a_b"]
    assert sorted(r.cohort_id for r in state.runs(workspaces=["default", "test"])) == ["a_b", "test:zz"]
    with state.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM cs_runs")).scalar_one() == 4
    state.close()


def test_a_daemon_for_one_workspace_leaves_the_others_alone(tmp_path, start_emulator, live_env):
    """The flow the README describes: pull requests apply to `test` from CI, the daemon keeps `live`."""
    from tests.daemon_process import DaemonProcess, eventually
    emu = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--workspace-id", LIVE_WS,
                         "--api-key", LIVE_KEY)
    repo = two_workspaces(tmp_path, emu.url, emu.url)
    daemon = DaemonProcess(repo.config, tmp_path / "daemon.log", args=["--workspace", "live"])
    try:
        eventually(lambda: emu.members("only_live", LIVE_WS) == USERS[1500:2500] and
                   emu.members("both", LIVE_WS) == USERS[:1000])
        assert emu.segments(WORKSPACE) == {}  # the default workspace is not this daemon's
        rows = daemon.get_json("/status")["cohorts"]
        assert {r["workspace"] for r in rows} == {"live"}
    finally:
        assert daemon.stop() == 0
