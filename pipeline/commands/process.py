"""``pipeline process``: the streaming job, Kafka -> Spark -> MySQL (``pipeline.spark.job``). ``spark-submit``'s
entry point (``pipeline.submit``) and ``pipeline backfill`` run it through ``job`` too."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
from typing import TYPE_CHECKING

from pipeline.commands import args as checks
from pipeline.commands.context import Context
from pipeline.settings import DEFAULT_TRIGGER_SECONDS, Settings, max_offsets

if TYPE_CHECKING:
    from pipeline.spark.writer import JobSummary


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("process", help="the Spark job: Kafka -> 1-minute windows in MySQL")
    p.add_argument("--until-idle", action="store_true",
                   help="process everything available, finalize what can be, and exit 0")
    p.add_argument("--trigger-seconds", type=float, default=DEFAULT_TRIGGER_SECONDS,
                   help=f"micro-batch interval when running on (default {DEFAULT_TRIGGER_SECONDS:g})")
    p.add_argument("--max-offsets-per-trigger", metavar="N",
                   help="at most N Kafka messages per micro-batch (default PIPELINE_MAX_OFFSETS_PER_TRIGGER, "
                        "else 500000); lower it if a batch is too large for the driver")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    checks.positive(args.trigger_seconds, "--trigger-seconds", checks.LONGEST_WAIT_S)
    settings = ctx.settings
    if getattr(args, "max_offsets_per_trigger", None) is not None:
        settings = dataclasses.replace(settings, max_offsets_per_trigger=max_offsets(
            args.max_offsets_per_trigger.strip(), "--max-offsets-per-trigger"))
    summary = job(ctx, settings, until_idle=args.until_idle, trigger_seconds=args.trigger_seconds)
    print(f"process: {summary.line()}")
    return 0


def job(ctx: Context, settings: Settings, until_idle: bool, trigger_seconds: float = DEFAULT_TRIGGER_SECONDS,
        stop: threading.Event | None = None) -> JobSummary:
    """The streaming job over ``settings`` (topic, checkpoint, sizes) on the context's services."""
    from pipeline.spark import job as streaming

    bootstrap, url = ctx.kafka_bootstrap(), ctx.mysql_url()
    # The schema owner migrates an outdated schema on start, if known; else the writer tries (ensure_schema).
    settings = dataclasses.replace(settings, mysql_admin_url=ctx.mysql_admin_url())
    checkpoint = settings.checkpoint_dir if settings.checkpoint_dir is not None else ctx.checkpoint()
    print(f"process: {settings.topic} at {bootstrap} -> {url} (checkpoint {checkpoint})", file=sys.stderr)
    return streaming.run(settings, bootstrap, url, checkpoint, until_idle=until_idle, trigger_seconds=trigger_seconds,
                         stop=stop, spark=ctx.spark)
