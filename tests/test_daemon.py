"""`cohortsync run` as a process against the emulator: files, timers, triggers, lease, signals."""
from __future__ import annotations

import hashlib
import hmac
import json
import signal
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reconciler.cli.main import main
from tests.conftest import API_KEY, WORKSPACE
from tests.daemon_process import TOKEN, eventually
from tests.helpers import Repo, warehouse

USERS = [f"u{i:04d}" for i in range(1, 2001)]


def runs_of(repo: Repo, capsys, cohort: str) -> int:
    code = main(["history", "--config", str(repo.config), "--cohort", cohort, "--limit", "1000", "--format", "json"])
    out, _ = capsys.readouterr()
    assert code == 0
    return len(json.loads(out)["runs"])


def test_converges_on_start_then_follows_a_file_edit(tmp_path, emulator, daemons):
    repo = Repo(tmp_path, base_url=emulator.url)
    repo.file_cohort("beta", USERS[:100])
    repo.file_cohort("vip", USERS[:10])
    daemon = daemons(repo)
    eventually(lambda: emulator.members("beta") == USERS[:100] and emulator.members("vip") == USERS[:10])
    repo.uids("beta", USERS[50:150])
    took = eventually(lambda: emulator.members("beta") == USERS[50:150])
    assert took < 0.3 + 5, took
    assert daemon.get_json("/status")["cohorts"][0]["id"] == "beta"
    assert daemon.stop() == 0


def test_big_cohorts_are_planned_with_the_helper_and_comm_in_the_daemon(tmp_path, emulator, daemons):
    """With every synced cohort counted as big, the worker thread runs the state reader and GNU
    comm (or the Python merge without them); the daemon converges and stops cleanly."""
    repo = Repo(tmp_path, base_url=emulator.url)
    repo.file_cohort("beta", USERS[:300])
    daemon = daemons(repo, COHORTSYNC_PARALLEL_PLAN_MIN="1")
    eventually(lambda: emulator.members("beta") == USERS[:300])
    wanted = USERS[100:400]
    repo.uids("beta", wanted[::-1] + wanted[:50])  # unsorted, with duplicates
    eventually(lambda: emulator.members("beta") == wanted)
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.logs()


def test_a_burst_of_writes_makes_one_reconcile(tmp_path, emulator, daemons, capsys):
    repo = Repo(tmp_path, base_url=emulator.url)
    repo.file_cohort("beta", USERS[:10])
    daemon = daemons(repo, COHORTSYNC_DEBOUNCE="1s")
    eventually(lambda: emulator.members("beta") == USERS[:10])
    before = runs_of(repo, capsys, "beta")
    for i in range(50):
        repo.uids("beta", USERS[: 11 + i])
        (repo.cohorts / ".beta.txt.swp").write_text("editor noise")
        time.sleep(0.005)
    eventually(lambda: emulator.members("beta") == USERS[:60])
    time.sleep(1.5)  # anything else the burst caused would have run by now
    assert runs_of(repo, capsys, "beta") == before + 1
    assert daemon.stop() == 0


def test_timer_picks_up_a_changed_table(tmp_path, emulator, daemons):
    url, engine = warehouse(tmp_path / 'wh.db', USERS[:5])
    repo = Repo(tmp_path, base_url=emulator.url, connections={"wh": url})
    repo.spec("sql.yaml", "id: sql\nname: .SQL\nschedule: 1s\nsource: {connection: wh, sql: SELECT uid FROM t}\n")
    daemon = daemons(repo)
    eventually(lambda: emulator.members("sql") == USERS[:5])
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES ('u9999')")
    engine.dispose()
    eventually(lambda: emulator.members("sql") == [*USERS[:5], "u9999"], timeout=10)
    assert daemon.stop() == 0


def test_reconcile_endpoint_auth_and_metrics(tmp_path, emulator, daemons):
    url, engine = warehouse(tmp_path / 'wh.db', ['a'])
    repo = Repo(tmp_path, base_url=emulator.url, connections={"wh": url})
    repo.spec("sql.yaml", "id: sql\nname: .SQL\nschedule: 1h\nsource: {connection: wh, sql: SELECT uid FROM t}\n")
    daemon = daemons(repo, COHORTSYNC_WEBHOOK_SECRET="hook-secret")
    eventually(lambda: emulator.members("sql") == ["a"])
    assert daemon.request("POST", "/reconcile")[0] == 401
    assert daemon.trigger(token="wrong") == 401
    assert daemon.request("POST", "/reconcile", b"x" * (2 << 20), {"Authorization": f"Bearer {TOKEN}"})[0] == 413

    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES ('b')")
    assert daemon.trigger("sql") == 202
    eventually(lambda: emulator.members("sql") == ["a", "b"])

    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO t VALUES ('c')")
    engine.dispose()
    body = b'{"ref": "refs/heads/main"}'
    sig = "sha256=" + hmac.new(b"hook-secret", body, hashlib.sha256).hexdigest()
    assert daemon.request("POST", "/reconcile", body, {"X-Hub-Signature-256": "sha256=" + "0" * 64})[0] == 401
    assert daemon.request("POST", "/reconcile", body, {"X-Hub-Signature-256": sig, "X-GitHub-Event": "push"})[0] == 202
    eventually(lambda: emulator.members("sql") == ["a", "b", "c"])

    assert daemon.request("GET", "/healthz")[0] == 200
    assert daemon.request("GET", "/readyz")[0] == 200
    def families() -> dict:
        return {f.name: f for f in text_string_to_metric_families(daemon.request("GET", "/metrics")[1].decode())}

    def added_sql() -> float:  # metrics are updated when the run ends, a moment after the last batch
        return sum(s.value for s in families()["cohortsync_members_added"].samples
                   if s.name.endswith("_total") and s.labels.get("cohort") == "sql")
    eventually(lambda: added_sql() == 3)
    families = families()
    assert {"cohortsync_reconciles", "cohortsync_members_added", "cohortsync_requests", "cohortsync_synced_members",
            "cohortsync_last_success_timestamp_seconds", "cohortsync_reconcile_duration_seconds",
            "cohortsync_retries", "cohortsync_rate_limit_waits", "cohortsync_triggers"} <= set(families)
    added = {s.labels.get("cohort"): s.value for s in families["cohortsync_members_added"].samples
             if s.name.endswith("_total")}
    assert added["sql"] == 3
    synced = {s.labels["cohort"]: s.value for s in families["cohortsync_synced_members"].samples}
    assert synced["sql"] == 3
    assert TOKEN not in daemon.logs() and "hook-secret" not in daemon.logs() and API_KEY not in daemon.logs()
    assert daemon.stop() == 0


def test_apply_refuses_while_run_holds_the_lease(tmp_path, emulator, daemons, capsys):
    repo = Repo(tmp_path, base_url=emulator.url)
    repo.file_cohort("beta", USERS[:5])
    daemon = daemons(repo)
    eventually(lambda: emulator.members("beta") == USERS[:5])
    code, _, err = repo.run(capsys, "apply")
    assert code == 1 and "another writer holds the state lease" in err and "run-" in err
    assert daemon.stop() == 0
    assert repo.run(capsys, "apply")[0] == 0  # released on a clean exit


def test_a_second_run_on_sqlite_is_refused_with_the_reason(tmp_path, emulator, daemons):
    repo = Repo(tmp_path, base_url=emulator.url)
    repo.file_cohort("beta", USERS[:5])
    first = daemons(repo)
    with pytest.raises(RuntimeError, match="SQLite allows one writer"):
        daemons(repo)
    assert first.stop() == 0


def test_a_dead_holders_lease_expires(tmp_path, emulator, daemons, capsys):
    from reconciler.state.leases import Lease
    from reconciler.state.store import StateStore
    repo = Repo(tmp_path, base_url=emulator.url)
    repo.file_cohort("beta", USERS[:5])
    state = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    Lease(state, "ghost", ttl=1).acquire()  # a holder that dies without releasing
    code, _, err = repo.run(capsys, "apply")
    assert code == 1 and "ghost-" in err
    time.sleep(1.1)
    assert repo.run(capsys, "apply")[0] == 0
    state.close()


def test_sigterm_during_a_long_apply_exits_0_and_nothing_is_lost(tmp_path, start_emulator, daemons):
    emulator = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--latency", "50ms")
    repo = Repo(tmp_path, base_url=emulator.url, moengage={"max_payload_bytes": 1500})
    repo.file_cohort("big", USERS)  # about 200 requests at 50 ms each
    daemon = daemons(repo)
    eventually(lambda: len(emulator.requests()) >= 20)
    started = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5
    partial = emulator.members("big")
    assert 0 < len(partial) < len(USERS)
    assert "interrupted" in daemon.logs()
    again = daemons(repo)
    eventually(lambda: emulator.members("big") == USERS, timeout=60)
    assert again.stop() == 0


def test_broken_spec_mid_edit_keeps_members_and_others_go_on(tmp_path, emulator, daemons):
    repo = Repo(tmp_path, base_url=emulator.url)
    repo.file_cohort("beta", USERS[:5])
    repo.file_cohort("vip", USERS[:3])
    daemon = daemons(repo, COHORTSYNC_PRUNE="true")
    eventually(lambda: emulator.members("beta") == USERS[:5] and emulator.members("vip") == USERS[:3])
    (repo.cohorts / "beta.yaml").write_text("id: beta\nname: .beta\nsource: {file: uids/beta.txt\n")
    repo.uids("vip", USERS[:4])
    eventually(lambda: emulator.members("vip") == USERS[:4])
    eventually(lambda: "beta.yaml" in daemon.logs() and "invalid YAML" in daemon.logs())
    assert emulator.members("beta") == USERS[:5]
    assert daemon.stop() == 0


def test_deleted_spec_is_orphaned_not_emptied(tmp_path, emulator, daemons):
    repo = Repo(tmp_path, base_url=emulator.url)
    repo.file_cohort("beta", USERS[:5])
    daemon = daemons(repo)
    eventually(lambda: emulator.members("beta") == USERS[:5])
    (repo.cohorts / "beta.yaml").unlink()
    eventually(lambda: "cohort beta: orphaned" in daemon.logs())
    assert emulator.members("beta") == USERS[:5]
    assert daemon.stop() == 0


def test_trigger_command(tmp_path, emulator, daemons, capsys, monkeypatch):
    repo = Repo(tmp_path, base_url=emulator.url)
    repo.file_cohort("beta", USERS[:5])
    daemon = daemons(repo)
    monkeypatch.setenv("COHORTSYNC_TOKEN", TOKEN)
    code, out, _ = repo.run(capsys, "trigger", "--url", daemon.url, "--cohort", "beta")
    assert code == 0 and "accepted" in out
    monkeypatch.setenv("COHORTSYNC_TOKEN", "nope")
    code, _, err = repo.run(capsys, "trigger", "--url", daemon.url)
    assert code == 1 and "401" in err
    assert daemon.stop() == 0


def test_json_logs(tmp_path, emulator, env):
    import subprocess
    import sys
    repo = Repo(tmp_path, base_url=emulator.url)
    repo.file_cohort("beta", USERS[:5])
    log = tmp_path / "json.log"
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "run", "--config", str(repo.config), "--log-format",
                             "json"], stdout=subprocess.PIPE, stderr=open(log, "wb"), text=True,
                            env={**__import__("os").environ, **env, "COHORTSYNC_LISTEN": "127.0.0.1:0"})
    proc.stdout.readline()
    eventually(lambda: emulator.members("beta") == USERS[:5])
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    proc.stdout.close()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert any(rec["message"].startswith("cohort beta: converged") for rec in lines)
    assert all({"time", "level", "logger", "message"} <= set(rec) for rec in lines)


def test_sighup_reloads_the_config(tmp_path, emulator, daemons):
    repo = Repo(tmp_path, base_url=emulator.url)
    repo.file_cohort("beta", USERS[:5])
    daemon = daemons(repo)
    eventually(lambda: emulator.members("beta") == USERS[:5])
    daemon.proc.send_signal(signal.SIGHUP)
    eventually(lambda: "config reloaded" in daemon.logs())
    repo.uids("beta", USERS[:6])
    eventually(lambda: emulator.members("beta") == USERS[:6])
    assert daemon.stop() == 0


def test_trigger_pulls_the_repository_first(tmp_path, emulator, daemons):
    import subprocess

    def git(cwd, *args):
        subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True,
                       env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
                            "GIT_COMMITTER_EMAIL": "t@x", "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})

    origin = Repo(tmp_path / "origin", base_url=emulator.url)
    origin.file_cohort("beta", USERS[:5])
    git(origin.root, "init", "-q", "-b", "main")
    git(origin.root, "add", "cohorts")
    git(origin.root, "commit", "-qm", "first")
    git(tmp_path, "clone", "-q", str(origin.root), "clone")
    clone = Repo(tmp_path / "clone", base_url=emulator.url, daemon={"git_pull": True})
    daemon = daemons(clone, COHORTSYNC_INTERVAL="1h")
    eventually(lambda: emulator.members("beta") == USERS[:5])
    origin.uids("beta", USERS[:8])
    git(origin.root, "commit", "-qam", "more beta testers")
    assert daemon.trigger() == 202
    eventually(lambda: emulator.members("beta") == USERS[:8])
    assert "git pull --ff-only done" in daemon.logs()
    assert daemon.stop() == 0


def test_a_sqlite_warehouse_replaced_by_rename_is_read_anew_on_the_next_timer(tmp_path, emulator, daemons):
    """The usual export: build a new file beside the old one, then rename it into place."""
    live = tmp_path / "wh.db"
    url, engine = warehouse(live, USERS[:5])
    engine.dispose()
    repo = Repo(tmp_path, base_url=emulator.url).connect("wh", url)
    repo.spec("sql.yaml", "id: sql\nname: .SQL\nschedule: 1s\nsource: {connection: wh, sql: SELECT uid FROM t}\n")
    daemons(repo)
    eventually(lambda: emulator.members("sql") == USERS[:5])
    _, engine = warehouse(tmp_path / "wh.db.new", USERS[3:9])
    engine.dispose()
    (tmp_path / "wh.db.new").replace(live)
    eventually(lambda: emulator.members("sql") == USERS[3:9], timeout=20)
