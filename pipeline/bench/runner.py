"""A bench run: every selected part, one after the other, on the services the context resolves; the report as JSON
and a table."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.adapters import kafka_io
from pipeline.bench import report as show
from pipeline.bench.options import LIVE_TRIGGER_S, PARTS, Options
from pipeline.bench.probes import RssSampler
from pipeline.bench.resources import Services, connect
from pipeline.bench.scenarios import Bench
from pipeline.bench.workload import generate
from pipeline.commands.context import Context
from pipeline.errors import ConfigError


def run(ctx: Context, options: Options) -> int:
    """``pipeline bench``: measures, writes the JSON report (``options.out``, else ``./bench/bench-<time>.json``),
    prints the table; 0."""
    out = options.out or show.default_out()
    report = measure(ctx, options)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(show.table(report))
    print(f"\nJSON: {out.resolve()}")
    return 0


def measure(ctx: Context, options: Options) -> dict[str, Any]:
    """Every selected measurement, one after the other; returns the report."""
    progress = show.Progress()
    sizes = options.sizes
    if sizes.trades < 1000 or sizes.rate < 10 or sizes.live_seconds < 5 or sizes.ledger_seconds < 5:
        raise ConfigError("bench: --trades must be at least 1000, --rate at least 10, --live-seconds and "
                          "--ledger-seconds at least 5")
    services = connect(ctx, progress)
    report = _header(options, services)
    figures: dict[str, Any] = report["figures"]
    started = time.monotonic()
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pipeline-bench-")))
        rss = stack.enter_context(RssSampler(services.pids()))
        parts = _Parts(Bench(services, sizes, report["sizes"]["partitions"], work, progress, rss),
                       [p for p in PARTS if p in options.parts], figures)
        report["run_id"] = parts.bench.run  # in every topic's and database's name
        if {"processor", "replay"} & set(parts.steps):
            parts.archives(stack)
        if "outage" in parts.steps:
            parts.outage()
        if "freshness" in parts.steps:
            parts.freshness()
        if "ledger" in parts.steps:
            parts.ledger()
        rss.sample()
        figures["peak_rss_mib"] = _peaks(rss.peaks)
    show.derive(figures)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["targets"] = show.targets(figures)
    return report


def _header(options: Options, services: Services) -> dict[str, Any]:
    report: dict[str, Any] = {
        "version": 1, "started_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "pipeline bench " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["bench"] else sys.argv[1:]),
        "quick": options.quick, "sizes": dataclasses.asdict(options.sizes), "parts": list(options.parts),
        "machine": show.machine(services.settings.spark_master),
        "services": {"backend": services.backend, "kafka": services.bootstrap,
                     "mysql": f"{services.writer.host}:{services.writer.port}"},
        "figures": {},
    }
    report["sizes"]["partitions"] = options.partitions or kafka_io.DEFAULT_PARTITIONS
    return report


def _peaks(peaks: dict[str, float]) -> dict[str, Any]:
    """Peak RSS: the Spark driver (the largest of the job's runs), Kafka, MySQL, and each process tree."""
    return {
        "spark_driver": round(max((v for k, v in peaks.items() if k not in ("kafka", "mysql", "spark_count")),
                                  default=0.0)) or None,
        "kafka": round(peaks["kafka"]) if "kafka" in peaks else None,
        "mysql": round(peaks["mysql"]) if "mysql" in peaks else None,
        "by_process": {k: round(v) for k, v in peaks.items()},
    }


class _Parts:
    """The parts of a run, each numbered on the progress lines as it starts, its figures into ``figures``."""

    def __init__(self, bench: Bench, steps: list[str], figures: dict[str, Any]) -> None:
        self.bench, self.steps, self.figures = bench, steps, figures
        self.progress, self.sizes, self.partitions = bench.progress, bench.sizes, bench.partitions
        self._number = iter(range(1, 100))
        self._total = len(steps) + (1 if {"processor", "replay"} & set(steps) else 0)

    def step(self, text: str) -> None:
        self.progress(f"{next(self._number)}/{self._total} {text}")

    def archives(self, stack: ExitStack) -> None:
        """A day of generated trades, loaded by kafka-python alone; the processor and the replay on them."""
        f, sizes = self.figures, self.sizes
        self.step(f"generating {sizes.trades:,} aggTrades over 5 symbols (one day, BTCUSDT ~50x ADAUSDT) and "
                  "loading them with kafka-python")
        data = generate(sizes.trades)
        res = stack.enter_context(self.bench.resources())  # the loaded topic lives to the end of the run
        loaded = res.topic("load", self.partitions)
        f["raw_produce"] = self.bench.raw_produce(data, loaded)
        self.progress(f"    raw produce: {f['raw_produce']['messages_per_s']:,} messages/s")
        if "processor" in self.steps:
            self.step("processor: Spark's read + count, then `pipeline process --until-idle`, on that topic")
            count = self.bench.spark_count(loaded, len(data.messages))
            f["spark_read_count"] = {**count, "steady_trades_per_s": round(data.trades / count["steady_s"])}
            self.progress(f"    Spark read + count: {count['messages_counted']:,} messages, steady "
                          f"{count['steady_s']:.2f} s, wall {count['wall_s']:.1f} s")
            p = f["processor"] = self.bench.processor(loaded, res.database("processor"), data.trades,
                                                      len(data.messages))
            self.progress(f"    processor: steady {p['steady_s']:.2f} s ({p['steady_trades_per_s']:,} trades/s), "
                          f"wall {p['wall_s']:.1f} s")
            if p["trades_counted"] != data.trades:
                self.progress(f"    WARNING: the job counted {p['trades_counted']} trades of {data.trades}")
        if "replay" in self.steps:
            self.step("replay: `pipeline replay --speed max` of the same trades as archives")
            r = f["replay"] = self.bench.replay(data, res.topic("replay", self.partitions))
            self.progress(f"    replay: {r['trades_per_s']:,} trades/s publishing, wall {r['wall_s']:.1f} s")

    def outage(self) -> None:
        self.step("outage: a long outage's live-mode traffic waiting in the topic, caught up by `pipeline process "
                  "--until-idle`: " + ", ".join(f"{n} symbols x {m / 60:g} h" for n, m in self.sizes.outages))
        self.figures["outage"] = []
        for symbols, minutes in self.sizes.outages:
            with self.bench.resources() as res:
                o = self.bench.outage(res.topic(f"outage{symbols}x{minutes}", self.partitions),
                                      res.database(f"outage{symbols}x{minutes}"), symbols, minutes)
            self.figures["outage"].append(o)
            self.progress(f"    {symbols} x {minutes / 60:g} h ({o['trades']:,} trades, {o['heartbeats']:,} "
                          f"heartbeats): caught up in {o['catch_up_s']:.1f} s ({o['batches']} batches), "
                          f"{o['windows_final']:,} of {o['windows']:,} windows final")

    def freshness(self) -> None:
        sizes = self.sizes
        self.step(f"freshness: `pipeline process` running (trigger {LIVE_TRIGGER_S:g} s), {sizes.rate} trades/s "
                  f"for {sizes.live_seconds:g} s, {sizes.freshness_runs} runs; then Spark's floor for "
                  f"{sizes.floor_seconds:g} s")
        runs = []
        for i in range(sizes.freshness_runs):
            with self.bench.resources() as res:
                runs.append(self.bench.live(f"freshness{i + 1}", res.topic(f"freshness{i + 1}", self.partitions),
                                            res.database(f"freshness{i + 1}"), sizes.live_seconds, need_final=True))
            a = runs[-1]["ack_to_visible_s"]
            self.progress(f"    run {i + 1}: ack -> visible p50 {a['p50']} s, p99 {a['p99']} s")
        # The worst run (by p99) stands for the part; every run is kept.
        self.figures["freshness"] = max(runs, key=lambda r: r["ack_to_visible_s"]["p99"] or math.inf)
        self.figures["freshness_runs"] = runs
        with self.bench.resources() as res:
            self.figures["spark_floor"] = self.bench.floor(res.topic("floor", self.partitions), sizes.floor_seconds)

    def ledger(self) -> None:
        sizes, bench = self.sizes, self.bench
        self.step(f"ledger: batch time at {sizes.rate} trades/s on an empty ledger, then on "
                  f"{sizes.ledger_rows:,} ledger rows")
        ledger: dict[str, Any] = {"rows": sizes.ledger_rows}
        with bench.resources() as res:
            ledger["empty"] = bench.live("ledger-empty", res.topic("ledger-empty", self.partitions),
                                         res.database("ledgerempty"), sizes.ledger_seconds, need_final=False)
        with bench.resources() as res:
            database, run_id = res.database("ledgermonth"), str(uuid.uuid4())
            seconds = bench.seed_ledger(database, run_id, sizes.ledger_rows)
            self.progress(f"    {sizes.ledger_rows:,} ledger rows inserted in {seconds:.1f} s")
            ledger["month"] = bench.live("ledger-month", res.topic("ledger-month", self.partitions), database,
                                         sizes.ledger_seconds, need_final=False, seed_run_id=run_id)
        empty = ledger["empty"]["batch_ms_after_warmup"]["p50"]
        month = ledger["month"]["batch_ms_after_warmup"]["p50"]
        ledger["p50_ratio_month_to_empty"] = round(month / empty, 3) if empty and month else None
        self.figures["ledger"] = ledger
