"""A seeded sample of a cohort's desired uids, for `check-users`: the first N after a seeded shuffle.

The shuffle is the order of a keyed hash (BLAKE2b, the seed as its key) of each uid, and the N
uids with the smallest hashes are kept in a heap while the source streams past, so:
- memory is O(N) whatever the cohort's size, and the source is read once, in any order;
- a duplicate hashes as its twin and counts once, as everywhere in cohortsync;
- the same seed picks the same uids from the same set, whatever order the source yields them in,
  so two runs a day apart check the same users unless the cohort changed.
"""
from __future__ import annotations

import hashlib
import heapq
from collections.abc import Iterable


def sample(chunks: Iterable[list[str]], size: int, seed: int = 0) -> list[str]:
    """At most `size` distinct uids, uniformly drawn from the distinct uids of `chunks`, sorted."""
    if size <= 0:
        return []
    key = hashlib.blake2b(seed.to_bytes(16, "big", signed=True), digest_size=16).digest()
    heap: list[tuple[int, str]] = []  # (-rank, uid): the largest rank kept sits on top, to be pushed out
    kept: set[str] = set()
    for chunk in chunks:
        for uid in chunk:
            if uid in kept:
                continue
            rank = int.from_bytes(hashlib.blake2b(uid.encode("utf-8"), key=key, digest_size=8).digest(), "big")
            if len(heap) < size:
                heapq.heappush(heap, (-rank, uid))
                kept.add(uid)
            elif rank < -heap[0][0]:
                _, out = heapq.heapreplace(heap, (-rank, uid))
                kept.discard(out)
                kept.add(uid)
    return sorted(kept)
