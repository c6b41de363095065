"""Entry point for spark-submit: ``spark-submit [options] pipeline/submit.py [-v] [--until-idle] [--trigger-seconds
S] [--max-offsets-per-trigger N]``: ``pipeline process`` itself (same options, checks and exit codes), with the
cluster's master and ``--packages``/``--jars`` as spark-submit gives them."""

import sys

from pipeline.cli import main


def process_argv(argv: list[str]) -> list[str]:
    """The ``pipeline`` command line of ``process`` with these options (``-v`` is the CLI's own, before it)."""
    verbose = [a for a in argv if a in ("-v", "--verbose")]
    return [*verbose, "process", *(a for a in argv if a not in verbose)]


if __name__ == "__main__":
    raise SystemExit(main(process_argv(sys.argv[1:])))
