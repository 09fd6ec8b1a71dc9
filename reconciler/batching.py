"""Packing a stream of uids into the fewest request bodies that fit the byte budget.

The body is built here, byte for byte, so the size we count is the size we send: compact JSON,
UTF-8, keys in a fixed order. Greedy packing of an ordered stream is optimal for contiguous
batches, so every batch but the last of an action is full to within one member.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from json.encoder import encode_basestring  # type: ignore[attr-defined]

from reconciler.errors import CohortApiError

ACTIONS = ("add_members", "remove_members")


@dataclass(frozen=True)
class Envelope:
    """Everything in a request body but the members: one per cohort action."""

    action: str
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
    """Greedy packing, one uid at a time: `add` hands back a batch each time one is full."""

    def __init__(self, envelope: Envelope, max_bytes: int) -> None:
        self.envelope, self.max_bytes = envelope, max_bytes
        self._head, self._tail = envelope.frame()
        self._budget = max_bytes - len(self._head) - len(self._tail)
        if self._budget <= 0:
            raise CohortApiError(
                f"cohort {envelope.cohort_id}: the request envelope alone is "
                f"{len(self._head) + len(self._tail)} bytes, over max_payload_bytes={max_bytes}"
            )
        self._parts: list[bytes] = []
        self._uids: list[str] = []
        self._used = 0
        self.batches = 0  # batches handed out so far, by add and finish

    def add(self, uid: str) -> Batch | None:
        part = _member(self.envelope, uid)
        full = self._close() if self._parts and self._used + 1 + len(part) > self._budget else None
        size = len(part) + (1 if self._parts else 0)
        if size > self._budget:
            raise CohortApiError(
                f"cohort {self.envelope.cohort_id}: uid {uid[:40]!r} is {len(part)} bytes as JSON and cannot "
                f"fit in a {self.max_bytes}-byte request; shorten it or raise moengage.max_payload_bytes"
            )
        self._parts.append(part)
        self._uids.append(uid)
        self._used += size
        return full

    @property
    def requests(self) -> int:
        """Requests needed for everything added so far, the open batch included."""
        return self.batches + (1 if self._parts else 0)

    def finish(self) -> Batch | None:
        return self._close() if self._parts else None

    def _close(self) -> Batch:
        batch = Batch(self.envelope, tuple(self._uids), self._head + b",".join(self._parts) + self._tail)
        self._parts, self._uids, self._used = [], [], 0
        self.batches += 1
        return batch


def pack(envelope: Envelope, uids: Iterable[str], max_bytes: int) -> Iterator[Batch]:
    """Yield batches in stream order, each body at most `max_bytes`.

    A uid that cannot fit even alone raises CohortApiError: that cohort fails, the run goes on.
    """
    packer = Packer(envelope, max_bytes)
    for uid in uids:
        batch = packer.add(uid)
        if batch is not None:
            yield batch
    last = packer.finish()
    if last is not None:
        yield last


def _member(envelope: Envelope, uid: str) -> bytes:
    try:
        return member_bytes(uid)
    except UnicodeEncodeError as exc:
        raise CohortApiError(f"cohort {envelope.cohort_id}: uid {uid!r} is not valid Unicode") from exc
