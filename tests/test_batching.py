"""Packing: every body within the limit, every uid once, as few batches as the budget allows."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.moengage.batching import Batch, Envelope, Packer, pack
from reconciler.common.errors import CohortApiError

ENV = Envelope("add_members", "tests", "cohort_ü", ".Cohört name", "a description")
LIMIT = 128_000

uid_text = st.text(min_size=1, max_size=200, alphabet=st.characters(codec="utf-8"))
uid_ascii = st.text(min_size=1, max_size=200, alphabet=st.characters(min_codepoint=32, max_codepoint=126))


def check(batches: list[Batch], uids: list[str], limit: int) -> None:
    sent: list[str] = []
    for b in batches:
        assert len(b.body) <= limit
        doc = json.loads(b.body.decode("utf-8"))
        assert doc["action"] == ENV.action and doc["parameters"]["cohort_id"] == ENV.cohort_id
        assert [m["uid"] for m in doc["parameters"]["members"]] == list(b.uids)
        sent.extend(b.uids)
    assert sent == uids  # every uid exactly once, in order
    for b in batches[:-1]:
        assert len(b.body) >= 0.99 * limit, "only the last batch may be under 99% full"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.data())
def test_packing_property(data):
    alphabet = data.draw(st.sampled_from([uid_ascii, uid_text]))
    count = data.draw(st.integers(min_value=0, max_value=3000))
    uids = data.draw(st.lists(alphabet, min_size=count, max_size=count))
    check(list(pack(ENV, uids, LIMIT)), uids, LIMIT)


@settings(max_examples=5, deadline=None)
@given(st.integers(min_value=0, max_value=2**32), st.integers(min_value=50_000, max_value=100_000))
def test_packing_property_up_to_100k_uids(seed, count):
    import random
    rng = random.Random(seed)
    chars = "abcdefghijklmnopqrstuvwxyz0123456789-_éü中😀\"\\\n"
    uids = ["".join(rng.choice(chars) for _ in range(rng.randint(1, 200))) for _ in range(count)]
    check(list(pack(ENV, uids, LIMIT)), uids, LIMIT)


def test_twelve_char_uids_fill_a_body():
    uids = [f"u{i:011d}" for i in range(20_000)]
    batches = list(pack(ENV, uids, LIMIT))
    assert len(batches[0].uids) > 5_500
    check(batches, uids, LIMIT)


def test_uid_too_long_for_one_request_fails_the_cohort():
    with pytest.raises(CohortApiError, match="cannot fit"):
        list(pack(ENV, ["ok", "x" * 1000], 600))


def test_split_halves_carry_everything():
    batch = Batch.build(ENV, ["a", "b", "c"])
    left, right = batch.split()
    assert left.uids + right.uids == batch.uids
    assert json.loads(left.body)["parameters"]["members"] == [{"uid": "a"}]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(chunks=st.lists(st.one_of(st.lists(st.text("abcxyz019-_.@ ", min_size=1, max_size=300), max_size=400),
                                 st.lists(st.one_of(uid_ascii, uid_text), max_size=50)), max_size=6),
       limit=st.integers(min_value=400, max_value=6_000))
def test_add_all_makes_exactly_the_batches_add_makes(chunks, limit):
    """The bulk path (no escaping needed) and the uid-by-uid path agree byte for byte, across chunk seams."""
    one, bulk = Packer(ENV, limit), Packer(ENV, limit)
    by_one: list[Batch] = []
    by_bulk: list[Batch] = []
    for chunk in chunks:
        try:
            by_one += [b for b in map(one.add, chunk) if b is not None]
        except CohortApiError:
            with pytest.raises(CohortApiError, match="cannot fit"):
                bulk.add_all(chunk)
            return
        by_bulk += bulk.add_all(chunk)
        assert (one.requests, one.batches) == (bulk.requests, bulk.batches)
    by_one += [b for b in [one.finish()] if b is not None]
    by_bulk += [b for b in [bulk.finish()] if b is not None]
    assert [b.body for b in by_bulk] == [b.body for b in by_one]
    assert [b.uids for b in by_bulk] == [b.uids for b in by_one]
