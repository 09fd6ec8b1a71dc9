"""The real client against the emulator process, through every answer MoEngage documents."""
from __future__ import annotations

import logging
import math
import random
import threading
import time

import pytest

from reconciler.moengage.batching import Envelope, pack
from reconciler.moengage.client import MAX_THROTTLED, MoEngageClient, Retries, backoff, retry_after
from reconciler.moengage.ratelimit import SlidingWindowLimiter
from reconciler.common.errors import ApiError, CohortApiError, FatalApiError, Interrupted, TemporaryApiError
from reconciler.settings.model import MoEngageSettings, RateLimit, Secret
from tests.conftest import API_KEY, WORKSPACE


def make_client(emu, **kw) -> MoEngageClient:
    kw = {"workspace_id": WORKSPACE, "backoff_base": 0.05, "backoff_max": 0.2, "timeout": 5, **kw}
    settings = MoEngageSettings(api_key=Secret(kw.pop("api_key", API_KEY)), base_url=emu.url, **kw)
    return MoEngageClient(settings)


def send_all(client, cohort_id, uids, action="add_members", name=None, max_bytes=None):
    env = Envelope(action, "tests", cohort_id, name or f".{cohort_id}")
    acked = []
    for batch in pack(env, uids, max_bytes or client.settings.max_payload_bytes):
        for part in client.send(batch):
            acked.extend(part.uids)
    return acked


UIDS = [f"user-{i:06d}" for i in range(3000)]


def test_sends_everything_and_the_segment_matches(emulator):
    with make_client(emulator, max_payload_bytes=10_000) as client:
        assert send_all(client, "c1", UIDS) == UIDS
        assert send_all(client, "c1", UIDS[:100], action="remove_members") == UIDS[:100]
    assert emulator.members("c1") == UIDS[100:]
    log = emulator.requests()
    assert all(r["bytes"] <= 10_000 for r in log) and {r["status"] for r in log} == {200}


def test_413_splits_and_retries(start_emulator):
    emu = start_emulator("--max-payload-bytes", "3000")
    with make_client(emu) as client:  # packs to 128,000: the server refuses, the client splits
        assert send_all(client, "c1", UIDS) == UIDS
        assert client.stats.splits > 0
    assert emu.members("c1") == UIDS
    statuses = [r["status"] for r in emu.requests()]
    assert 413 in statuses and statuses[-1] == 200


def test_429_honours_retry_after_and_does_not_spend_retries(start_emulator):
    emu = start_emulator("--rate-limit", "2/1s")
    with make_client(emu, max_payload_bytes=2_000, max_retries=0) as client:
        started = time.monotonic()
        assert send_all(client, "c1", UIDS[:400]) == UIDS[:400]
        assert client.stats.throttled > 0 and client.stats.retries == 0
        assert time.monotonic() - started >= 1.0  # it waited for the window
    assert emu.members("c1") == UIDS[:400]


def test_5xx_burst_recovers(start_emulator):
    emu = start_emulator("--error-rate", "0.5", "--seed", "7")
    with make_client(emu, max_payload_bytes=5_000, max_retries=10) as client:
        assert send_all(client, "c1", UIDS) == UIDS
        assert client.stats.retries > 0 and client.stats.statuses["500"] > 0
    assert emu.members("c1") == UIDS


def test_5xx_forever_fails_the_batch_after_the_bound(start_emulator):
    emu = start_emulator("--error-rate", "1.0")
    with make_client(emu, max_retries=3) as client, pytest.raises(TemporaryApiError) as info:
        send_all(client, "c1", UIDS[:10])
    assert info.value.status == 500 and client.stats.retries == 3
    assert len(emu.requests()) == 4


def test_dropped_connections_are_retried(start_emulator):
    emu = start_emulator("--drop-rate", "0.4", "--seed", "3")
    with make_client(emu, max_payload_bytes=5_000, max_retries=10) as client:
        assert send_all(client, "c1", UIDS) == UIDS
        assert client.stats.statuses["error"] > 0
    assert emu.members("c1") == UIDS


def test_timeout_is_retried_then_fails(start_emulator):
    emu = start_emulator("--latency", "1s")
    with make_client(emu, timeout=0.2, max_retries=1) as client, pytest.raises(TemporaryApiError, match="timed out"):
        send_all(client, "c1", ["a"])


def test_backoff_doubles_up_to_backoff_max_with_equal_jitter():
    """The README and the settings say "equal jitter": each wait is drawn between half its cap and the cap."""
    settings, rng = MoEngageSettings(backoff_base=0.5, backoff_max=3.0), random.Random(7)
    for attempt, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (9, 3.0)]:
        waits = [backoff(settings, attempt, rng) for _ in range(200)]
        assert cap / 2 <= min(waits) < cap * 0.55 and cap * 0.95 < max(waits) <= cap, attempt


def test_retries_wait_out_429s_apart_from_the_retry_budget():
    """One retry policy for every API asked: 429s are waited out (MAX_THROTTLED at most, Retry-After when
    sent), other temporary failures back off up to max_retries; then the error ends the request."""
    retries = Retries(MoEngageSettings(max_retries=2, backoff_base=0.5, backoff_max=3.0), random.Random(1))
    throttled, failed = TemporaryApiError("slow down", status=429, delay=1.5), TemporaryApiError("boom", status=503)
    assert [retries.delay(throttled) for _ in range(3)] == [1.5, 1.5, 1.5]  # the server's Retry-After
    first, second = retries.delay(failed), retries.delay(failed)
    assert 0.25 <= first <= 0.5 and 0.5 <= second <= 1.0 and retries.delay(failed) is None
    assert retries.delay(throttled) == 1.5  # 429s never spend the retry budget
    retries.throttled = MAX_THROTTLED
    assert retries.delay(throttled) is None


def test_a_shutdown_cuts_a_backoff_short(start_emulator):
    """The daemon's stop event ends a minute-long backoff at once, with Interrupted, not a failure."""
    emu, stop = start_emulator("--error-rate", "1.0"), threading.Event()
    settings = MoEngageSettings(workspace_id=WORKSPACE, api_key=Secret(API_KEY), base_url=emu.url,
                                backoff_base=60, backoff_max=60)
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    with MoEngageClient(settings, stop=stop) as client, pytest.raises(Interrupted):
        send_all(client, "c1", ["a"])
    assert time.monotonic() - started < 10 and client.stats.statuses["500"] == 1


def test_a_shutdown_cuts_a_wait_for_the_rate_window_short():
    stop = threading.Event()
    limiter = SlidingWindowLimiter(RateLimit(1, 60.0), stop=stop)
    with limiter.slot():  # the window's one place, taken for a minute
        pass
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with pytest.raises(Interrupted):
        with limiter.slot():
            pass
    assert time.monotonic() - started < 10


def test_401_stops_the_run(emulator):
    with make_client(emulator, api_key="wrong") as client, pytest.raises(FatalApiError) as info:
        send_all(client, "c1", UIDS)
    assert info.value.status == 401 and info.value.request_id
    assert len(emulator.requests()) == 1  # no retry: nothing more can succeed


def test_403_stops_the_run(start_emulator):
    emu = start_emulator("--suspended")
    with make_client(emu) as client, pytest.raises(FatalApiError) as info:
        send_all(client, "c1", ["a"])
    assert info.value.status == 403


def test_400_fails_one_cohort_while_another_succeeds(emulator):
    with make_client(emulator) as client:
        with pytest.raises(CohortApiError) as info:
            send_all(client, "bad", ["a"], name=".bad:name")
        assert info.value.status == 400 and info.value.attribute == "parameters.cohort_name"
        assert info.value.request_id and "cohort_name" in str(info.value)
        assert send_all(client, "good", ["a", "b"]) == ["a", "b"]
    assert emulator.members("good") == ["a", "b"] and emulator.members("bad") == []


def test_keeps_90_percent_of_the_allowed_rate_without_429(start_emulator):
    limit = RateLimit(20, 2.0)
    emu = start_emulator("--rate-limit", str(limit))
    with make_client(emu, rate_limit=limit, max_payload_bytes=300) as client:
        uids = [f"u{i:05d}" for i in range(60 * 15)]  # about 60 requests of 15 uids: three windows
        started = time.monotonic()
        assert send_all(client, "c1", uids) == uids
        elapsed = time.monotonic() - started
        sent = client.stats.requests
    statuses = [r["status"] for r in emu.requests()]
    assert 429 not in statuses and len(statuses) == sent
    # the least time a sliding window lets `sent` requests through in: a burst of N per window
    fastest = (math.ceil(sent / limit.requests) - 1) * limit.window
    assert fastest / elapsed >= 0.9, f"{sent} requests in {elapsed:.2f}s, {fastest / elapsed:.0%} of the allowed rate"


def test_credentials_never_in_repr_errors_or_logs(emulator, caplog):
    caplog.set_level(logging.DEBUG)
    with make_client(emulator, api_key="wrong-" + API_KEY) as client:
        assert API_KEY not in repr(client) and API_KEY not in repr(client.settings)
        with pytest.raises(ApiError) as info:
            send_all(client, "c1", ["a"])
    assert API_KEY not in str(info.value) and API_KEY not in repr(info.value)
    assert API_KEY not in caplog.text


@pytest.mark.parametrize("value, expected", [("3", 3.0), ("0", 0.0), (None, None), ("soon", None)])
def test_retry_after_parsing(value, expected):
    assert retry_after(value) == expected


def test_retry_after_http_date():
    from email.utils import formatdate
    assert 5 <= retry_after(formatdate(time.time() + 10, usegmt=True)) <= 11
