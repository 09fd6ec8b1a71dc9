"""Writing a complete HTTP/1.1 answer from a BaseHTTPRequestHandler (the daemon's and the emulator's)."""
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


def discard_body(handler: BaseHTTPRequestHandler) -> None:
    """Read and drop the request body, so the client can read our answer instead of a reset.

    A body larger than DRAIN_CAP (or with a broken Content-Length) is not read: the connection
    is closed after the answer instead.
    """
    try:
        length = int(handler.headers.get("Content-Length") or 0)
    except ValueError:
        length = -1
    if length < 0 or length > DRAIN_CAP:
        handler.close_connection = True
        return
    while length > 0:
        chunk = handler.rfile.read(min(length, 1 << 16))
        if not chunk:
            break
        length -= len(chunk)
