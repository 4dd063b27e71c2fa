"""The run folder: config, run.json, metrics.jsonl, checkpoints, match tables, model files.

Nothing of a run lives only in memory; every file is written atomically (temp then rename).
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from platformdirs import user_cache_dir, user_data_dir

APP_NAME = "sembridge-studio"
STAGES = ("teacher", "matcher", "student")


def default_output_dir() -> Path:
    return Path(user_data_dir(APP_NAME)) / "runs"


def teacher_cache_dir() -> Path:
    """Where trained teachers/matchers are cached by hash; SEMBRIDGE_CACHE_DIR overrides it."""
    override = os.environ.get("SEMBRIDGE_CACHE_DIR")
    return Path(override) if override else Path(user_cache_dir(APP_NAME)) / "teachers"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    write_bytes_atomic(path, (json.dumps(data, indent=2) + "\n").encode("utf-8"))


def write_csv_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))


def new_run_dir(output_dir: Path, name: str) -> Path:
    """A fresh ``<output_dir>/<name>-<UTC timestamp>[-n]`` folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    safe_name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "run"
    candidate = output_dir / f"{safe_name}-{stamp}"
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = output_dir / f"{safe_name}-{stamp}-{suffix}"
    candidate.mkdir(parents=True)
    return candidate


class RunFolder:
    """Paths and atomic writers of one run folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def run_json_path(self) -> Path:
        return self.root / "run.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    def checkpoint(self, stage: str) -> Path:
        return self.root / "checkpoints" / f"{stage}.pt"

    def match_table(self, round_index: int) -> Path:
        return self.root / "matches" / f"round_{round_index}.csv"

    def read_run_json(self) -> dict[str, Any]:
        if not self.run_json_path.exists():
            return {}
        try:
            return json.loads(self.run_json_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{self.run_json_path}: not valid JSON ({error})") from None

    def update_run_json(self, **fields: Any) -> dict[str, Any]:
        data = self.read_run_json()
        data.update(fields)
        data["updated"] = utc_now()
        write_json_atomic(self.run_json_path, data)
        return data

    def write_metrics(self, rows: Iterable[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl from the rows that checkpoints vouch for (used on resume)."""
        text = "".join(json.dumps(row) + "\n" for row in rows)
        write_bytes_atomic(self.metrics_path, text.encode("utf-8"))

    def append_metrics(self, row: dict[str, Any]) -> None:
        with self.metrics_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
