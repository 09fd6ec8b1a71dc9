"""Which uids MoEngage can never accept, told before anything is sent, and which 400s are about members.

MoEngage refuses a request as a whole when one member is invalid; a uid that can never be valid
is therefore refused here instead (kept in the state like one MoEngage refused, never sent), so
that it costs no request and no bisection. MoEngage documents no length limit for the user ID
itself; its Data Tracking Policies cap a user attribute's value at 512 characters (help.moengage.com,
article 360037314991), and the ID is a user attribute: longer ones are refused.
"""
from __future__ import annotations

import re

MAX_UID_LENGTH = 512  # characters: MoEngage's "User attribute value length" (Data Tracking Policies)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_VISIBLE = bytes(range(33, 127)) + b"\n"  # printable ASCII but the space, and the separator
MEMBER_ATTRIBUTES = ("members", "parameters.members", "uid")  # a 400 naming these (or nothing) is about a member
MISSING = "missingattributeerror"  # an absent field: never one member's fault


def uid_problem(uid: str) -> str | None:
    """Why MoEngage could never accept this uid as a member, or None."""
    if not uid.strip():
        return "the uid is empty after trimming whitespace"
    bad = _CONTROL.search(uid)
    if bad:
        return f"the uid holds the control character {bad.group()!r} at position {bad.start()}"
    if len(uid) > MAX_UID_LENGTH:
        return f"the uid is {len(uid):,} characters long, over MoEngage's {MAX_UID_LENGTH} (moengage/uids.py)"
    return None


def unsendable(uids: list[str]) -> list[tuple[str, str]]:
    """(uid, reason) for each uid of a chunk that can never be valid; a few passes in C when all are fine."""
    if not uids or (_plain(uids) and max(map(len, uids)) <= MAX_UID_LENGTH):
        return []
    return [(u, why) for u in uids if (why := uid_problem(u)) is not None]


def _plain(uids: list[str]) -> bool:
    """No uid blank or holding a control character: printable ASCII without a space and no empty uid
    (C passes only), or, for other text, no control character and every uid non-blank."""
    text = "\n".join(uids)
    if not text.isascii():
        return not _CONTROL.search("".join(uids)) and all(map(str.strip, uids))
    raw = text.encode("ascii")
    return (not raw.translate(None, _VISIBLE) and raw.count(b"\n") == len(uids) - 1  # no newline inside a uid
            and b"\n\n" not in raw and raw[:1] != b"\n" and raw[-1:] != b"\n")


def names_members(attribute: str | None, kind: str | None = None) -> bool:
    """Whether a 400 is about a member (names `members`, a member, a `uid`, or no field at all):
    then the batch is bisected; one naming another field (cohort_name, partner) fails the cohort."""
    if (kind or "").replace(" ", "").lower() == MISSING:
        return False
    if not attribute:
        return True
    head = re.sub(r"\[\d+\]", "", attribute.strip()).split(".uid")[0]
    return head in MEMBER_ATTRIBUTES or head.endswith(".members")
