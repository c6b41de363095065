"""Writing small vcrpy cassettes by hand: Binance answers (errors, bans, garbage) that no recording catches on cue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

BASE = "https://api.binance.com"


def answer(uri: str, status: int, body: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
    text = body if isinstance(body, str) else json.dumps(body)
    all_headers = {"Content-Type": "application/json;charset=UTF-8", "Date": "Thu, 01 Jan 2026 12:00:00 GMT",
                   **(headers or {})}
    return {
        "request": {"body": None, "headers": {}, "method": "GET", "uri": f"{BASE}{uri}"},
        "response": {"body": {"string": text}, "headers": {k: [v] for k, v in all_headers.items()},
                     "status": {"code": status, "message": "x"}},
    }


def write(path: Path, interactions: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"interactions": interactions, "version": 1}))
    return path
