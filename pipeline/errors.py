"""The package's one root exception and its documented subclasses.

Every error the pipeline raises on purpose is a ``PipelineError``; the CLI turns it into one line on stderr and a
non-zero exit code (``exit_code``). Raise them ``from`` the underlying cause so debugging keeps the chain.
"""


class PipelineError(Exception):
    """Root of every error the pipeline raises on purpose."""

    exit_code = 1


class ConfigError(PipelineError):
    """A setting or command-line argument is missing or invalid."""

    exit_code = 2


class ServiceError(PipelineError):
    """A service (Kafka, MySQL, the local stack) cannot be started, reached or used."""

    exit_code = 3


class InputError(PipelineError):
    """Input data (a file, an archive row, a payload, a message) is missing or malformed."""

    exit_code = 4


class ExchangeError(PipelineError):
    """Binance answered with an error (invalid symbol, ban, persistent failures)."""

    exit_code = 5
