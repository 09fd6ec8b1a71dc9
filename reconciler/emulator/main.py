"""`cohortsync emulator`: run the stand-in server until stopped."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from reconciler.emulator.server import Emulator, EmulatorConfig, EmulatorServer
from reconciler.emulator.store import SegmentStore
from reconciler.settings.model import NAME_RULES, MoEngageSettings, RateLimit, parse_duration
from reconciler.specs.rules import MAX_ACTIVE_SEGMENTS

API = MoEngageSettings()  # the real API's limits are the client's defaults: one declaration serves both


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    p.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one (default: 8080)")
    p.add_argument("--workspace-id", action="append", default=[],
                   help="a workspace whose credentials pass, with the --api-key given in the same place; repeat "
                        "for several workspaces (segments are kept per workspace)")
    p.add_argument("--api-key", action="append", default=[], help="the Data API key of the --workspace-id beside it")
    p.add_argument("--credentials", metavar="FILE", help="more workspaces, one `workspace_id:api_key` a line")
    p.add_argument("--users", metavar="FILE", help="uids MoEngage knows, one a line; others are accepted, not matched")
    p.add_argument("--db", metavar="PATH", default=":memory:", help="SQLite file for segments (default: in memory)")
    p.add_argument("--rate-limit", default=API.rate_limit, type=RateLimit.parse,
                   help=f"N/Ss sliding window (default: {API.rate_limit}, as moengage.rate_limit)")
    p.add_argument("--max-payload-bytes", type=int, default=API.max_payload_bytes,
                   help=f"request body limit (default: {API.max_payload_bytes}, as moengage.max_payload_bytes)")
    p.add_argument("--lookup-rate-limit", default=API.lookup_rate_limit, type=RateLimit.parse,
                   help=f"N/Ss window of the user lookup, apart from the other (default: {API.lookup_rate_limit}, "
                        "as moengage.lookup_rate_limit)")
    p.add_argument("--name-rule", choices=NAME_RULES, default=API.name_rule,
                   help=f"whether cohort names must start with '.' (default: {API.name_rule}, as moengage.name_rule)")
    p.add_argument("--max-segments", type=int, default=MAX_ACTIVE_SEGMENTS,
                   help=f"active segments a workspace holds; one more is refused with a 429 (default: {MAX_ACTIVE_SEGMENTS})")
    p.add_argument("--suspended", action="store_true", help="answer 403 to everything, as for a suspended account")
    p.add_argument("--error-rate", type=float, default=0.0, help="fraction of requests answered 500")
    p.add_argument("--throttle-rate", type=float, default=0.0, help="fraction answered 429 with Retry-After")
    p.add_argument("--retry-after", type=parse_duration, default=1.0, help="Retry-After of injected 429s (default 1s)")
    p.add_argument("--drop-rate", type=float, default=0.0, help="fraction of connections closed with no answer")
    p.add_argument("--lose-answer-rate", type=float, default=0.0,
                   help="fraction applied, then the connection closed with no answer")
    p.add_argument("--latency", type=parse_duration, default=0.0, help="added to every API request, e.g. 50ms")
    p.add_argument("--answer-latency", type=parse_duration, default=0.0,
                   help="wait between applying a request and answering it, e.g. 2s")
    p.add_argument("--refuse-uids", metavar="FILE_OR_LIST", default="",
                   help="uids answered 400 naming the member (a FILE, one a line, or a comma-separated list); "
                        "GET /_emulator/refused shows them, POST /_emulator/config {\"refuse_uids\": [...]} changes them")
    p.add_argument("--seed", type=int, help="seed for fault injection, for reproducible runs")


def credentials(args: argparse.Namespace) -> dict[str, str]:
    """Workspace id -> Data API key, from --workspace-id/--api-key pairs and a --credentials file."""
    if len(args.workspace_id) != len(args.api_key):
        raise SystemExit("emulator: give one --api-key for each --workspace-id")
    found = dict(zip(args.workspace_id, args.api_key))
    if args.credentials:
        with open(args.credentials, encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                if line.strip() and not line.lstrip().startswith("#"):
                    workspace, sep, key = line.strip().partition(":")
                    if not sep or not workspace or not key:
                        raise SystemExit(f"emulator: {args.credentials}:{number}: not workspace_id:api_key")
                    found[workspace] = key
    return found


def build_server(args: argparse.Namespace) -> EmulatorServer:
    accounts = credentials(args)
    config = EmulatorConfig(
        credentials=accounts, rate_limit=args.rate_limit,
        max_payload_bytes=args.max_payload_bytes, lookup_rate_limit=args.lookup_rate_limit, name_rule=args.name_rule,
        max_segments=args.max_segments, suspended=args.suspended, error_rate=args.error_rate,
        throttle_rate=args.throttle_rate, drop_rate=args.drop_rate, lose_answer_rate=args.lose_answer_rate,
        latency=args.latency, answer_latency=args.answer_latency,
        retry_after=args.retry_after, seed=args.seed, refuse_uids=frozenset(uid_list(args.refuse_uids)),
    )
    users = load_users(args.users) if args.users else None
    legacy = next(iter(accounts)) if len(accounts) == 1 else ""  # the owner of a file from before workspaces
    return EmulatorServer((args.host, args.port), Emulator(config, SegmentStore(args.db, legacy), users))


def load_users(path: str) -> set[str]:
    with open(path, encoding="utf-8") as fh:
        return {line.strip() for line in fh if line.strip()}


def uid_list(value: str) -> set[str]:
    """--refuse-uids: a file of uids (one a line), or a comma-separated list."""
    if value and os.path.isfile(value):
        return load_users(value)
    return {u.strip() for u in value.split(",") if u.strip()}


def run(args: argparse.Namespace) -> int:
    server = build_server(args)
    print(f"cohortsync emulator listening on {server.url}", flush=True)
    stop = threading.Event()

    def _stop(*_: object) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        server.emulator.store.close()
    print("cohortsync emulator stopped", file=sys.stderr)
    return 0
