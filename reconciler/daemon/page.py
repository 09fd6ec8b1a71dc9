"""The status page's routes: the page itself, its static files, a cohort's JSON and its charts.

Everything the page needs ships in the wheel (reconciler/daemon/static) and is served by the
daemon on the listener /status uses, under the same rules: GET needs no token and shows no
secret; the only action, POST /reconcile, stays where it was, behind the bearer token. The
headers forbid inline scripts and styles, framing and any other origin, so a cohort name that
slipped past the page's escaping still could not run.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote

from reconciler.daemon import charts

STATIC_FILES = {  # URL path -> (file in reconciler/daemon/static, content type)
    "/static/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/static/page.css": ("page.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
PAGE = ("index.html", "text/html; charset=utf-8")
_COHORT = re.compile(r"^/cohorts/([^/]+)(?:/(status\.json|size\.svg|changes\.svg))?/?$")
POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
          "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=lambda: dict(HEADERS))


def static(name: str) -> bytes:
    return resources.files("reconciler.daemon").joinpath("static", name).read_bytes()


def answer(path: str, query: str, cohort: Callable[[str], dict[str, Any] | None]) -> Answer | None:
    """The answer to a GET of one of the page's paths, or None when the path is not the page's."""
    if path == "/":
        return Answer(200, static(PAGE[0]), PAGE[1])
    if path in STATIC_FILES:
        name, ctype = STATIC_FILES[path]
        return Answer(200, static(name), ctype)
    match = _COHORT.match(path)
    if match is None:
        return None
    cohort_id, what = unquote(match.group(1)), match.group(2)
    if what is None:  # the page renders the cohort view from status.json
        return Answer(200, static(PAGE[0]), PAGE[1])
    doc = cohort(cohort_id)
    if doc is None:
        return _json(404, {"error": f"no cohort {cohort_id}"})
    if what == "status.json":
        return _json(200, doc)
    width = charts.clamp_width((parse_qs(query).get("width") or [None])[0])
    draw = charts.size_chart if what == "size.svg" else charts.changes_chart
    return Answer(200, draw(cohort_id, doc["series"], width).encode(), "image/svg+xml; charset=utf-8")


def _json(status: int, payload: dict[str, Any]) -> Answer:
    return Answer(status, json.dumps(payload).encode(), "application/json",
                  {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
