"""The core imports no I/O (ruff bans it statically in pipeline/core/ruff.toml; this checks what really loads)."""

import subprocess
import sys


def test_importing_the_core_loads_no_io_library() -> None:
    code = ("import sys, pipeline.core.trades, pipeline.core.windows, pipeline.core.messages; "
            "print(sorted(m for m in ('requests', 'kafka', 'pyspark', 'pymysql', 'vcr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
