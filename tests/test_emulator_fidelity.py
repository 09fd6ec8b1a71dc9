"""The emulator answers as MoEngage's API description says, where it used to be stricter or answer in HTML.

A missing MOE-APPKEY is a 400 (a mismatch a 401); what the schema allows is accepted (strings have no
minimum length, `members` no minimum count); any other method or path gets the documented JSON error shape.
"""
from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest
import requests

from tests.conftest import WORKSPACE
from tests.test_emulator import PATH, assert_error_shape, body, headers, post

LOOKUP = "/v1/customers/export"


def test_a_missing_moe_appkey_is_a_400_a_mismatch_a_401(emulator):
    hdrs = headers()
    del hdrs["MOE-APPKEY"]
    error = assert_error_shape(post(emulator, body(), hdrs=hdrs), 400, "MOE-APPKEY")
    assert error["type"] == "MissingAttributeError"
    assert_error_shape(post(emulator, body(), appkey="SOMEONE_ELSE"), 401, "MOE-APPKEY")
    assert emulator.segments() == {}


def test_missing_credentials_are_still_a_401_first(emulator):
    assert_error_shape(post(emulator, body(), hdrs={"Content-Type": "application/json"}), 401, "Authorization")


@pytest.mark.parametrize("change", [
    {"partner": ""},
    {"parameters": {"cohort_id": "", "cohort_name": ".Empty id", "members": [{"uid": "u1"}]}},
    {"parameters": {"cohort_id": "d", "cohort_name": ".Described", "cohort_description": "", "members": [{"uid": "u1"}]}},
    {"parameters": {"cohort_id": "e", "cohort_name": ".Empty uid", "members": [{"uid": ""}, {"uid": "u1"}]}},
    {"parameters": {"cohort_id": "none", "cohort_name": ".No members", "members": []}},
    {"parameters": {"cohort_id": "x", "cohort_name": ".Extra", "members": [{"uid": "u1", "note": 1}], "more": True},
     "extra": "field"},
])
def test_what_the_schema_allows_is_accepted(emulator, change):
    resp = post(emulator, {**body(), **change})
    assert resp.status_code == 200, resp.text


def test_an_empty_uid_matches_nobody_and_no_members_still_creates_the_segment(emulator):
    post(emulator, {**body(), "parameters": {"cohort_id": "e", "cohort_name": ".E", "members": [{"uid": ""}]}})
    post(emulator, {**body(), "parameters": {"cohort_id": "none", "cohort_name": ".N", "members": []}})
    segments = emulator.segments()
    assert segments["e"]["size"] == 0 and segments["none"]["size"] == 0


@pytest.mark.parametrize("payload, attribute, kind", [
    ({k: v for k, v in body().items() if k != "partner"}, "partner", "MissingAttributeError"),
    ({**body(), "partner": 5}, "partner", "ValidationError"),
    ({"action": "add_members", "partner": "t"}, "parameters", "MissingAttributeError"),
    ({**body(), "parameters": {"cohort_id": "x", "members": []}}, "parameters.cohort_name", "MissingAttributeError"),
    ({**body(), "parameters": {"cohort_id": "x", "cohort_name": ".X"}}, "parameters.members", "MissingAttributeError"),
    (b"{oops", "body", "Malformed JSON"),
])
def test_what_the_schema_forbids_is_a_400_with_moengages_types(emulator, payload, attribute, kind):
    assert assert_error_shape(post(emulator, payload), 400, attribute)["type"] == kind


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", [PATH, LOOKUP])
def test_another_method_on_an_api_path_is_a_405_in_the_error_shape(emulator, method, path):
    resp = requests.request(method, emulator.url + path, data=json.dumps(body()), headers=headers(), timeout=10)
    assert resp.headers["Content-Type"] == "application/json" and resp.headers["Allow"] == "POST"
    assert method in assert_error_shape(resp, 405)["message"]


def test_an_unknown_path_is_a_404_in_the_error_shape(emulator):
    assert_error_shape(post_to(emulator, "/v1/integrations/nope"), 404)
    resp = requests.get(emulator.url + "/v2/anything", timeout=10)
    assert resp.headers["Content-Type"] == "application/json"
    assert_error_shape(resp, 404)


def test_head_and_made_up_methods_never_get_html(emulator):
    assert requests.head(emulator.url + PATH, timeout=10).status_code == 405
    url = urlsplit(emulator.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(f"BREW {PATH} HTTP/1.1\r\nHost: emulator\r\nContent-Length: 0\r\n\r\n".encode())
        answer = b"".join(iter(lambda: sock.recv(1 << 16), b""))
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 405 ") and b"application/json" in head and b"<html" not in answer.lower()
    assert json.loads(payload)["status"] == "fail"


def post_to(emu, path: str) -> requests.Response:
    return requests.post(emu.url + path, data=json.dumps(body()), headers=headers(user=WORKSPACE), timeout=10)
