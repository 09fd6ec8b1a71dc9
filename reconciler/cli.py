"""The command line: parse, load, decide, act, exit code. Errors become one sentence here."""
from __future__ import annotations

import argparse
import logging
import sys

from reconciler import __version__
from reconciler.emulator import main as emulator_main
from reconciler.errors import CohortSyncError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cohortsync", description=__doc__)
    parser.add_argument("--version", action="version", version=f"cohortsync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    emu = sub.add_parser("emulator", help="a local stand-in for the MoEngage API")
    emulator_main.add_arguments(emu)
    emu.set_defaults(func=emulator_main.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except CohortSyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
