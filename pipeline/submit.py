"""Entry point for spark-submit: ``spark-submit [options] pipeline/submit.py [--until-idle] [--trigger-seconds S]``.

The settings come from the environment as for ``pipeline process``; under spark-submit the cluster's master and
``--packages``/``--jars`` are used as given. Errors are one line on stderr with the CLI's exit codes.
"""

import argparse
import os
import sys

from pipeline import compose
from pipeline.errors import ConfigError, run_command
from pipeline.settings import DEFAULT_TRIGGER_SECONDS, Settings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="submit.py")
    parser.add_argument("--until-idle", action="store_true")
    parser.add_argument("--trigger-seconds", type=float, default=DEFAULT_TRIGGER_SECONDS)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

    def process() -> int:
        if args.trigger_seconds <= 0:
            raise ConfigError(f"--trigger-seconds must be positive, got {args.trigger_seconds}")
        summary = compose.process(Settings.from_mapping(os.environ), args.until_idle, args.trigger_seconds)
        print(f"process: {summary.line()}")
        return 0

    return run_command(process, args.verbose)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
