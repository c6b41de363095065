"""Binance aggTrades -> Kafka -> Spark Structured Streaming -> MySQL 1-minute windows."""

__version__ = "0.1.0"
