"""Alerts: which events a run makes, and their delivery to real receivers on loopback."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import time
from collections.abc import Iterator

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from reconciler.common.statuses import Status
from reconciler.notify.events import Event, events_of, wants
from reconciler.notify.sending import DeliveryFailed, Notifier, label, signature
from reconciler.planning.plans import CohortPlan
from reconciler.running.applying import CohortOutcome
from reconciler.running.reconciling import RunReport
from reconciler.settings.config import load_settings
from reconciler.settings.model import AlertingSettings, NotifyTarget, Secret
from reconciler.state.records import CohortRecord
from tests.daemon_process import DaemonProcess, eventually
from tests.helpers import Repo
from tests.receiver import Receiver

HOOK_SECRET = "hook-s3cr3t-never-printed"
USERS = [f"u{i:03d}" for i in range(50)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def record(status: str | None) -> CohortRecord:
    return CohortRecord("c", ".c", None, None, None, 10, False, None, None, status, None)


@pytest.mark.parametrize("before, result, kind", [
    (None, Status.CONVERGED, None),
    (None, Status.FAILED, "failed"),
    ("converged", Status.FAILED, "failed"),
    ("failed", Status.FAILED, None),  # still failing: said once already
    ("failed", Status.CONVERGED, "recovered"),
    ("failed", Status.UNCHANGED, "recovered"),
    ("failed", Status.BLOCKED, "blocked"),  # another problem is news
    ("blocked", Status.BLOCKED, None),
    ("error", Status.ERROR, None),
    ("converged", Status.ERROR, "error"),
    ("unconfirmed", Status.CONVERGED, "recovered"),
    ("converged", Status.UNCONFIRMED, "unconfirmed"),
    ("failed", Status.INTERRUPTED, None),  # a shutdown is nobody's problem, nor a recovery
])
def test_alerts_are_sent_on_a_change_of_state(before, result, kind):
    plan = CohortPlan("c", ".c", Status.CHANGED, desired=12, synced=10, adds=2)
    report = RunReport("run1", [CohortOutcome(plan, result, sent_adds=2)], before={"c": record(before)} if before else {})
    events = events_of(report)
    assert [e.kind for e in events] == ([kind] if kind else [])
    if kind:
        assert events[0].run_id == "run1" and events[0].workspace == "default" and events[0].counts["sent_adds"] == 2
    report.dry_run = True
    assert events_of(report) == []


def test_targets_filter_by_kind_and_cohort_glob():
    target = NotifyTarget(Secret("json://x"), events=("failed",), cohorts=("beta*",))
    assert wants(target, Event("failed", "beta_eu"))
    assert not wants(target, Event("failed", "vip")) and not wants(target, Event("recovered", "beta_eu"))
    assert wants(target, Event("test", None))


def test_repeats_are_deduplicated_within_the_window_and_the_worker_never_blocks_emit():
    sent: list[str] = []
    now = [1000.0]

    def slow_send(target: NotifyTarget, event: Event, timeout: float) -> None:
        time.sleep(0.3)
        sent.append(event.kind)

    notifier = Notifier((NotifyTarget(Secret("json://x")),), AlertingSettings(window=3600, retries=0),
                        send=slow_send, clock=lambda: now[0])
    started = time.monotonic()
    for _ in range(3):
        notifier.emit(Event("failed", "c"))
    notifier.emit(Event("recovered", "c"))
    assert time.monotonic() - started < 0.1  # the sends happen on the worker
    now[0] += 3601
    notifier.emit(Event("failed", "c"))
    notifier.close(timeout=5)
    assert sent == ["failed", "recovered", "failed"]
    assert notifier.snapshot()[("notify[0] json", "deduplicated")] == 2


def test_a_failing_target_is_retried_then_counted_and_logged_without_its_url(caplog):
    tries: list[float] = []

    def refuse(target: NotifyTarget, event: Event, timeout: float) -> None:
        tries.append(time.monotonic())
        raise DeliveryFailed("answered HTTP 500")

    target = NotifyTarget(Secret("https://hooks.example/T0K3N"), secret=Secret(HOOK_SECRET))
    notifier = Notifier((target,), AlertingSettings(retries=1), send=refuse)
    notifier.emit(Event("failed", "c"))
    notifier.close(timeout=5)
    assert len(tries) == 2 and tries[1] - tries[0] >= 0.9  # one retry, after the first backoff
    counts = notifier.snapshot()
    assert counts[(label(0, target), "retried")] == 1 and counts[(label(0, target), "failed")] == 1
    assert "T0K3N" not in caplog.text and HOOK_SECRET not in caplog.text and "notify[0] https" in caplog.text


def alerting_repo(tmp_path, emulator, monkeypatch, receiver: Receiver, **targets: object) -> Repo:
    from tests.conftest import API_KEY, WORKSPACE
    monkeypatch.setenv("TEST_WS", WORKSPACE)
    monkeypatch.setenv("TEST_KEY", API_KEY)
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    notify = [{"url": f"json://127.0.0.1:{receiver.port}/apprise"},
              {"url": f"http://127.0.0.1:{receiver.port}/hook", "secret": "${HOOK_SECRET}"}]
    return Repo(tmp_path, base_url=emulator.url, notify=notify, alerting={"timeout": "2s", "retries": 0})


def test_failing_three_times_then_recovering_sends_two_events_to_each_target(tmp_path, emulator, monkeypatch,
                                                                            receiver, capsys):
    repo = alerting_repo(tmp_path, emulator, monkeypatch, receiver)
    repo.file_cohort("beta", USERS[:10])
    emulator.configure(suspended=True)  # 403: the cohort fails
    outputs = []
    for _ in range(3):
        code, out, err = repo.run(capsys, "apply")
        assert code == 1
        outputs.append(out + err)
    emulator.configure(suspended=False)
    code, out, err = repo.run(capsys, "apply")
    assert code == 0
    assert [b["title"] for b in receiver.bodies("/apprise")] == ["cohortsync: failed: beta", "cohortsync: recovered: beta"]
    hooks = [(headers, body) for path, headers, body in receiver.posts if path == "/hook"]
    assert [h["X-Cohortsync-Event"] for h, _ in hooks] == ["failed", "recovered"]
    for headers, body in hooks:
        expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Cohortsync-Signature"], expected)
        assert headers["X-Cohortsync-Signature"] == signature(HOOK_SECRET, body)
    failed, recovered = receiver.bodies("/hook")
    assert failed["cohort"] == "beta" and failed["workspace"] == "default" and failed["run_id"]
    assert "403" in failed["reason"] or "suspended" in failed["reason"].lower()
    assert recovered["previous"] == "failed" and recovered["counts"]["sent_adds"] == 10
    for text in outputs + [out + err]:
        assert HOOK_SECRET not in text and str(receiver.port) not in text
    settings = load_settings(str(repo.config))
    assert HOOK_SECRET not in repr(settings) and str(receiver.port) not in repr(settings)


def test_a_guard_blocked_plan_sends_blocked(tmp_path, emulator, monkeypatch, receiver, capsys):
    repo = alerting_repo(tmp_path, emulator, monkeypatch, receiver)
    repo.file_cohort("beta", USERS[:20], guards={"max_removals": 2})
    assert repo.run(capsys, "apply")[0] == 0
    repo.uids("beta", USERS[:10])
    assert repo.run(capsys, "apply")[0] == 1
    (blocked,) = receiver.bodies("/hook")
    assert blocked["kind"] == "blocked" and "max_removals" in blocked["reason"]
    assert blocked["counts"]["removes"] == 10


def test_notify_test_names_each_target_and_which_took_it(tmp_path, emulator, monkeypatch, receiver, capsys):
    repo = alerting_repo(tmp_path, emulator, monkeypatch, receiver)
    code, out, _ = repo.run(capsys, "notify", "test")
    assert code == 0 and out.splitlines() == ["notify[0] json: sent", "notify[1] http: sent"]
    assert [b["kind"] for b in receiver.bodies("/hook")] == ["test"]
    receiver.close()
    code, out, _ = repo.run(capsys, "notify", "test", "--target", "1")
    assert code == 1 and out.startswith("notify[1] http: failed: no answer") and str(receiver.port) not in out


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that takes connections and never answers: the slowest a dead receiver can be."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


def samples(daemon: DaemonProcess, name: str) -> dict[tuple, float]:
    text = daemon.request("GET", "/metrics")[1].decode()
    return {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == name}


def test_a_receiver_that_is_down_never_delays_the_daemon_and_shows_in_metrics(tmp_path, emulator, monkeypatch,
                                                                              receiver, black_hole):
    """Targets: the loopback receiver, and a port that never answers (timeout 1 s, one retry)."""
    repo = alerting_repo(tmp_path, emulator, monkeypatch, receiver)
    config = yaml.safe_load(repo.config.read_text())
    config["notify"][1]["url"] = f"http://127.0.0.1:{black_hole}/hook"
    config["alerting"] = {"timeout": "1s", "retries": 1}
    repo.config.write_text(yaml.safe_dump(config))
    repo.file_cohort("beta", USERS[:10])
    emulator.configure(suspended=True)
    daemon = DaemonProcess(repo.config, tmp_path / "daemon.log", env=dict(os.environ))
    try:
        eventually(lambda: samples(daemon, "cohortsync_notifications_total").get(
            (("result", "failed"), ("target", "notify[1] http"))) == 1, timeout=20)
        assert samples(daemon, "cohortsync_notifications_total")[(("result", "sent"), ("target", "notify[0] json"))] == 1
        durations = samples(daemon, "cohortsync_reconcile_duration_seconds_sum")
        assert 0 < durations[()] < 1.0  # the reconcile never waited for the dead receiver (timeout: 1 s)
        emulator.configure(suspended=False)
        daemon.trigger()
        eventually(lambda: [b["title"] for b in receiver.bodies("/apprise")][-1:] == ["cohortsync: recovered: beta"])
    finally:
        assert daemon.stop() == 0
    assert receiver.bodies("/apprise")[-1]["title"] == "cohortsync: daemon_stopped"
    logs = daemon.logs()
    assert "notify[1] http" in logs and str(black_hole) not in logs and HOOK_SECRET not in logs


def test_the_daemon_resyncs_on_schedule(tmp_path, emulator, monkeypatch, capsys):
    from tests.conftest import API_KEY, WORKSPACE
    monkeypatch.setenv("TEST_WS", WORKSPACE)
    monkeypatch.setenv("TEST_KEY", API_KEY)
    repo = Repo(tmp_path, base_url=emulator.url)
    repo.file_cohort("beta", USERS[:10], resync="1s")
    daemon = DaemonProcess(repo.config, tmp_path / "daemon.log", env=dict(os.environ))
    try:
        eventually(lambda: emulator.members("beta") == USERS[:10])
        emulator.edit("beta", remove=USERS[:5])  # by hand: only a resync sees it
        eventually(lambda: emulator.members("beta") == USERS[:10], timeout=20)
    finally:
        assert daemon.stop() == 0
    code, out, _ = repo.run(capsys, "history", "--cohort", "beta", "--format", "json")
    assert code == 0 and "resync" in {r["trigger"] for r in json.loads(out)["runs"]}
