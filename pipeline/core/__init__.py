"""Pure core: Binance payload parsing and validation, message encoding, window aggregation. No I/O."""
