"""The ``pipeline`` command line: the composition root. Parses arguments, builds settings and adapters, runs.

Every ``PipelineError`` becomes one line on stderr and its exit code; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Sequence

from pipeline.errors import PipelineError
from pipeline.settings import Settings


def _stack(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.services import stack

    if args.action == "up":
        print("starting Kafka and MySQL (first run downloads Kafka from Maven Central)...", file=sys.stderr)
        conns, started = stack.up(settings, os.environ)
        verb = "started" if started else "already running"
        print(f"stack {verb} ({conns.backend}): kafka {conns.kafka_bootstrap}, mysql {conns.mysql_url}")
        print('load its settings into a shell with: eval "$(pipeline stack env)"')
        return 0
    if args.action == "down":
        print("stack stopped" if stack.down(settings) else "no local stack was running")
        return 0
    if args.action == "env":
        conns = stack.connections(settings)
        print(f"PIPELINE_KAFKA_BOOTSTRAP={conns.kafka_bootstrap}")
        print(f"PIPELINE_MYSQL_URL={shlex.quote(conns.mysql_url.render())}")
        return 0
    backend, services = stack.status(settings)
    if backend == "none":
        print("stack: not running (start it with `pipeline stack up`)")
        return 1
    print(f"stack: {backend}")
    for s in services:
        print(f"  {s.name}: {'up' if s.ok else 'DOWN'} - {s.detail}")
    return 0 if all(s.ok for s in services) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail to stderr")
    sub = parser.add_subparsers(dest="command", required=True)
    p_stack = sub.add_parser("stack", help="start, stop, inspect the local Kafka + MySQL")
    p_stack.add_argument("action", choices=["up", "down", "status", "env"])
    p_stack.set_defaults(func=_stack)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # kafka-python logs every refused connection while a broker starts; our own errors say what matters.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        settings = Settings.from_mapping(os.environ)
        return int(args.func(args, settings))
    except PipelineError as exc:
        print(f"pipeline: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pipeline: interrupted", file=sys.stderr)
        return 130
