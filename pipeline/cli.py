"""Binance trades -> Kafka -> Spark -> 1-minute windows in MySQL; settings from the PIPELINE_* variables.

The ``pipeline`` command line: parses arguments, builds the composition root from the environment's settings and
runs one command (``pipeline.commands``) with it.

Every ``PipelineError`` becomes one line on stderr and its exit code; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import NoReturn

from pipeline.bench import command as bench
from pipeline.commands import (
    backfill,
    demo,
    migrate,
    process,
    produce,
    prune,
    reconcile,
    record,
    replay,
    report,
    stack,
    status,
)
from pipeline.errors import run_command
from pipeline.settings import Settings

COMMANDS = (stack, produce, replay, process, migrate, report, status, demo, backfill, reconcile, record, bench, prune)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One line, not argparse's usage block: what is wrong and where to read more."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pipeline", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pipeline.compose import Root

    args = build_parser().parse_args(argv)
    return run_command(lambda: int(args.func(args, Root(Settings.from_mapping(os.environ)))), args.verbose)
