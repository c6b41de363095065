"""Entry point for spark-submit: ``spark-submit [options] pipeline/submit.py [--until-idle]
[--trigger-seconds S]``.

The settings come from the environment as for ``pipeline process``; under spark-submit the cluster's master and
``--packages``/``--jars`` are used as given. Errors are one line on stderr and the exit codes of the CLI.
"""

import argparse
import os
import sys

from pipeline import compose
from pipeline.errors import PipelineError
from pipeline.settings import Settings


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="submit.py")
    parser.add_argument("--until-idle", action="store_true")
    parser.add_argument("--trigger-seconds", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        summary = compose.process(Settings.from_mapping(os.environ), args.until_idle, args.trigger_seconds)
    except PipelineError as exc:
        print(f"pipeline: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"process: {summary.line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
