"""The MySQL adapter, by role: ``connection`` (connections, transactions, retries), ``migrations`` (the schema),
``state`` (window state, coverage, late counts), ``ledger`` (the batch ledger), ``quarantine`` and ``reads``
(what status, reconcile, the demo and the bench read). Works on MySQL 8 and MariaDB."""
