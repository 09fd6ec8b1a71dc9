"""Nothing lost: kills, faults, lost auth, guards and secrets, each proven against real processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import sqlalchemy as sa

from reconciler.moengage.batching import Envelope, pack
from reconciler.state.schema import cohorts, members, runs
from reconciler.state.store import StateStore
from tests.conftest import API_KEY, WORKSPACE
from tests.daemon_process import TOKEN, DaemonProcess, eventually
from tests.helpers import Repo, synced, warehouse

USERS = [f"user-{i:05d}" for i in range(3000)]
PAYLOAD = 2000  # bytes: about 100 uids a request, so a few thousand uids make many batches


def cli(repo: Repo, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "reconciler", args[0], "--config", str(repo.config), *args[1:]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TEST_WS": WORKSPACE, "TEST_KEY": API_KEY, **(env or {})})


def optimal_requests(cohort: str, action: str, uids: list[str]) -> int:
    return sum(1 for _ in pack(Envelope(action, "tests", cohort, f".{cohort}"), uids, PAYLOAD))


@pytest.mark.parametrize("kill_after", [1, 7, 18, 33])
def test_sigkill_after_request_k_then_rerun_converges(tmp_path, start_emulator, kill_after):
    emu = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--latency", "30ms")
    repo = Repo(tmp_path, base_url=emu.url, moengage={"max_payload_bytes": PAYLOAD})
    repo.file_cohort("a", USERS[:2000])
    repo.file_cohort("b", USERS[1000:])
    proc = cli(repo, "apply")
    eventually(lambda: len(emu.requests()) >= kill_after, timeout=30, interval=0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close(), proc.stderr.close()
    assert len(emu.requests()) < optimal_requests("a", "add_members", USERS[:2000]) + 20, "killed too late"
    rerun = cli(repo, "apply")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, out + err
    assert emu.members("a") == USERS[:2000] and emu.members("b") == USERS[1000:]
    ok = [r for r in emu.requests() if r["status"] == 200]
    for cohort, uids in (("a", USERS[:2000]), ("b", USERS[1000:])):
        sent = sum(1 for r in ok if r["cohort_id"] == cohort)
        assert sent <= optimal_requests(cohort, "add_members", uids) + 1, (cohort, sent)  # one batch re-sent at most
    repeat = cli(repo, "plan", "--detailed-exitcode")
    repeat.communicate(timeout=60)
    assert repeat.returncode == 0  # converged: nothing left to send


def test_removals_survive_a_kill_too(tmp_path, start_emulator):
    emu = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--latency", "30ms")
    repo = Repo(tmp_path, base_url=emu.url, moengage={"max_payload_bytes": PAYLOAD})
    repo.file_cohort("a", USERS, guards={"allow_empty": True})
    assert cli(repo, "apply").wait(timeout=120) == 0
    repo.uids("a", USERS[:100])
    before = len(emu.requests())
    proc = cli(repo, "apply", "--force")
    eventually(lambda: len(emu.requests()) >= before + 5, timeout=30, interval=0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close(), proc.stderr.close()
    assert cli(repo, "apply", "--force").wait(timeout=120) == 0
    assert emu.members("a") == USERS[:100]


def test_sigterm_interrupted_apply_exits_1_and_the_next_run_sends_the_rest(tmp_path, start_emulator):
    emu = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--latency", "30ms")
    repo = Repo(tmp_path, base_url=emu.url, moengage={"max_payload_bytes": PAYLOAD})
    repo.file_cohort("a", USERS)
    repo.file_cohort("b", USERS[:500])
    proc = cli(repo, "apply", "--format", "json")
    eventually(lambda: len(emu.requests()) >= 3, timeout=30, interval=0.005)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, out + err
    report = json.loads(out)
    assert [c["result"] for c in report["cohorts"]] == ["interrupted"] and not report["ok"]
    assert "Traceback" not in err and "stopping after the batch in flight" in err
    sent = len(emu.members("a"))
    assert 0 < sent < len(USERS)
    state = StateStore.open(f"sqlite:///{repo.root / 'state.db'}")
    assert state.cohort("a").unconfirmed == 0 and len(synced(state, "a")) == sent  # the batch in flight settled
    state.close()
    rerun = cli(repo, "apply")
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, out + err
    assert emu.members("a") == USERS and emu.members("b") == USERS[:500]


def test_faulty_api_still_converges_in_one_apply(tmp_path, start_emulator, capsys):
    emu = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--error-rate", "0.2", "--drop-rate",
                         "0.05", "--throttle-rate", "0.1", "--retry-after", "0.05", "--latency", "5ms", "--seed", "11")
    repo = Repo(tmp_path, base_url=emu.url, moengage={"max_payload_bytes": PAYLOAD, "max_retries": 10})
    os.environ.update(TEST_WS=WORKSPACE, TEST_KEY=API_KEY)
    try:
        repo.file_cohort("a", USERS[:2500])
        repo.file_cohort("b", USERS[2000:])
        code, out, _ = repo.run(capsys, "apply", "--format", "json")
        assert code == 0, out
        report = json.loads(out)
        assert sum(c["retries"] for c in report["cohorts"]) > 0
        assert sum(c["throttled"] for c in report["cohorts"]) > 0
        assert emu.members("a") == USERS[:2500] and emu.members("b") == USERS[2000:]
        code, out, _ = repo.run(capsys, "history", "--format", "json")
        history = json.loads(out)["runs"]
        assert sum(r["retries"] for r in history) > 0 and sum(r["throttled"] for r in history) > 0
    finally:
        os.environ.pop("TEST_WS"), os.environ.pop("TEST_KEY")


def test_faults_show_in_daemon_metrics(tmp_path, start_emulator):
    from prometheus_client.parser import text_string_to_metric_families
    emu = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--error-rate", "0.3", "--throttle-rate",
                         "0.2", "--retry-after", "0.05", "--seed", "5")
    repo = Repo(tmp_path, base_url=emu.url, moengage={"max_payload_bytes": PAYLOAD, "max_retries": 10})
    repo.file_cohort("a", USERS[:1000])
    daemon = DaemonProcess(repo.config, tmp_path / "d.log", env={"TEST_WS": WORKSPACE, "TEST_KEY": API_KEY})
    try:
        eventually(lambda: emu.members("a") == USERS[:1000], timeout=60)

        def samples() -> dict:
            text = daemon.request("GET", "/metrics")[1].decode()
            return {s.name + json.dumps(s.labels, sort_keys=True): s.value
                    for f in text_string_to_metric_families(text) for s in f.samples}
        eventually(lambda: samples().get('cohortsync_reconciles_total{"result": "converged"}', 0) >= 1)
        samples = samples()
        assert samples['cohortsync_retries_total{}'] > 0
        assert samples['cohortsync_throttled_total{}'] > 0
        assert samples['cohortsync_requests_total{"status": "500"}'] > 0
    finally:
        assert daemon.stop() == 0


def test_auth_lost_mid_run_stops_and_state_holds_what_was_acknowledged(tmp_path, start_emulator):
    emu = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--latency", "20ms")
    repo = Repo(tmp_path, base_url=emu.url, moengage={"max_payload_bytes": PAYLOAD})
    repo.file_cohort("a", USERS)
    proc = cli(repo, "apply")
    eventually(lambda: len(emu.requests()) >= 5, timeout=30, interval=0.005)
    emu.configure(suspended=True)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "HTTP 403" in out and "Stopped" in out
    state = StateStore.open(f"sqlite:///{tmp_path / 'state.db'}")
    try:
        assert list(synced(state, "a")) == emu.members("a")
        assert 0 < len(emu.members("a")) < len(USERS)
        assert state.cohort("a").last_status == "failed"
    finally:
        state.close()


@pytest.mark.parametrize("breakage, message", [
    ("query", "query on 'wh' failed"),
    ("missing", "cannot read"),
])
def test_source_errors_remove_nothing_even_forced(repo, tmp_path, emulator, capsys, breakage, message):
    url, engine = warehouse(tmp_path / 'wh.db', USERS[:50])
    repo.connect("wh", url)
    repo.spec("sql.yaml", "id: sql\nname: .SQL\nsource: {connection: wh, sql: SELECT uid FROM t}\n")
    repo.file_cohort("file", USERS[:50])
    assert repo.run(capsys, "apply")[0] == 0
    if breakage == "query":
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE t")
        cohort = "sql"
    else:
        (repo.cohorts / "uids" / "file.txt").unlink()
        cohort = "file"
    engine.dispose()
    for args in (("apply",), ("apply", "--force")):
        code, out, _ = repo.run(capsys, *args)
        assert code == 1 and message in out
        assert emulator.members(cohort) == USERS[:50]


def test_a_query_that_returns_nothing_is_blocked(repo, tmp_path, emulator, capsys):
    url, engine = warehouse(tmp_path / 'wh.db', USERS[:50])
    repo.connect("wh", url)
    repo.spec("sql.yaml", "id: sql\nname: .SQL\nsource: {connection: wh, sql: SELECT uid FROM t}\n")
    assert repo.run(capsys, "apply")[0] == 0
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM t")
    engine.dispose()
    code, out, _ = repo.run(capsys, "apply")
    assert code == 1 and "blocked" in out and "no uids" in out
    assert emulator.members("sql") == USERS[:50]


def test_secrets_appear_nowhere(tmp_path, emulator, capsys, monkeypatch):
    db_password = "pg-pass-7f3a"
    monkeypatch.setenv("TEST_WS", WORKSPACE)
    monkeypatch.setenv("TEST_KEY", API_KEY)
    monkeypatch.setenv("COHORTSYNC_TOKEN", TOKEN)
    monkeypatch.setenv("COHORTSYNC_CONNECTION_BROKEN", f"postgresql+psycopg://user:{db_password}@127.0.0.1:1/db")
    repo = Repo(tmp_path, base_url=emulator.url)
    repo.file_cohort("a", USERS[:10])
    repo.spec("b.yaml", "id: b\nname: .B\nsource: {connection: broken, sql: SELECT 1}\n")
    seen = []
    for args in (("validate",), ("plan",), ("plan", "--format", "json"), ("plan", "--format", "markdown"),
                 ("apply", "-vv"), ("apply", "--format", "json"), ("status",), ("status", "--format", "json"),
                 ("history",), ("history", "--format", "json")):
        _, out, err = repo.run(capsys, *args)
        seen.append(out + err)
    monkeypatch.setenv("TEST_KEY", "wrong-" + API_KEY)
    _, out, err = repo.run(capsys, "apply", "-vv")
    seen.append(out + err)
    monkeypatch.setenv("TEST_KEY", API_KEY)
    daemon = DaemonProcess(repo.config, tmp_path / "d.log", env={"COHORTSYNC_CONNECTION_BROKEN": os.environ[
        "COHORTSYNC_CONNECTION_BROKEN"], "TEST_WS": WORKSPACE, "TEST_KEY": API_KEY})
    eventually(lambda: "cohort b: error" in daemon.logs())
    for path in ("/status", "/metrics", "/readyz"):
        seen.append(daemon.request("GET", path)[1].decode())
    daemon.request("POST", "/reconcile", headers={"Authorization": "Bearer wrong"})
    assert daemon.stop() == 0
    seen.append(daemon.logs())
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with engine.connect() as conn:
        for table in (cohorts, members, runs):
            seen.append(repr(conn.execute(sa.select(table)).all()))
    engine.dispose()
    text = "\n".join(seen)
    assert "user-00000" in text  # the outputs really were captured
    for secret in (API_KEY, TOKEN, db_password):
        assert secret not in text, secret


def test_daemon_listens_on_loopback_by_default(tmp_path):
    from reconciler.settings.config import load_settings
    assert load_settings(None, env={}).daemon.listen.startswith("127.0.0.1:")
