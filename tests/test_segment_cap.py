"""A workspace holds at most 1,000 active custom segments: one more is a 429 that is no rate limit.

The emulator answers it as MoEngage does; the client fails that cohort at once (no retry loop) with a
message that says why; validate and plan warn when the specs define more cohorts than the cap.
"""
from __future__ import annotations

import json

import pytest

from reconciler.common.errors import CohortApiError
from reconciler.specs.cohorts import cap_warnings
from reconciler.specs.rules import MAX_ACTIVE_SEGMENTS, SEGMENT_CAP_MESSAGE, segment_cap_problem
from tests.conftest import API_KEY, WORKSPACE
from tests.helpers import Repo
from tests.test_client import make_client, send_all
from tests.test_emulator import assert_error_shape, body, post


def test_the_emulator_refuses_the_segment_past_the_cap(start_emulator):
    emu = start_emulator("--max-segments", "2")
    assert post(emu, body(cohort_id="a")).status_code == 200
    assert post(emu, body(cohort_id="b", action="remove_members")).status_code == 200  # a remove creates one too
    error = assert_error_shape(post(emu, body(cohort_id="c")), 429, "parameters.cohort_id")
    assert error["message"] == SEGMENT_CAP_MESSAGE
    assert post(emu, body(cohort_id="a", uids=["u9"])).status_code == 200  # existing segments still change
    assert sorted(emu.segments()) == ["a", "b"]
    emu.configure(max_segments=3)
    assert post(emu, body(cohort_id="c")).status_code == 200


def test_the_emulators_cap_defaults_to_moengages():
    from reconciler.emulator.server import EmulatorConfig
    assert EmulatorConfig().max_segments == MAX_ACTIVE_SEGMENTS == 1000


def test_the_client_fails_the_cohort_at_once_without_retrying(start_emulator):
    emu = start_emulator("--max-segments", "1")
    with make_client(emu, max_retries=5) as client:
        assert send_all(client, "first", ["a"]) == ["a"]
        with pytest.raises(CohortApiError) as info:
            send_all(client, "second", ["a"])
        assert client.stats.throttled == 0 and client.stats.retries == 0
    text = str(info.value)
    assert info.value.status == 429 and SEGMENT_CAP_MESSAGE in text and "1,000" in text
    assert "retrying will not help" in text and info.value.maybe_applied is False
    assert [r["cohort_id"] for r in emu.requests()] == ["first", "second"]


def test_apply_converges_the_others_and_fails_the_one_past_the_cap(tmp_path, start_emulator, monkeypatch, capsys):
    emu = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--max-segments", "2")
    monkeypatch.setenv("TEST_WS", WORKSPACE)
    monkeypatch.setenv("TEST_KEY", API_KEY)
    repo = Repo(tmp_path, base_url=emu.url)
    for cid in ("a", "b", "c"):
        repo.file_cohort(cid, ["u1", "u2"])
    code, out, _ = repo.run(capsys, "apply", "--format", "json")
    results = {c["id"]: c for c in json.loads(out)["cohorts"]}
    assert code == 1
    assert (results["a"]["result"], results["b"]["result"], results["c"]["result"]) == ("converged", "converged", "failed")
    assert SEGMENT_CAP_MESSAGE in results["c"]["error"]
    assert sum(1 for r in emu.requests() if r["cohort_id"] == "c") == 1
    code, out, _ = repo.run(capsys, "plan", "--format", "json")
    plan = {c["id"]: c for c in json.loads(out)["cohorts"]}
    assert plan["c"]["adds"] == 2 and plan["c"].get("unconfirmed", 0) == 0  # a refusal: nothing left uncertain


@pytest.mark.parametrize("count, warned", [(999, False), (1000, False), (1001, True)])
def test_the_count_check_takes_a_workspaces_cohort_ids(count, warned):
    ids = [f"c{i}" for i in range(count)]
    assert (segment_cap_problem(ids) is not None) == warned
    assert (segment_cap_problem(ids + ids[:5]) is not None) == warned  # an id counts once
    assert bool(cap_warnings(ids, "workspace live")) == warned


def test_the_cap_is_counted_per_workspace(tmp_path, capsys):
    repo = Repo(tmp_path, workspaces={"live": {}})
    (repo.cohorts / "uids").mkdir()
    (repo.cohorts / "uids" / "one.txt").write_text("u1\n")
    for i in range(MAX_ACTIVE_SEGMENTS + 1):  # 1,001 cohorts, split between the two workspaces
        where = "[default]" if i % 2 else "[live]"
        (repo.cohorts / f"c{i:04d}.yaml").write_text(
            f"id: c{i:04d}\nname: .C{i}\nsource: {{file: uids/one.txt}}\nworkspaces: {where}\n")
    code, _, err = repo.run(capsys, "validate")
    assert code == 0 and "warning" not in err
    (repo.cohorts / "c0000.yaml").write_text("id: c0000\nname: .C0\nsource: {file: uids/one.txt}\n"
                                             "workspaces: [default, live]\n")
    code, _, err = repo.run(capsys, "validate")
    assert "warning" not in err  # 501 in each
    for i in range(1, 501):  # every odd one goes to live too: 1,001 there
        path = repo.cohorts / f"c{2 * i - 1:04d}.yaml"
        path.write_text(path.read_text().replace("[default]", "[default, live]"))
    code, _, err = repo.run(capsys, "validate")
    assert code == 0 and "workspace live: warning: 1,001 cohorts" in err and "workspace default" not in err


def test_validate_and_plan_warn_past_the_cap_and_still_pass(tmp_path, capsys):
    repo = Repo(tmp_path)
    (repo.cohorts / "uids").mkdir()
    (repo.cohorts / "uids" / "one.txt").write_text("u1\n")
    for i in range(MAX_ACTIVE_SEGMENTS + 1):
        (repo.cohorts / f"c{i:04d}.yaml").write_text(f"id: c{i:04d}\nname: .C{i}\nsource: {{file: uids/one.txt}}\n")
    code, out, err = repo.run(capsys, "validate")
    assert code == 0 and "1001 cohort spec(s) valid" in out
    assert "warning: 1,001 cohorts for one workspace" in err and "at most 1,000" in err
    code, _, err = repo.run(capsys, "plan", "--cohort", "c0000")
    assert code == 0 and "warning: 1,001 cohorts" in err


def test_the_emulator_counts_the_cap_per_workspace(start_emulator):
    emu = start_emulator("--max-segments", "1", "--workspace-id", "WS_A", "--api-key", "ka",
                         "--workspace-id", "WS_B", "--api-key", "kb")
    assert post(emu, body(cohort_id="a"), user="WS_A", key="ka").status_code == 200
    assert post(emu, body(cohort_id="b"), user="WS_B", key="kb").status_code == 200  # another workspace's first
    assert_error_shape(post(emu, body(cohort_id="c"), user="WS_A", key="ka"), 429, "parameters.cohort_id")
