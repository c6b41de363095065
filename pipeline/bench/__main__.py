"""``python -m pipeline.bench count TOPIC CHECKPOINT [TRIGGER_SECONDS]``: Spark's floor (``floor.count_topic``) in
a process of its own, as the bench starts it; prints ``{"messages": N}``. An entry point: it builds its session and
finds Kafka through the composition root, from the environment the bench hands it."""

from __future__ import annotations

import json
import os
import sys

from pipeline.errors import PipelineError


def main(argv: list[str]) -> int:
    if argv[:1] != ["count"] or len(argv) not in (3, 4):
        print("usage: python -m pipeline.bench count TOPIC CHECKPOINT [TRIGGER_SECONDS]", file=sys.stderr)
        return 2
    from pipeline.bench.floor import count_topic
    from pipeline.compose import Root
    from pipeline.settings import Settings

    try:
        root = Root(Settings.from_mapping(os.environ))
        counted = count_topic(root.spark(app_name="pipeline-bench-count"), root.kafka_bootstrap(), root.settings,
                              argv[1], argv[2], float(argv[3]) if len(argv) == 4 else None)
    except PipelineError as error:
        print(f"bench count: {error}", file=sys.stderr)
        return error.exit_code
    print(json.dumps({"messages": counted}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
