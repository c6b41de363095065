"""Entry point for spark-submit: ``spark-submit [options] pipeline/spark/submit.py [--until-idle]``.

The settings come from the environment as for ``pipeline process``; under spark-submit the cluster's master and
``--packages``/``--jars`` are used as given.
"""

import sys

from pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["process", *sys.argv[1:]]))
