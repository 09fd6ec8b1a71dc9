"""Two MoEngage workspaces with work: synced at the same time, in about the time of one.

Each workspace has its own rate budget (MoEngage limits each account on its own), so a run sends
to both at once, one thread each. Target (issue 16): two workspaces with the same work converge
in at most 1.3 times the time of one (the sum would be 2). Baseline, measured in the same run on
the same data: the two workspaces applied one after the other (`apply --workspace`), and one
alone. Each workspace has an emulator process of its own with the same sliding window.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from common import churned, cohortsync, measure, parser, report

from reconciler.emulator.process import EmulatorProcess
from reconciler.settings.model import RateLimit

CREDENTIALS = {"default": ("BENCH_A", "key-a"), "live": ("BENCH_B", "key-b")}


def main() -> int:
    p = parser(__doc__, "50k")
    p.add_argument("--rate", default="2/1s", type=RateLimit.parse, help="each workspace's window")
    args = p.parse_args()
    _, uids = churned(args.size, 0.0)
    figures = {}
    for label, only in (("one workspace", ["--workspace", "default"]), ("both, one after the other", None),
                        ("both at once", [])):
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            work = Path(tmp)
            with EmulatorProcess(*auth("default"), "--rate-limit", str(args.rate)) as a, \
                    EmulatorProcess(*auth("live"), "--rate-limit", str(args.rate)) as b:
                config = setup(work, uids, a.url, b.url, args.rate)
                if only is None:  # the baseline: one workspace, then the other
                    seconds = sum(measure(cohortsync("apply", "--config", str(config), "--workspace", w)).seconds
                                  for w in ("default", "live"))
                else:
                    seconds = measure(cohortsync("apply", "--config", str(config), *only)).seconds
                sizes = (a.segments().get("big", {}).get("size"), b.segments().get("big", {}).get("size"))
                assert sizes[0] == len(uids) and (label == "one workspace" or sizes[1] == len(uids)), sizes
                figures[label] = (seconds, len(a.requests()) + len(b.requests()))
    one, serial, parallel = (figures[k][0] for k in ("one workspace", "both, one after the other", "both at once"))
    rows = [("members", f"{len(uids):,} new uids per workspace, each at {args.rate}"),
            *((label, f"{s:.2f} s, {n:,} requests") for label, (s, n) in figures.items()),
            ("both at once / one", f"{parallel / one:.2f}x (one after the other: {serial / one:.2f}x)")]
    report(f"bench_workspaces --size {args.size:,}", rows,
           [(f"two workspaces in at most 1.3x the time of one ({parallel / one:.2f}x)", parallel <= 1.3 * one)],
           size=args.size, target=50_000)
    return 0


def auth(workspace: str) -> list[str]:
    ws, key = CREDENTIALS[workspace]
    return ["--workspace-id", ws, "--api-key", key]


def setup(work: Path, uids: list[str], url_a: str, url_b: str, rate: RateLimit) -> Path:
    (work / "cohorts" / "uids").mkdir(parents=True)
    (work / "cohorts" / "uids" / "big.txt").write_text("\n".join(uids) + "\n")
    (work / "cohorts" / "big.yaml").write_text(
        "id: big\nname: .Big\nworkspaces: [default, live]\nsource: {file: uids/big.txt}\n")
    config = work / "cohortsync.yaml"
    (ws_a, key_a), (ws_b, key_b) = CREDENTIALS["default"], CREDENTIALS["live"]
    config.write_text(
        f"cohorts_dir: cohorts\nstate_url: sqlite:///{work / 'state.db'}\npartner: bench\n"
        f"moengage: {{base_url: '{url_a}', workspace_id: {ws_a}, api_key: {key_a}, rate_limit: '{rate}'}}\n"
        f"workspaces:\n  live: {{base_url: '{url_b}', workspace_id: {ws_b}, api_key: {key_b}, rate_limit: '{rate}'}}\n")
    return config


if __name__ == "__main__":
    sys.exit(main())
