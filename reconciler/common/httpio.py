"""HTTP/1.1 plumbing of a BaseHTTPRequestHandler, shared by the daemon and the emulator.

Request bodies in (Content-Length read once, a refused body drained so the client reads our
answer and not a reset) and complete answers out (an exact Content-Length, as keep-alive needs).
"""
from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler


def send(handler: BaseHTTPRequestHandler, status: int, data: bytes, content_type: str,
         headers: dict[str, str] | None = None) -> None:
    """Status, headers with an exact Content-Length (keep-alive needs it), body."""
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    if handler.close_connection:
        handler.send_header("Connection", "close")
    handler.end_headers()
    handler.wfile.write(data)


def send_json(handler: BaseHTTPRequestHandler, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
    send(handler, status, json.dumps(payload).encode(), "application/json", headers)


DRAIN_CAP = 16 << 20  # bytes of a refused body read and dropped, so the client sees the answer


class RefusedBody(Exception):
    """A request body not read: over the limit (`length` says how long), or of no readable length (None)."""

    def __init__(self, length: int | None) -> None:
        super().__init__(f"a body of {length} bytes" if length is not None else "a Content-Length that is not a number")
        self.length = length


def content_length(handler: BaseHTTPRequestHandler) -> int | None:
    """The length the client declared: 0 without a header, None when it is not a whole number of bytes."""
    try:
        length = int(handler.headers.get("Content-Length") or 0)
    except ValueError:
        return None
    return length if length >= 0 else None


def read_body(handler: BaseHTTPRequestHandler, limit: int) -> bytes:
    """The request body; RefusedBody, after the body is drained, when it is over `limit` bytes or its length is unreadable."""
    length = content_length(handler)
    if length is None or length > limit:
        discard_body(handler)
        raise RefusedBody(length)
    return handler.rfile.read(length) if length else b""


def discard_body(handler: BaseHTTPRequestHandler) -> None:
    """Read and drop the request body, so the client can read our answer instead of a reset.

    A body larger than DRAIN_CAP (or with a broken Content-Length) is not read: the connection
    is closed after the answer instead.
    """
    length = content_length(handler)
    if length is None or length > DRAIN_CAP:
        handler.close_connection = True
        return
    while length > 0:
        chunk = handler.rfile.read(min(length, 1 << 16))
        if not chunk:
            break
        length -= len(chunk)
