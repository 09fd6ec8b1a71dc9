"""MoEngage's documented checks of a request, as the emulator applies them; each refusal a `Reply`.

Only what MoEngage's API description says is refused, in its error shape: a missing field is its
`MissingAttributeError`, a wrong one a `ValidationError` naming the attribute.
"""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection

from reconciler.emulator import lookup
from reconciler.moengage.batching import ACTIONS
from reconciler.specs.rules import DEFAULT_NAME_RULE, cohort_name_problem

MISSING = "MissingAttributeError"  # MoEngage's documented error type for an absent field or header
INVALID_MEMBER = "InvalidAttributeError"  # our choice for a member MoEngage refuses (its docs show no example)


class Reply(Exception):
    """An error answer in MoEngage's documented shape."""

    def __init__(self, status: int, message: str, attribute: str = "", type_: str = "", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.attribute, self.type = status, message, attribute, type_
        self.headers = headers or {}


def basic_credentials(header: str) -> tuple[str | None, str]:
    """(user, password) of a Basic Authorization header, or (None, "") when it is not one."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None, ""
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None, ""
    return (user, password) if sep else (None, "")


def validate_body(raw: bytes, name_rule: str = DEFAULT_NAME_RULE) -> dict:
    """MoEngage's documented body checks; a Reply(400) names the attribute at fault.

    Only what the API description says: strings have no minimum length and `members` no minimum
    count, so an empty partner, cohort_id or uid, or no members, are accepted (an empty uid matches nobody).
    """
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Reply(400, f"Malformed JSON: {exc}", "body", "Malformed JSON")
    if not isinstance(body, dict):
        raise Reply(400, "The body must be a JSON object", "body", "ValidationError")
    _require(body, "action", "action")
    if body["action"] not in ACTIONS:
        raise Reply(400, f"action must be one of {', '.join(ACTIONS)}", "action", "ValidationError")
    _require(body, "partner", "partner")
    params = _require(body, "parameters", "parameters", dict, "an object")
    _require(params, "cohort_id", "parameters.cohort_id")
    problem = cohort_name_problem(_require(params, "cohort_name", "parameters.cohort_name"), name_rule)
    if problem:
        raise Reply(400, problem, "parameters.cohort_name", "ValidationError")
    if "cohort_description" in params and not isinstance(params["cohort_description"], str):
        raise Reply(400, "cohort_description must be a string", "parameters.cohort_description", "ValidationError")
    for i, member in enumerate(_require(params, "members", "parameters.members", list, "a list")):
        if not isinstance(member, dict) or not isinstance(member.get("uid"), str):
            raise Reply(400, 'each member must be {"uid": "<string>"}', f"parameters.members[{i}]", "ValidationError")
    return body


def _require(obj: dict, key: str, attribute: str, kind: type = str, what: str = "a string") -> object:
    """The value of a required field: absent is MoEngage's MissingAttributeError, the wrong type a ValidationError."""
    if key not in obj:
        raise Reply(400, f"{attribute} is required", attribute, MISSING)
    if not isinstance(obj[key], kind):
        raise Reply(400, f"{attribute} must be {what}", attribute, "ValidationError")
    return obj[key]


def refused_member(members: list[dict], refuse: Collection[str], entry: dict) -> None:
    """A Reply(400) naming the first member whose uid `--refuse-uids` lists, as MoEngage refuses a
    request as a whole for one invalid member: attribute `parameters.members[i].uid`."""
    if not refuse:
        return
    refused = [(i, m["uid"]) for i, m in enumerate(members) if m["uid"] in refuse]
    if refused:
        entry["refused"] = [uid for _, uid in refused]
        i, uid = refused[0]
        raise Reply(400, f"parameters.members[{i}].uid is not a valid user id", f"parameters.members[{i}].uid",
                    INVALID_MEMBER)


def lookup_identifiers(raw: bytes) -> list[dict]:
    """The Get User API's identifiers, its refusals as a Reply(400)."""
    try:
        return lookup.identifiers(raw)
    except lookup.LookupRefused as refused:
        raise Reply(400, refused.message, refused.attribute, refused.type) from None
