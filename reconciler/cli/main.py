"""The command line: parse, load, decide, act, exit code. Errors become one sentence here."""
from __future__ import annotations

import argparse
import logging
import sys

import importlib
from collections.abc import Callable

from reconciler import __version__
from reconciler.common.threads import noting_interrupts
from reconciler.common import logs
from reconciler.emulator import main as emulator_main
from reconciler.common.errors import CohortSyncError, SpecErrors

DESCRIPTION = "Keep MoEngage custom segments equal to the cohorts declared in git."


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", help="operator config (default: ./cohortsync.yaml if present)")
    common.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    # the same options after an action (`state copy --config X`), with no default: a default there
    # would undo one given before the action (`state --config X copy`)
    nested = argparse.ArgumentParser(add_help=False)
    nested.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS, help="operator config")
    nested.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="more logging")
    parser = argparse.ArgumentParser(prog="cohortsync", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"cohortsync {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", parents=[common], help="check every spec and the config")
    p.set_defaults(func="reconciler.cli.commands:validate")

    p = sub.add_parser("plan", parents=[common], help="show what apply would send, per cohort")
    _selection(p)
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    p.add_argument("--detailed-exitcode", action="store_true", help="exit 0 when nothing changes, 2 when something does")
    p.add_argument("--out", metavar="FILE", help="save the plan, for `apply --plan FILE`")
    _resync(p)
    p.set_defaults(func="reconciler.cli.commands:plan")

    p = sub.add_parser("apply", parents=[common], help="reconcile now")
    _selection(p)
    p.add_argument("--dry-run", action="store_true", help="plan and report, send nothing, write nothing")
    p.add_argument("--plan", metavar="FILE", help="apply exactly this saved plan; refused once anything moved on")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--retry-refused", action="store_true",
                   help="send again the uids MoEngage refused before (see `cohortsync refused`)")
    _resync(p)
    p.set_defaults(func="reconciler.cli.commands:apply")

    p = sub.add_parser("status", parents=[common], help="per cohort: synced members, last run, last error")
    p.add_argument("--format", choices=("text", "json"), default="text")
    _workspace(p)
    p.set_defaults(func="reconciler.cli.commands:status")

    p = sub.add_parser("history", parents=[common], help="past runs with counts")
    p.add_argument("--cohort", metavar="ID")
    p.add_argument("--limit", type=int, default=20, metavar="N")
    p.add_argument("--format", choices=("text", "json"), default="text")
    _workspace(p)
    p.add_argument("--members", action="store_true", help="the uids each run added and removed (the changelog)")
    p.add_argument("--run", metavar="RUN_ID", help="with --members: only this run")
    p.set_defaults(func="reconciler.cli.commands:history")

    p = sub.add_parser("check-users", parents=[common],
                       help="the share of each cohort's uids MoEngage does not know (read-only)")
    p.add_argument("--cohort", metavar="ID", action="append", default=[], help="only this cohort (repeatable)")
    p.add_argument("--sample", type=int, default=100, metavar="N",
                   help="uids per cohort: the first N after a shuffle seeded by --seed (default 100)")
    p.add_argument("--seed", type=int, default=0, help="the shuffle's seed: the same seed checks the same uids")
    p.add_argument("--workspace", metavar="NAME", action="append", default=[],
                   help="only this workspace (repeatable; default: every workspace each cohort is synced to)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func="reconciler.cli.checkusers:run")

    p = sub.add_parser("members", parents=[common], help="when a uid entered and left each cohort (the changelog)")
    p.add_argument("uid")
    p.add_argument("--cohort", metavar="ID", action="append", default=[], help="only this cohort (repeatable)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func="reconciler.cli.operating:members")

    p = sub.add_parser("refused", parents=[common], help="uids MoEngage refused, or that can never be valid, "
                       "kept and not sent again: uid, error, since")
    p.add_argument("--cohort", metavar="ID", action="append", default=[], help="only this cohort (repeatable)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    _workspace(p)
    p.set_defaults(func="reconciler.cli.refusing:refused")

    p = sub.add_parser("state", parents=[common], help="copy the state to another database, check it, or move "
                       "cohorts' members between it and warehouse snapshots")
    state = p.add_subparsers(dest="state_command", required=True, metavar="ACTION")
    q = state.add_parser("copy", parents=[nested], help="copy every table to another database and verify it")
    q.add_argument("--to", required=True, metavar="URL", help="the target database (a SQLAlchemy URL)")
    q.add_argument("--force", action="store_true", help="replace what the target holds")
    q.set_defaults(func="reconciler.cli.operating:state_copy")
    q = state.add_parser("check", parents=[nested], help="verify the state's invariants")
    q.set_defaults(func="reconciler.cli.operating:state_check")
    q = state.add_parser("move", parents=[nested], help="move cohorts' members to where the config wants them "
                         "(a warehouse snapshot, or the local state), checked; nothing is sent")
    q.add_argument("--cohort", metavar="ID", action="append", default=[], help="only this cohort (repeatable)")
    q.add_argument("--dry-run", action="store_true", help="say what would move, move nothing")
    q.add_argument("--format", choices=("text", "json"), default="text")
    _workspace(q)
    q.set_defaults(func="reconciler.cli.moving:state_move")
    q = state.add_parser("adopt", parents=[nested], help="take a warehouse snapshot as it stands (restored from a "
                         "backup, or edited on purpose) and record it; then apply --resync makes MoEngage match")
    q.add_argument("--cohort", metavar="ID", action="append", required=True, help="the cohort (repeatable)")
    _workspace(q)
    q.set_defaults(func="reconciler.cli.moving:state_adopt")

    p = sub.add_parser("notify", parents=[common], help="alerts: send a test event to the notify targets")
    notify = p.add_subparsers(dest="notify_command", required=True, metavar="ACTION")
    q = notify.add_parser("test", parents=[nested], help="send a test event now")
    q.add_argument("--target", type=int, metavar="N", help="only target N (from 0, in config order)")
    q.set_defaults(func="reconciler.cli.operating:notify_test")

    p = sub.add_parser("run", parents=[common], help="the daemon: reconcile on file change, timer and trigger")
    p.add_argument("--log-format", choices=("text", "json"), default="text", help="json for log collectors")
    _workspace(p)
    p.set_defaults(func="reconciler.daemon.running:run", verbose_floor=1)

    p = sub.add_parser("trigger", parents=[common], help="ask a running daemon to reconcile now (CI after a merge)")
    p.add_argument("--url", help="the daemon's URL (default: COHORTSYNC_URL, else http://<daemon.listen>)")
    p.add_argument("--cohort", metavar="ID", action="append", default=[], help="only this cohort (repeatable)")
    p.add_argument("--wait", action="store_true", help="wait for the run's outcome: exit 0 when every cohort converged")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds: for the daemon's answer (default 10), with --wait for the outcome (default 3600)")
    p.add_argument("--format", choices=("text", "json"), default="text", help="how to print the answer or outcome")
    p.set_defaults(func="reconciler.daemon.triggering:run")

    p = sub.add_parser("emulator", parents=[common], help="a local stand-in for the MoEngage API")
    emulator_main.add_arguments(p)
    p.set_defaults(func="reconciler.emulator.main:run")

    p = sub.add_parser("demo", parents=[common], help="the example cohorts applied to the emulator, end to end")
    p.add_argument("--dir", default="cohortsync-demo", metavar="DIR",
                   help="the demo's folder: the examples are copied in where missing, the state kept there "
                        "(default: ./cohortsync-demo)")
    p.set_defaults(func="reconciler.cli.demo:run")

    p = sub.add_parser("init", parents=[common], help="start a cohorts repository: config, an example, CI, pre-commit")
    p.add_argument("dir", nargs="?", default=".", metavar="DIR", help="where (default: the current folder)")
    p.add_argument("--force", action="store_true", help="replace files that already exist")
    p.set_defaults(func="reconciler.cli.scaffold:run")

    p = sub.add_parser("dbt", parents=[common], help="dbt: trigger the cohorts whose models a dbt run rebuilt")
    dbt = p.add_subparsers(dest="dbt_command", required=True, metavar="ACTION")
    q = dbt.add_parser("trigger", parents=[nested],
                       help="reconcile the cohorts reading the models run_results.json says were built")
    q.add_argument("--run-results", metavar="PATH",
                   help="dbt's run_results.json (default: beside the manifest, target/run_results.json)")
    q.add_argument("--manifest", metavar="PATH", help="dbt's manifest.json (default: dbt.manifest)")
    q.add_argument("--url", help="the daemon's URL (default: COHORTSYNC_URL, else http://<daemon.listen>)")
    q.add_argument("--wait", action="store_true", help="wait for the run's outcome: exit 0 when every cohort converged")
    q.add_argument("--timeout", type=float, default=None,
                   help="seconds: for the daemon's answer (default 10), with --wait for the outcome (default 3600)")
    q.add_argument("--format", choices=("text", "json"), default="text", help="how to print the answer or outcome")
    q.add_argument("--dry-run", action="store_true", help="print the cohorts it would trigger, trigger none")
    q.set_defaults(func="reconciler.cli.dbt:trigger")
    return parser


def _selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cohort", metavar="ID", action="append", default=[], help="only this cohort (repeatable)")
    _workspace(p)
    p.add_argument("--force", action="store_true", help="go past the guards (allow_empty, max_removals)")
    p.add_argument("--prune", action="store_true", help="empty cohorts whose spec was deleted")


def _workspace(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workspace", metavar="NAME", action="append", default=[],
                   help="only this MoEngage workspace (repeatable; `default` is the moengage: block)")


def _resync(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resync", action="store_true",
                   help="re-send every desired member, and remove every uid the changelog says left")


def _command(target: str) -> Callable[[argparse.Namespace], int]:
    """Import a command's module only when it runs: `plan` need not load the daemon's libraries."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(max(args.verbose, getattr(args, "verbose_floor", 0)), getattr(args, "log_format", "text"))
    try:
        with noting_interrupts():  # a Ctrl-C lost in a finalizer still ends a read that would wait (common/threads.py)
            return int(_command(args.func)(args) or 0)
    except SpecErrors as exc:
        print(exc, file=sys.stderr)
        return 1
    except CohortSyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `cohortsync plan | head`
        sys.stderr.close()
        return 0
    except Exception as exc:  # a bug: one line, not a traceback that may quote the input (-vv logs it)
        logging.getLogger("cohortsync").debug("unexpected error", exc_info=True)
        print(f"error: unexpected {type(exc).__name__}, a bug in cohortsync rather than in the input "
              "(run again with -vv for the traceback, and report it)", file=sys.stderr)
        return 1
