"""While a live run sends, MySQL is read every POLL_S (read-only account, ``adapters.mysql.runs``): the ledger rows
newly committed (up to which offset each batch applied) and the windows newly final, each with the time it was
first seen. A trade is visible from the first batch whose end lies past its offset."""

from __future__ import annotations

import bisect
import math
import threading
import time
from typing import Any, Self

from pipeline.adapters.mysql import ledger, runs
from pipeline.bench.live import HEARTBEAT_LAG_S, Sent
from pipeline.bench.report import Progress, every, percentile, spread
from pipeline.core.windows import WINDOW_MS
from pipeline.errors import ServiceError
from pipeline.settings import MysqlUrl

POLL_S = 0.025  # live runs: how often MySQL is read for newly committed batches and final rows


class Watcher:
    def __init__(self, url: MysqlUrl, topic: str) -> None:
        self.url, self.topic = url, topic
        self.ends: dict[int, list[tuple[int, float]]] = {}  # partition -> (end offset, seen), in commit order
        self.finals: dict[tuple[str, int], float] = {}
        self.run_ids: set[str] = set()
        self._last_id = 0
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, daemon=True, name="watcher")

    def __enter__(self) -> Self:
        self._reader = runs.RunReader(self.url)
        self._last_id = self._reader.last_ledger_id()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._reader.close()

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._poll()
                self._stop.wait(POLL_S)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self._error = exc

    def _poll(self) -> None:
        now = time.time()  # anything committed before this query started is seen "now"
        for entry in self._reader.ledger_after(self._last_id):
            self._last_id = max(self._last_id, entry.id)
            self.run_ids.add(entry.run_id)
            for partition, end in ledger.read_ends([entry.offsets], self.topic).items():
                seen = self.ends.setdefault(partition, [])
                if not seen or end > seen[-1][0]:
                    seen.append((end, now))
        for window in self._reader.final_windows():
            self.finals.setdefault((window.symbol, window.start_ms), now)

    def visible_at(self, partition: int, offset: int) -> float | None:
        ends = self.ends.get(partition, [])
        i = bisect.bisect_right(ends, (offset, math.inf))  # the first batch that read past the offset
        return ends[i][1] if i < len(ends) else None

    def _check(self) -> None:
        if self._error:
            raise ServiceError(f"bench: reading MySQL failed: {self._error}")

    def expected_finals(self, sent: Sent) -> set[tuple[str, int]]:
        declared: dict[str, int] = {}
        for symbol, t, _ in list(sent.heartbeats):
            declared[symbol] = max(declared.get(symbol, 0), t)
        return {(s, start) for s, start in set(sent.windows) if start + WINDOW_MS <= declared.get(s, 0)}

    def status(self, sent: Sent) -> str:
        self._check()
        latencies = [v - a[2] for a in list(sent.acks) if a is not None
                     and (v := self.visible_at(a[0], a[1])) is not None]
        p50 = percentile(latencies, 50)
        return (f"{len(latencies):,} visible in MySQL" + (f", ack -> visible p50 {p50:.2f} s" if p50 else "")
                + f", {len(self.finals)} windows final")

    def wait_for(self, sent: Sent, need_final: bool, timeout_s: float, progress: Progress) -> None:
        deadline, tick = time.monotonic() + timeout_s, every(5.0)
        remaining = list(sent.acks)
        while time.monotonic() < deadline:
            self._check()
            remaining = [a for a in remaining if a is None or self.visible_at(a[0], a[1]) is None]
            pending = len(remaining)
            finals = self.expected_finals(sent) - set(self.finals) if need_final else set()
            if not pending and not finals:
                return
            if tick():
                progress(f"    waiting: {pending:,} trades not yet visible, {len(finals)} windows not yet final")
            time.sleep(0.2)
        raise ServiceError(f"bench: trades or final windows still missing in MySQL {timeout_s:.0f} s after the "
                           "last send")

    def figures(self, sent: Sent, warmup_s: float) -> dict[str, Any]:
        timed = [(a[2], v - a[2]) for a in sent.acks
                 if a is not None and (v := self.visible_at(a[0], a[1])) is not None]
        latencies = [lat for _, lat in timed]
        warm = [lat for acked, lat in timed if acked >= sent.started_s + warmup_s]
        out: dict[str, Any] = {"trades_sent": len(sent.acks), "trades_visible": len(latencies),
                               "poll_interval_s": POLL_S, "ack_to_visible_s": spread(latencies, 50, 95, 99),
                               "warmup_s": warmup_s, "ack_to_visible_after_warmup_s": spread(warm, 50, 95, 99)}
        return {**out, **self._final_figures(sent)}

    def _final_figures(self, sent: Sent) -> dict[str, Any]:
        after_end, after_beat, beat_delay = [], [], []
        beats = sorted(sent.heartbeats, key=lambda h: h[2])
        for symbol, start in sorted(self.expected_finals(sent)):
            seen = self.finals.get((symbol, start))
            if seen is None:
                continue
            end = start + WINDOW_MS
            watermark = end / 1000 + HEARTBEAT_LAG_S  # when "now - lag" passed the window's end
            after_end.append(seen - watermark)
            beat = next((h for h in beats if h[0] == symbol and h[1] >= end), None)
            if beat is not None:
                after_beat.append(seen - beat[2])
                beat_delay.append(beat[2] - watermark)
        return {"heartbeat_lag_s": HEARTBEAT_LAG_S,
                "final_after_window_end_plus_lag_s": spread(after_end, 50, 95),
                "final_after_heartbeat_ack_s": spread(after_beat, 50, 95),
                "heartbeat_ack_after_window_end_plus_lag_s": spread(beat_delay, 50, 95)}
