"""The emulator answers every documented case with the documented status and body shape."""
from __future__ import annotations

import base64
import json
import socket
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import API_KEY, WORKSPACE

PATH = "/v1/integrations/cohortsync"


def body(action="add_members", uids=("u1", "u2"), name=".Beta testers", cohort_id="beta", **extra) -> dict:
    params = {"cohort_name": name, "cohort_id": cohort_id, "members": [{"uid": u} for u in uids]}
    return {"action": action, "partner": "tests", "parameters": params, **extra}


def headers(user=WORKSPACE, key=API_KEY, appkey=None, ctype="application/json") -> dict:
    h = {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode(),
         "MOE-APPKEY": user if appkey is None else appkey}
    if ctype:
        h["Content-Type"] = ctype
    return h


def post(emu, payload, **kw) -> requests.Response:
    data = payload if isinstance(payload, (bytes, str)) else json.dumps(payload)
    return requests.post(emu.url + PATH, data=data, headers=kw.pop("hdrs", None) or headers(**kw), timeout=10)


def assert_error_shape(resp: requests.Response, status: int, attribute: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    doc = resp.json()
    assert doc["status"] == "fail"
    assert set(doc["error"]) == {"attribute", "message", "type", "request_id"}
    assert doc["error"]["message"] and doc["error"]["request_id"]
    if attribute is not None:
        assert doc["error"]["attribute"] == attribute
    return doc["error"]


def test_200_creates_segment_on_first_sight_and_changes_members(emulator):
    resp = post(emulator, body(uids=["u1", "u2", "u3"]))
    assert resp.status_code == 200
    assert resp.json()["status"] == "success"
    assert emulator.members("beta") == ["u1", "u2", "u3"]
    assert post(emulator, body("remove_members", uids=["u2"])).status_code == 200
    assert emulator.members("beta") == ["u1", "u3"]
    seg = emulator.segments()["beta"]
    assert seg["cohort_name"] == ".Beta testers" and seg["size"] == 2


@pytest.mark.parametrize(
    "payload, attribute",
    [
        (b"{not json", "body"),
        (b"[1, 2]", "body"),
        ({**body(), "action": None}, "action"),
        (body(action="replace_members"), "action"),
        ({k: v for k, v in body().items() if k != "partner"}, "partner"),
        ({"action": "add_members", "partner": "t"}, "parameters"),
        ({**body(), "parameters": {k: v for k, v in body()["parameters"].items() if k != "cohort_id"}},
         "parameters.cohort_id"),
        (body(name="no leading period"), "parameters.cohort_name"),
        (body(name=".bad|pipe"), "parameters.cohort_name"),
        (body(name='.quote"d'), "parameters.cohort_name"),
        ({**body(), "parameters": {**body()["parameters"], "members": {"uid": "u1"}}}, "parameters.members"),
        ({**body(), "parameters": {**body()["parameters"], "members": [{"id": "x"}]}}, "parameters.members[0]"),
        ({**body(), "parameters": {**body()["parameters"], "members": [{"uid": 5}]}}, "parameters.members[0]"),
        ({**body(), "parameters": {**body()["parameters"], "cohort_description": 3}}, "parameters.cohort_description"),
    ],
)
def test_400_names_the_attribute(emulator, payload, attribute):
    assert_error_shape(post(emulator, payload), 400, attribute)
    assert emulator.segments() == {}


@pytest.mark.parametrize(
    "kw",
    [
        {"hdrs": {"Content-Type": "application/json"}},  # no credentials at all
        {"key": "wrong-key"},
        {"user": "OTHER", "appkey": "OTHER"},
        {"appkey": "NOT_THE_USER"},
    ],
)
def test_401_bad_or_missing_credentials(emulator, kw):
    assert_error_shape(post(emulator, body(), **kw), 401)


def test_any_credentials_pass_when_none_configured_but_appkey_must_match(start_emulator):
    emu = start_emulator()
    assert post(emu, body(), user="ANY", key="thing").status_code == 200
    assert_error_shape(post(emu, body(), user="ANY", key="thing", appkey="OTHER"), 401, "MOE-APPKEY")
    assert_error_shape(post(emu, body(), user="ANY", key=""), 401)


def test_403_suspended_account(start_emulator):
    emu = start_emulator("--suspended")
    assert_error_shape(post(emu, body()), 403)


def test_413_payload_over_limit(start_emulator):
    emu = start_emulator("--max-payload-bytes", "200")
    assert_error_shape(post(emu, body(uids=[f"user-{i:05d}" for i in range(50)])), 413, "body")
    assert post(emu, body(uids=["a"])).status_code == 200


@pytest.mark.parametrize("length", ["ten", "-5"])
def test_400_content_length_not_a_byte_count_and_the_connection_closes(emulator, length):
    """A negative length once had the emulator read until the client hung up; now it answers at once."""
    url = urlsplit(emulator.url)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers().items())
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(f"POST {PATH} HTTP/1.1\r\nHost: emulator\r\n{head}Content-Length: {length}\r\n\r\n".encode())
        answer = b"".join(iter(lambda: sock.recv(1 << 16), b""))  # to the end: the emulator closes the connection
    assert answer.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in answer and b"Content-Length" in answer


def test_415_wrong_content_type(emulator):
    assert_error_shape(post(emulator, body(), ctype="text/plain"), 415)
    assert_error_shape(post(emulator, body(), ctype=None), 415)


def test_429_sliding_window_with_retry_after(start_emulator):
    emu = start_emulator("--rate-limit", "3/30s")
    for _ in range(3):
        assert post(emu, body()).status_code == 200
    resp = post(emu, body())
    assert_error_shape(resp, 429)
    assert 1 <= int(resp.headers["Retry-After"]) <= 30


def test_500_injected_errors_are_seeded(start_emulator):
    """Half the requests fail: the same seed picks the same ones, another seed others."""
    def statuses(seed: str) -> list[int]:
        emu = start_emulator("--error-rate", "0.5", "--seed", seed)
        answers = [post(emu, body()) for _ in range(24)]
        assert_error_shape(next(a for a in answers if a.status_code != 200), 500)
        emu.stop()
        return [a.status_code for a in answers]

    first = statuses("7")
    assert set(first) == {200, 500}
    assert statuses("7") == first
    assert statuses("8") != first


def test_injected_errors_stop_when_configured_off(start_emulator):
    emu = start_emulator("--error-rate", "1.0")
    assert_error_shape(post(emu, body()), 500)
    emu.configure(error_rate=0.0)
    assert post(emu, body()).status_code == 200


def test_injected_throttle_sends_retry_after(start_emulator):
    emu = start_emulator("--throttle-rate", "1.0", "--retry-after", "2s")
    resp = post(emu, body())
    assert_error_shape(resp, 429)
    assert resp.headers["Retry-After"] == "2"


def test_dropped_connection(start_emulator):
    emu = start_emulator("--drop-rate", "1.0", "--seed", "1")
    with pytest.raises(requests.ConnectionError):
        post(emu, body())
    assert emu.requests()[-1]["status"] == "dropped"


def test_unknown_uids_are_accepted_but_not_matched(start_emulator, tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("u1\nu2\n")
    emu = start_emulator("--users", str(users))
    assert post(emu, body(uids=["u1", "ghost"])).status_code == 200
    assert emu.members("beta") == ["u1"]
    assert emu.segments()["beta"]["unmatched"] == 1


def test_segments_survive_a_restart_with_db(start_emulator, tmp_path):
    db = str(tmp_path / "emu.db")
    first = start_emulator("--db", db)
    assert post(first, body(uids=["a", "b"])).status_code == 200
    first.stop()
    second = start_emulator("--db", db)
    assert second.members("beta") == ["a", "b"]


def test_request_log_and_reset(emulator):
    post(emulator, body(uids=["a", "b", "c"]))
    post(emulator, body(name="bad"))
    log = emulator.requests()
    assert [(r["action"], r["cohort_id"], r["members"], r["status"]) for r in log[:1]] == [
        ("add_members", "beta", 3, 200)]
    assert log[0]["bytes"] > 0 and log[1]["status"] == 400
    emulator.post("/_emulator/reset")
    assert emulator.requests() == [] and emulator.segments() == {}


def test_keep_alive_connection_is_reused(emulator):
    with requests.Session() as s:
        for _ in range(3):
            r = s.post(emulator.url + PATH, data=json.dumps(body()), headers=headers(), timeout=10)
            assert r.status_code == 200
            assert r.headers.get("Connection", "").lower() != "close"
