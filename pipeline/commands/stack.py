"""``pipeline stack up|down|status|env``: the local Kafka + MySQL for the demo and the tests."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import TYPE_CHECKING

from pipeline.commands.context import Context

if TYPE_CHECKING:
    from pipeline.services.connections import Connections


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stack", help="start, stop, inspect the local Kafka + MySQL")
    p.add_argument("action", choices=["up", "down", "status", "env"])
    p.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    stack = ctx.stack()
    if args.action == "up":
        print("starting Kafka and MySQL (first run downloads Kafka from Maven Central)...", file=sys.stderr)
        conns, started = stack.up()
        if conns.backend == "external":
            print("PIPELINE_KAFKA_BOOTSTRAP and PIPELINE_MYSQL_URL are set: using those services, nothing started")
            return 0
        print(f"stack {'started' if started else 'already running'} ({conns.backend}): kafka "
              f"{conns.kafka_bootstrap}, mysql {conns.mysql_url}")
        print('load its settings into a shell with: eval "$(pipeline stack env)"')
        return 0
    if args.action == "down":
        print("stack stopped" if stack.down() else "no local stack was running")
        return 0
    if args.action == "env":
        print(env_lines(stack.connections()), end="")
        return 0
    backend, services = stack.status()
    if backend == "none":
        print("stack: not running (start it with `pipeline stack up`)")
        return 1
    print(f"stack: {backend}")
    for s in services:
        print(f"  {s.name}: {'up' if s.ok else 'DOWN'} - {s.detail}")
    return 0 if all(s.ok for s in services) else 1


def env_lines(conns: Connections) -> str:
    """``NAME=value`` lines a shell can ``eval`` or ``source``, every value shell-quoted, then one ``export``."""
    values = {
        "PIPELINE_KAFKA_BOOTSTRAP": conns.kafka_bootstrap,
        "PIPELINE_MYSQL_URL": conns.mysql_url.render(),
        "PIPELINE_MYSQL_ADMIN_URL": conns.mysql_admin_url.render() if conns.mysql_admin_url else None,
        "PIPELINE_MYSQL_READ_URL": (conns.mysql_read_url or conns.mysql_url).render(),
    }
    known = {name: value for name, value in values.items() if value is not None}
    return "".join(f"{name}={shlex.quote(value)}\n" for name, value in known.items()) + f"export {' '.join(known)}\n"
