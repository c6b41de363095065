"""Adapters: thin I/O around the core (Binance HTTP, Kafka, MySQL, archives)."""
