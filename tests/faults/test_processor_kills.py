"""``pipeline process`` SIGKILLed at 20 random points of one run, and started again after each kill: rows exact,
all final, every trade merged exactly once.

One run: one topic, one checkpoint, one database. Each life of the processor is fed its own Binance archive (a day
of one symbol: trades, then the heartbeat that closes the day) by ``pipeline replay``, started beside it, so every
life has work whatever the machine's speed. The points are drawn from a seeded ``random.Random`` (``SEED``), of
three kinds: start-up (a delay after the start: JVM, Spark session, schema check, the query's start, the
re-execution of the batch a kill interrupted), in a batch (a delay after this life's query logged or committed a
batch: Spark's jobs, the MySQL transaction, Spark's commit, or just after it), and just after a batch's MySQL
transaction committed (usually before Spark's commit: the restarted query runs the batch again and the ledger must
find it applied). Before each restart the killed driver's JVM must be gone (it exits when its Python driver dies),
so no two drivers ever share the checkpoint. The run ends with ``pipeline process --until-idle``.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipeline.core.trades import Trade
from pipeline.settings import Settings
from tests.archive_builder import synthetic_trades, write_archive
from tests.cli_helpers import env_for
from tests.faults.daemons import children, wait_gone
from tests.faults.scenario import Processes, ledger, tail, verdict, wait_until

SEED = 10
KILLS = 20
# Kinds of kill points and their odds: start-up, in a batch, just after a batch's MySQL commit (before Spark's).
ODDS = (("start-up", 0.25), ("in a batch", 0.5), ("after a MySQL commit", 0.25))
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "ADAUSDT")
FIRST_DAY = datetime(2025, 3, 1, tzinfo=UTC)
TRADES_PER_ARCHIVE = 600  # about 10 minutes of trades, 1 s apart on average


def _archives(directory: Path) -> list[tuple[Path, list[Trade]]]:
    """One archive per life: symbols in turn, each symbol's days in order (agg ids growing day after day)."""
    out = []
    for life in range(KILLS + 1):
        symbol, day = SYMBOLS[life % len(SYMBOLS)], FIRST_DAY + timedelta(days=life // len(SYMBOLS))
        start_ms = int(day.timestamp() * 1000) + 3_600_000 + life * 60_000
        trades = synthetic_trades(symbol, start_ms, TRADES_PER_ARCHIVE, seed=life,
                                  first_agg_id=1 + (life // len(SYMBOLS)) * 10_000, spacing_ms=1_000)
        out.append((write_archive(directory, symbol, f"{day:%Y-%m-%d}", trades, zipped=True, checksum=True), trades))
    return out


def _last(directory: Path) -> int:
    """The newest batch id in a checkpoint log (offsets: planned; commits: done); -1 if none."""
    return max((int(p.name) for p in directory.glob("[0-9]*")), default=-1)


def test_processor_sigkilled_at_20_random_points(fault_settings: Settings, tmp_path: Path,
                                                 fault_summary: list[dict[str, Any]]) -> None:
    url = fault_settings.mysql_url
    assert url is not None and fault_settings.checkpoint_dir is not None
    stream = fault_settings.checkpoint_dir / "stream"
    started = time.monotonic()
    (tmp_path / "archives").mkdir()
    archives = _archives(tmp_path / "archives")
    rng = random.Random(SEED)
    env = env_for(fault_settings)
    run = Processes(tmp_path)
    kinds = dict.fromkeys((kind for kind, _ in ODDS), 0)
    try:
        for kill in range(KILLS):
            if kill:
                assert run.wait("replay", 120) == 0, tail(run.log("replay"))
            planned, committed = _last(stream / "offsets"), _last(stream / "commits")
            life = time.monotonic()
            proc = run.start("process", ["process", "--trigger-seconds", "0.5"], env)
            run.start("replay", ["replay", "--source", str(archives[kill][0])], env)
            kind = rng.choices([k for k, _ in ODDS], [w for _, w in ODDS])[0]
            if kind == "start-up":
                delay = rng.uniform(0.5, 12.0)
                wait_until(lambda: time.monotonic() - life >= delay, 60, "start-up delay",  # noqa: B023
                           lambda: run.check_alive("process"), 0.05)
            elif kind == "in a batch":
                delay = rng.uniform(0.0, 1.5)
                wait_until(lambda: _last(stream / "offsets") > planned or  # noqa: B023
                           _last(stream / "commits") > committed, 120, "a batch of this life",  # noqa: B023
                           lambda: run.check_alive("process"), 0.05)
                time.sleep(delay)
            else:
                applied = ledger(url)["batches"]
                wait_until(lambda: ledger(url)["batches"] > applied, 120, "a batch committed in MySQL",  # noqa: B023
                           lambda: run.check_alive("process"), 0.02)
            run.check_alive("process")
            jvm = children(proc.pid)
            proc.kill()
            proc.wait(timeout=30)
            wait_gone(jvm, 60)
            kinds[kind] += 1
            with run.log("process").open("a") as log:
                log.write(f"\n=== SIGKILL {kill + 1}/{KILLS} ({kind}) after {time.monotonic() - life:.1f} s\n")
        assert run.wait("replay", 120) == 0, tail(run.log("replay"))
        run.start("replay", ["replay", "--source", str(archives[KILLS][0])], env)  # the last life's own work
        assert run.wait("replay", 120) == 0, tail(run.log("replay"))
        run.start("final", ["process", "--until-idle"], env)
        assert run.wait("final", 400) == 0, tail(run.log("final"))
    finally:
        run.kill_all()
    assert "0 late trades" in run.log("final").read_text()
    # Informational (the writer's wording): batches Spark ran again that the ledger found applied already.
    skipped = sum(run.log(n).read_text().count("was applied before") for n in ("process", "final"))
    detail = (f"seed {SEED}: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items())
              + f"; {len(archives)} archives, then --until-idle; {skipped} re-executed batches found in the ledger")
    verdict("processor SIGKILL x20", url, [t for _, trades in archives for t in trades], faults=KILLS,
            started=started, detail=detail, summary=fault_summary, bootstrap=fault_settings.kafka_bootstrap,
            topic=fault_settings.topic)
