"""Packing a stream of uids into the fewest request bodies that fit the byte budget.

The body is built here, byte for byte, so the size we count is the size we send: compact JSON,
UTF-8, keys in a fixed order. Greedy packing of an ordered stream is optimal for contiguous
batches, so every batch but the last of an action is full to within one member.
"""
from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate, islice, repeat
from operator import add
from json.encoder import encode_basestring  # type: ignore[attr-defined]

from reconciler.common.actions import Action
from reconciler.common.errors import CohortApiError

ACTIONS = tuple(str(a) for a in Action)  # what MoEngage accepts as `action`
CHUNK = 20_000  # uids packed at once
_MEMBER_OVERHEAD = len(b'{"uid":""}')  # bytes around an unescaped uid
_ESCAPED = re.compile(r'[\x00-\x1f\\"]')  # what JSON escapes in a string (encode_basestring's set)


@dataclass(frozen=True)
class Envelope:
    """Everything in a request body but the members: one per cohort action."""

    action: Action
    partner: str
    cohort_id: str
    cohort_name: str
    cohort_description: str | None = None

    def frame(self) -> tuple[bytes, bytes]:
        """The bytes before and after the member list."""
        params: dict[str, str] = {"cohort_name": self.cohort_name, "cohort_id": self.cohort_id}
        if self.cohort_description:
            params["cohort_description"] = self.cohort_description
        params_json = json.dumps(params, ensure_ascii=False, separators=(",", ":"))
        head = (
            f'{{"action":{encode_basestring(self.action)},"partner":{encode_basestring(self.partner)},'
            f'"parameters":{params_json[:-1]},"members":['
        )
        return head.encode("utf-8"), b"]}}"


def member_bytes(uid: str) -> bytes:
    """One `{"uid":"..."}` element, exactly as sent."""
    return b'{"uid":' + encode_basestring(uid).encode("utf-8", "strict") + b"}"


@dataclass(frozen=True)
class Batch:
    """One request: an envelope and the uids it carries, with the exact body."""

    envelope: Envelope
    uids: tuple[str, ...]
    body: bytes

    @classmethod
    def build(cls, envelope: Envelope, uids: Iterable[str]) -> "Batch":
        head, tail = envelope.frame()
        uids = tuple(uids)
        return cls(envelope, uids, head + b",".join(member_bytes(u) for u in uids) + tail)

    def split(self) -> tuple["Batch", "Batch"]:
        """Two halves, for a 413 that packing should have prevented."""
        mid = len(self.uids) // 2
        return Batch.build(self.envelope, self.uids[:mid]), Batch.build(self.envelope, self.uids[mid:])

    def __repr__(self) -> str:
        return f"Batch({self.envelope.action} {self.envelope.cohort_id}: {len(self.uids)} uids, {len(self.body)} bytes)"


class Packer:
    """Greedy packing in stream order: `add` or `add_all` hand back each batch once it is full.

    The open batch is kept as comma-joined segments of member bytes: a single member from `add`,
    or a whole run from `add_all`, whose uids need no JSON escaping, so that their sizes come
    from `len` and their bytes from one join, with no Python work per uid.
    """

    def __init__(self, envelope: Envelope, max_bytes: int) -> None:
        self.envelope, self.max_bytes = envelope, max_bytes
        self._head, self._tail = envelope.frame()
        self._budget = max_bytes - len(self._head) - len(self._tail)
        if self._budget <= 0:
            raise CohortApiError(
                f"cohort {envelope.cohort_id}: the request envelope alone is "
                f"{len(self._head) + len(self._tail)} bytes, over max_payload_bytes={max_bytes}"
            )
        self._segments: list[bytes] = []
        self._uids: list[str] = []
        self._used = 0  # bytes of the open batch's members, commas included
        self.batches = 0  # batches handed out so far, by add, add_all and finish

    def add(self, uid: str) -> Batch | None:
        part = _member(self.envelope, uid)
        full = self._close() if self._uids and self._used + 1 + len(part) > self._budget else None
        if len(part) > self._budget:
            raise self._too_big(uid, len(part))
        self._append(part, [uid])
        return full

    def add_all(self, uids: list[str]) -> list[Batch]:
        """`add` of each uid in turn, with the same batches; fast when no uid needs escaping."""
        joined = "".join(uids)
        if not joined.isascii() or _ESCAPED.search(joined):
            return [batch for batch in map(self.add, uids) if batch is not None]
        # ends[i]: bytes of uids[:i] as members, each with one comma ({"uid":"..."} is len + 10)
        ends = list(accumulate(map(add, map(len, uids), repeat(_MEMBER_OVERHEAD + 1)), initial=0))
        full: list[Batch] = []
        start = 0
        while start < len(uids):
            room = self._budget - self._used + (0 if self._uids else 1)  # a batch's first member has no comma
            stop = bisect_right(ends, ends[start] + room, start) - 1
            if stop == start:  # not even the next uid fits
                if not self._uids:
                    raise self._too_big(uids[start], ends[start + 1] - ends[start] - 1)
                full.append(self._close())
                continue
            run = uids[start:stop]
            self._append(('{"uid":"' + '"},{"uid":"'.join(run) + '"}').encode("ascii"), run)
            start = stop
        return full

    @property
    def requests(self) -> int:
        """Requests needed for everything added so far, the open batch included."""
        return self.batches + (1 if self._uids else 0)

    def finish(self) -> Batch | None:
        return self._close() if self._uids else None

    def _append(self, segment: bytes, uids: list[str]) -> None:
        self._used += len(segment) + (1 if self._uids else 0)
        self._segments.append(segment)
        self._uids.extend(uids)

    def _close(self) -> Batch:
        batch = Batch(self.envelope, tuple(self._uids), self._head + b",".join(self._segments) + self._tail)
        self._segments, self._uids, self._used = [], [], 0
        self.batches += 1
        return batch

    def _too_big(self, uid: str, size: int) -> CohortApiError:
        return CohortApiError(
            f"cohort {self.envelope.cohort_id}: uid {uid[:40]!r} is {size} bytes as JSON and cannot "
            f"fit in a {self.max_bytes}-byte request; shorten it or raise moengage.max_payload_bytes"
        )


def pack(envelope: Envelope, uids: Iterable[str], max_bytes: int) -> Iterator[Batch]:
    """Yield batches in stream order, each body at most `max_bytes`.

    A uid that cannot fit even alone raises CohortApiError: that cohort fails, the run goes on.
    """
    packer = Packer(envelope, max_bytes)
    stream = iter(uids)
    while chunk := list(islice(stream, CHUNK)):
        yield from packer.add_all(chunk)
    last = packer.finish()
    if last is not None:
        yield last


def _member(envelope: Envelope, uid: str) -> bytes:
    try:
        return member_bytes(uid)
    except UnicodeEncodeError as exc:
        raise CohortApiError(f"cohort {envelope.cohort_id}: uid {uid!r} is not valid Unicode") from exc
