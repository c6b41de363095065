"""``pipeline bench``: its options, checked, then the bench package's ``run``. The command lives with the bench (not
under ``pipeline.commands``), so the commands and the bench each import only downwards."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from pipeline.commands.context import Context
from pipeline.errors import ConfigError
from pipeline.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="measure throughput, freshness and memory side by side with Spark and "
                                     "kafka-python alone; print a table and write JSON")
    p.add_argument("--quick", action="store_true", help="small sizes (20,000 trades, 10 s of live pace): a smoke "
                                                        "test")
    p.add_argument("--out", help="the JSON report (default: ./bench/bench-<UTC time>.json)")
    p.add_argument("--trades", type=int, help="trades on the pre-loaded topic (default 1,000,000)")
    p.add_argument("--live-seconds", type=float, help="freshness run at live pace (default 120)")
    p.add_argument("--freshness-runs", type=int, help="how many times the freshness run is repeated; the worst is "
                                                      "shown (default 3; --quick 1)")
    p.add_argument("--rate", type=int, help="live pace in trades/s over the 5 symbols (default 500)")
    p.add_argument("--ledger-rows", type=int, help="ledger rows for the batch-time comparison (default 43,200)")
    p.add_argument("--ledger-seconds", type=float, help="each live run of the ledger comparison (default 45)")
    p.add_argument("--only", help="some of: processor,replay,outage,freshness,ledger (default: all)")
    p.add_argument("--spark-master", help="run the processor and Spark's raw read on this master, e.g. "
                   "spark://host:7077 (default: PIPELINE_SPARK_MASTER, else local[2]); executors' sizes come from "
                   "PYSPARK_SUBMIT_ARGS, e.g. '--executor-memory 512m pyspark-shell'")
    p.add_argument("--partitions", type=int, help="partitions of each bench topic (default: as the pipeline "
                                                  "creates them)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, ctx: Context) -> int:
    from pipeline import bench

    parts = tuple(p.strip() for p in args.only.split(",")) if args.only else bench.PARTS
    if not set(parts) <= set(bench.PARTS):
        raise ConfigError(f"--only takes a comma-separated list of {', '.join(bench.PARTS)}, got {args.only!r}")
    base = bench.QUICK if args.quick else bench.FULL
    sizes = dataclasses.replace(base, **{k: v for k, v in (
        ("trades", args.trades), ("live_seconds", args.live_seconds), ("ledger_seconds", args.ledger_seconds),
        ("ledger_rows", args.ledger_rows), ("rate", args.rate), ("freshness_runs", args.freshness_runs))
        if v is not None})
    settings = ctx.settings
    if args.spark_master:  # the processor runs and Spark's raw count are children: they read it from there
        ctx = ctx.derive(Settings.from_mapping({**settings.environment(), "PIPELINE_SPARK_MASTER": args.spark_master}))
    return bench.run(ctx, bench.Options(sizes, args.quick, parts, Path(args.out) if args.out else None,
                                         args.partitions or settings.topic_partitions))
