"""Running the ``pipeline`` command as a user does, with a test's isolated settings in its environment."""

from __future__ import annotations

import os
import subprocess
import sys

from pipeline.settings import Settings


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    """The process environment for ``settings``: only these PIPELINE_* variables, nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    assert settings.kafka_bootstrap and settings.mysql_url
    env.update(PIPELINE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap, PIPELINE_MYSQL_URL=settings.mysql_url.render(),
               PIPELINE_TOPIC=settings.topic, PIPELINE_CACHE_DIR=str(settings.cache_dir),
               PIPELINE_WATERMARK_SECONDS=str(settings.watermark_seconds), PIPELINE_STATE_DIR=str(settings.state_dir))
    env.update(extra)
    if settings.checkpoint_dir is not None:
        env["PIPELINE_CHECKPOINT_DIR"] = str(settings.checkpoint_dir)
    return env


def run(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def ok(settings: Settings, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run and require exit 0, showing the end of stderr otherwise."""
    result = run(list(args), env_for(settings), timeout)
    assert result.returncode == 0, f"pipeline {' '.join(args)} failed:\n{result.stderr[-3000:]}"
    return result
