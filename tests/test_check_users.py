"""`check-users`: sample each cohort's uids, ask MoEngage's Get User API which exist, report the share not found.

The sample (sources/sampling.py), the lookup client (moengage/users.py) against the emulator's endpoint,
the endpoint itself, and the command, which never changes a segment.
"""
from __future__ import annotations

import json
import random
import time
from contextlib import closing

import pytest
import requests

from reconciler.common.errors import FatalApiError
from reconciler.moengage.users import UserLookup
from reconciler.settings.model import MoEngageSettings, RateLimit, Secret
from reconciler.sources.sampling import sample
from tests.conftest import API_KEY, WORKSPACE
from tests.helpers import Repo
from tests.test_emulator import assert_error_shape, body, headers, post

LOOKUP = "/v1/customers/export"
UIDS = [f"user-{i:05d}" for i in range(2000)]


# --- the sample: the first N after a seeded shuffle ---------------------------------------------------

def chunked(uids: list[str], size: int) -> list[list[str]]:
    return [uids[i:i + size] for i in range(0, len(uids), size)]


def test_a_sample_is_n_distinct_uids_the_same_whatever_the_order_and_the_duplicates():
    picked = sample(chunked(UIDS, 300), 50, seed=7)
    assert len(picked) == 50 == len(set(picked)) and set(picked) <= set(UIDS)
    shuffled = UIDS * 2
    random.Random(1).shuffle(shuffled)
    assert sample(chunked(shuffled, 77), 50, seed=7) == picked
    assert sample(chunked(UIDS, 300), 50, seed=8) != picked


@pytest.mark.parametrize("size, expected", [(0, 0), (5, 5), (3000, 2000)])
def test_a_sample_never_exceeds_the_cohort(size, expected):
    assert len(sample([UIDS], size)) == expected


def test_a_sample_is_spread_over_the_whole_cohort():
    """Not the first N in file order: a uniform draw has its mean index near the middle."""
    picked = sample(chunked(UIDS, 100), 400, seed=3)
    mean = sum(UIDS.index(u) for u in picked) / len(picked)
    assert 800 < mean < 1200


# --- the emulator's endpoint ----------------------------------------------------------------------------

def lookup(emu, payload, **kw) -> requests.Response:
    data = payload if isinstance(payload, bytes) else json.dumps(payload)
    return requests.post(emu.url + LOOKUP, data=data, headers=kw.pop("hdrs", None) or headers(**kw), timeout=10)


def ask(uids: list[str]) -> dict:
    return {"identifiers": [{"identifier_type": "customer_id", "identifier": u} for u in uids],
            "user_fields_to_export": ["customer_id"]}


@pytest.fixture
def users_file(tmp_path):
    path = tmp_path / "users.txt"
    path.write_text("".join(u + "\n" for u in UIDS[::2]))  # every other uid is known
    return path


def test_the_endpoint_answers_found_and_not_found_as_moengage_documents(start_emulator, users_file):
    emu = start_emulator("--users", str(users_file))
    resp = lookup(emu, ask(UIDS[:4]))
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["status"] == "success" and doc["type"] == "export_users"
    assert [u["user_attributes"]["customer_id"] for u in doc["data"]["users"]] == [UIDS[0], UIDS[2]]
    assert doc["data"]["users_not_found"] == [{"identifier_type": "customer_id", "identifier": u} for u in UIDS[1:4:2]]


def test_every_user_is_known_without_users(emulator):
    assert lookup(emulator, ask(["anyone"])).json()["data"]["users_not_found"] == []


@pytest.mark.parametrize("payload, attribute", [
    (ask(UIDS[:21]), "identifiers"),
    ({"user_fields_to_export": ["name"]}, "identifiers"),
    ({"identifiers": [{"identifier_type": "email", "identifier": "a@b"}]}, "identifiers[0]"),
    ({"identifiers": [{"identifier_type": "customer_id", "identifier": 5}]}, "identifiers[0]"),
    (b"{nope", "body"),
])
def test_the_endpoint_refuses_what_moengage_would(emulator, payload, attribute):
    assert_error_shape(lookup(emulator, payload), 400, attribute)


def test_the_endpoint_checks_credentials_like_the_cohort_sync_api(emulator):
    assert_error_shape(lookup(emulator, ask(["a"]), key="wrong"), 401)
    hdrs = headers()
    del hdrs["MOE-APPKEY"]
    assert_error_shape(lookup(emulator, ask(["a"]), hdrs=hdrs), 400, "MOE-APPKEY")


def test_lookups_have_a_rate_window_of_their_own(start_emulator):
    emu = start_emulator("--lookup-rate-limit", "2/60s", "--rate-limit", "2/60s")
    assert [lookup(emu, ask(["a"])).status_code for _ in range(3)][-1] == 429
    assert [post(emu, body()).status_code for _ in range(2)] == [200, 200]  # the cohort sync budget is untouched
    resp = lookup(emu, ask(["a"]))
    assert_error_shape(resp, 429)
    assert int(resp.headers["Retry-After"]) >= 1


# --- the lookup client -----------------------------------------------------------------------------------

def settings_for(emu, **kw) -> MoEngageSettings:
    kw = {"workspace_id": WORKSPACE, "api_key": Secret(API_KEY), "base_url": emu.url, "backoff_base": 0.05,
          "backoff_max": 0.2, "timeout": 5, **kw}
    return MoEngageSettings(**kw)


def test_the_client_finds_the_unknown_uids_twenty_at_a_time(start_emulator, users_file):
    emu = start_emulator("--users", str(users_file))
    with closing(UserLookup(settings_for(emu))) as client:
        assert client.not_found(UIDS[:100]) == set(UIDS[1:100:2])
        assert client.requests == 5
    log = emu.requests()
    assert {r["action"] for r in log} == {"lookup"} and max(r["members"] for r in log) == 20


def test_the_client_has_its_own_limiter_at_the_lookup_budget(emulator):
    with closing(UserLookup(settings_for(emulator, lookup_rate_limit=RateLimit(7, 60.0)))) as client:
        assert client.limiter.limit == RateLimit(7, 60.0)
    from reconciler.moengage.client import MoEngageClient
    with MoEngageClient(settings_for(emulator)) as sync:
        assert sync.limiter is not client.limiter and sync.limiter.limit == RateLimit(300, 60.0)


def test_the_client_waits_out_the_servers_window(start_emulator):
    emu = start_emulator("--lookup-rate-limit", "3/1s")
    started = time.monotonic()
    with closing(UserLookup(settings_for(emu, lookup_rate_limit=RateLimit(100, 1.0), lookup_batch=10))) as client:
        assert client.not_found(UIDS[:80]) == set()
    assert time.monotonic() - started >= 1.0
    assert 429 in [r["status"] for r in emu.requests()]


def test_the_client_retries_server_errors_and_stops_on_bad_credentials(start_emulator):
    emu = start_emulator("--error-rate", "0.5", "--seed", "4", "--workspace-id", WORKSPACE, "--api-key", API_KEY)
    with closing(UserLookup(settings_for(emu, max_retries=10))) as client:
        assert client.not_found(UIDS[:60]) == set()
    assert 500 in [r["status"] for r in emu.requests()]
    with closing(UserLookup(settings_for(emu, api_key=Secret("wrong")))) as client, pytest.raises(FatalApiError):
        client.not_found(["a"])


def test_the_lookup_never_shows_the_key(emulator):
    with closing(UserLookup(settings_for(emulator))) as client:
        assert API_KEY not in repr(client)


# --- the command --------------------------------------------------------------------------------------------

@pytest.fixture
def checked_repo(tmp_path, start_emulator, users_file, monkeypatch):
    emu = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--users", str(users_file))
    monkeypatch.setenv("TEST_WS", WORKSPACE)
    monkeypatch.setenv("TEST_KEY", API_KEY)
    repo = Repo(tmp_path / "repo", base_url=emu.url)
    repo.file_cohort("known", UIDS[0:400:2])  # all known
    repo.file_cohort("half", UIDS[:400])  # half known
    return repo, emu


def test_check_users_reports_the_share_not_found_and_changes_nothing(checked_repo, capsys):
    repo, emu = checked_repo
    code, out, _ = repo.run(capsys, "check-users", "--sample", "60", "--format", "json")
    assert code == 0
    doc = json.loads(out)
    cohorts = {c["id"]: c for c in doc["cohorts"]}
    assert cohorts["known"]["sampled"] == 60 and cohorts["known"]["not_found"] == 0
    assert 0.25 < cohorts["half"]["not_found_share"] < 0.75
    low, high = cohorts["half"]["interval_95"]
    assert low < cohorts["half"]["not_found_share"] < high
    assert doc["sample"] == 60 and doc["lookups"] == 6
    assert emu.segments() == {} and {r["action"] for r in emu.requests()} == {"lookup"}
    assert not (repo.root / "state.db").exists()  # no state opened, let alone written


def test_check_users_text_one_cohort(checked_repo, capsys):
    repo, _ = checked_repo
    code, out, _ = repo.run(capsys, "check-users", "--cohort", "known", "--sample", "20")
    assert code == 0 and "known" in out and "half" not in out and "0.0%" in out
    code, _, err = repo.run(capsys, "check-users", "--cohort", "nope")
    assert code == 1 and "no cohort with id nope" in err


def test_check_users_reports_a_broken_cohort_and_checks_the_others(checked_repo, capsys):
    repo, _ = checked_repo
    (repo.cohorts / "uids" / "half.txt").unlink()
    repo.spec("bad.yaml", "id: bad\nname: Bare\nsource: {file: uids/known.txt}\n")
    code, out, _ = repo.run(capsys, "check-users", "--format", "json", "--sample", "20")
    cohorts = {c["id"]: c for c in json.loads(out)["cohorts"]}
    assert code == 1
    assert "does not exist" in cohorts["half"]["error"] or "cannot" in cohorts["half"]["error"]
    assert "must start with '.'" in cohorts["bad"]["error"] and cohorts["known"]["error"] is None


def test_check_users_needs_credentials(tmp_path, capsys):
    repo = Repo(tmp_path)
    repo.file_cohort("c", ["u1"])
    code, _, err = repo.run(capsys, "check-users")
    assert code == 1 and "MOENGAGE_WORKSPACE_ID" in err


def test_check_users_asks_each_workspace_a_cohort_is_synced_to(tmp_path, start_emulator, users_file, capsys,
                                                                 monkeypatch):
    """The same sample, looked up in each workspace on that workspace's own budget: TEST and LIVE know other users."""
    test = start_emulator("--workspace-id", "WS_TEST", "--api-key", "k-test")  # knows everyone
    live = start_emulator("--workspace-id", WORKSPACE, "--api-key", API_KEY, "--users", str(users_file))
    monkeypatch.setenv("TEST_WS", WORKSPACE)
    monkeypatch.setenv("TEST_KEY", API_KEY)
    monkeypatch.setenv("MOENGAGE_TESTING_WORKSPACE_ID", "WS_TEST")
    monkeypatch.setenv("MOENGAGE_TESTING_API_KEY", "k-test")
    repo = Repo(tmp_path / "repo", base_url=live.url, workspaces={"testing": {"base_url": test.url}})
    repo.file_cohort("both", UIDS[:400], workspaces=["default", "testing"])
    repo.file_cohort("only_test", UIDS[:10], workspaces=["testing"])
    code, out, _ = repo.run(capsys, "check-users", "--sample", "40", "--format", "json")
    assert code == 0
    rows = {(c["workspace"], c["id"]): c for c in json.loads(out)["cohorts"]}
    assert sorted(rows) == [("default", "both"), ("testing", "both"), ("testing", "only_test")]
    assert rows[("testing", "both")]["not_found"] == 0 and rows[("default", "both")]["not_found"] > 0
    assert len(test.requests()) == 3 and len(live.requests()) == 2  # 40 and 10 uids at 20 a lookup
    code, out, _ = repo.run(capsys, "check-users", "--workspace", "testing", "--sample", "40")
    assert code == 0 and "default" not in out.split("\n", 1)[1]
    code, _, err = repo.run(capsys, "check-users", "--workspace", "nope")
    assert code == 1 and "no workspace named nope" in err


def test_the_emulators_lookup_windows_are_per_workspace(start_emulator):
    emu = start_emulator("--lookup-rate-limit", "1/60s")
    assert lookup(emu, ask(["a"]), user="WS_A").status_code == 200
    assert lookup(emu, ask(["a"]), user="WS_B").status_code == 200
    assert_error_shape(lookup(emu, ask(["a"]), user="WS_A"), 429)
    assert {r["workspace"] for r in emu.requests()} == {"WS_A", "WS_B"}
