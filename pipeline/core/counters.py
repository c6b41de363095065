"""What the producer side counted: published, refused, skipped, gaps, heartbeats, exchange errors. Shared by the
poller, the producer, replay, backfill and reconcile's repair, and shown by their progress lines."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class Counters:
    published: int = 0
    invalid: int = 0  # Binance's invalid records (price 0 / quantity 0 / ids -1): excluded by design
    rejected: int = 0  # records that are not aggTrades at all: logged with the payload
    duplicates: int = 0  # already in Kafka (resume) or repeated by the source
    gaps: int = 0
    missing_ids: int = 0
    heartbeats: int = 0
    exchange_errors: int = 0
    undated: int = 0  # answers without a Date header: coverage held to their newest trade's time
    answered: bool = False  # the exchange gave one usable answer since start
    failing_since_s: float | None = None  # first failure while it had not (clock seconds)

    def summary(self) -> str:
        return (f"published {self.published}, invalid {self.invalid}, rejected {self.rejected}, "
                f"duplicates skipped {self.duplicates}, gaps {self.gaps} ({self.missing_ids} agg ids missing), "
                f"heartbeats {self.heartbeats}, exchange errors {self.exchange_errors}"
                + (f", answers without a Date {self.undated}" if self.undated else ""))
