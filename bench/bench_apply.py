"""`apply` of a 1M-member initial sync to the emulator, at the API's limit.

Target (issue 6): requests within one of the byte-budget optimum, no 429, and the configured
rate at least 97% used. A short window (default 10/2s: the average pace of 300/60s) keeps the run
short. Baseline, measured in the same run: fixed batches of 1,000 uids through the same client.
"""
from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

from common import churned, cohortsync, measure, parser, report

from reconciler.moengage.batching import Batch, Envelope, member_bytes
from reconciler.moengage.client import MoEngageClient
from reconciler.emulator.process import EmulatorProcess
from reconciler.settings.model import MoEngageSettings, RateLimit, Secret

WS, KEY = "BENCH_WS", "bench-key"


def main() -> int:
    p = parser(__doc__, "200k")
    p.add_argument("--rate", default="10/2s", type=RateLimit.parse, help="the window, client and emulator alike")
    args = p.parse_args()
    _, uids = churned(args.size, 0.0)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        (work / "cohorts" / "uids").mkdir(parents=True)
        (work / "cohorts" / "uids" / "big.txt").write_text("\n".join(uids) + "\n")
        (work / "cohorts" / "big.yaml").write_text("id: big\nname: .Big\nsource: {file: uids/big.txt}\n")
        with EmulatorProcess("--rate-limit", str(args.rate), "--workspace-id", WS, "--api-key", KEY) as emu:
            cfg = work / "cohortsync.yaml"
            cfg.write_text(f"cohorts_dir: cohorts\nstate_url: sqlite:///{work / 'state.db'}\npartner: bench\n"
                           f"moengage: {{base_url: '{emu.url}', workspace_id: {WS}, api_key: {KEY}, "
                           f"rate_limit: '{args.rate}'}}\n")
            run = measure(cohortsync("apply", "--config", str(cfg)))
            log = emu.requests()
            sent = [r for r in log if r["cohort_id"] == "big"]
            assert emu.segments()["big"]["size"] == len(uids), run.output
            baseline_seconds, baseline_requests = fixed_batches(emu.url, uids, args.rate)
    statuses = {r["status"] for r in sent}
    span = sent[-1]["time"] - sent[0]["time"]
    fastest = (math.ceil(len(sent) / args.rate.requests) - 1) * args.rate.window
    used = fastest / span if fastest else 1.0  # all in one burst: the rate was never the limit
    envelope = Envelope("add_members", "bench", "big", ".Big")
    room = MoEngageSettings().max_payload_bytes - len(Batch.build(envelope, []).body)  # the default the run used
    optimum = math.ceil((sum(len(member_bytes(u)) + 1 for u in uids) - 1) / room)
    rows = [("members", f"{len(uids):,} new uids of 12 characters, rate {args.rate}"),
            ("baseline: fixed batches of 1,000 uids", f"{baseline_requests:,} requests in {baseline_seconds:.2f} s"),
            ("cohortsync apply", f"{len(sent):,} requests in {span:.2f} s of sending ({run.seconds:.2f} s in all)"),
            ("byte-budget optimum", f"{optimum:,} requests (a lower bound)"),
            ("rate used", f"{used:.1%} (the fastest the window allows: {fastest:.2f} s)"),
            ("answers", ", ".join(map(str, sorted(statuses, key=str))))]
    report(f"bench_apply --size {args.size:,}", rows, [
        (f"requests within one of the optimum ({len(sent)} vs {optimum})", len(sent) <= optimum + 1),
        ("no 429", 429 not in statuses),
        (f"rate at least 97% used ({used:.1%})", used >= 0.97)], size=args.size, target=1_000_000)
    return 0


def fixed_batches(url: str, uids: list[str], rate: RateLimit) -> tuple[float, int]:
    """What a client sending fixed 1,000-uid batches takes, through the same limiter, to a fresh cohort."""
    client = MoEngageClient(MoEngageSettings(workspace_id=WS, api_key=Secret(KEY), base_url=url, rate_limit=rate))
    envelope = Envelope("add_members", "bench", "baseline", ".Baseline")
    start = time.perf_counter()
    requests = 0
    for i in range(0, len(uids), 1000):
        for _ in client.send(Batch.build(envelope, uids[i:i + 1000])):
            requests += 1
    client.close()
    return time.perf_counter() - start, requests


if __name__ == "__main__":
    sys.exit(main())
