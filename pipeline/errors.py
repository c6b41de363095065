"""The package's one root exception and its documented subclasses.

Every error the pipeline raises on purpose is a ``PipelineError``; the CLI turns it into one line on stderr and a
non-zero exit code (``exit_code``). Raise them ``from`` the underlying cause so debugging keeps the chain.
"""

from __future__ import annotations

from collections.abc import Callable


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


class ExchangeUnavailable(ExchangeError):
    """Binance could not be reached or kept failing (5xx, timeouts) after the retries: worth trying later; not
    before ``retry_after_s`` (a 5xx's ``Retry-After``; 0 when it sent none)."""

    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BadAnswer(ExchangeUnavailable):
    """Binance (or a proxy in front of it) answered, but not with what the endpoint returns: an HTML page, a
    truncated body, JSON of another shape. Transient in practice (maintenance pages, cut connections): retried."""


class RateLimited(ExchangeError):
    """Binance said 429 or 418; ``retry_after_s`` says how long no request may be sent."""

    def __init__(self, message: str, retry_after_s: float, banned: bool) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.banned = banned


def run_command(command: Callable[[], int], verbose: bool = False) -> int:
    """Run an entry point's work the way every command runs: logging set up, a ``PipelineError`` as one line and
    its exit code, Ctrl-C as 130, anything else as one line and 70 (``verbose``: the traceback instead)."""
    import logging
    import sys

    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not verbose:
        # kafka-python logs every refused connection while a broker starts; our own errors say what matters.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        return int(command())
    except PipelineError as exc:
        print(f"pipeline: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pipeline: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if verbose:
            raise
        print(f"pipeline: internal error: {type(exc).__name__}: {str(exc)[:300]} (run with -v for the traceback)",
              file=sys.stderr)
        return 70
