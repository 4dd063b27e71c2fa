"""The run folder, both sides: where a run writes its files and how every client reads them back.

A run folder holds config.toml, run.json (status, device, summary), metrics.jsonl (one row per
stage-epoch), run.log, per-stage checkpoints, the match table of every matching round, the test
predictions, the student's weights and description, and the model bundle. Nothing of a run lives
only in memory; every file is written atomically. The GUI, the CLI and the benchmarks read run
folders only through :class:`RunFolder`, so the file layout and its keys are decided here once.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

from platformdirs import user_cache_dir, user_data_dir

from ..atomic import remove_stale_temporaries, try_lock, write_bytes_atomic, write_json_atomic
from ..config import ConfigError, RunConfig, config_from_dict

APP_NAME = "sembridge-studio"
STAGES = ("teacher", "matcher", "student")
RESUMABLE_STATUSES = frozenset({"cancelled", "failed", "interrupted", "running", "created"})
PREDICTIONS_HEADER = ("split", "path", "true_class", "predicted_class", "confidence")
MATCH_ROUND_PREFIX = "round_"
TIMING_KEYS = ("epoch_seconds",)  # metrics that differ between otherwise identical runs
# Scalar metrics of metrics.jsonl by what they measure (the monitor draws one plot per group).
METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    "transport": ("transport_cost_logit", "transport_cost_feature"),
    "accuracy": ("train_acc", "val_oa", "val_macro_f1", "val_retrieval_top1"),
    "loss": ("loss_task", "loss_kd", "loss_ot1", "loss_ot2", "loss_total", "val_loss"),
    "gradient": ("grad_share_task", "grad_share_kd", "grad_share_ot1", "grad_share_ot2"),
}


def default_output_dir() -> Path:
    return Path(user_data_dir(APP_NAME)) / "runs"


def teacher_cache_dir() -> Path:
    """Where trained teachers/matchers are cached by hash; SEMBRIDGE_CACHE_DIR overrides it."""
    override = os.environ.get("SEMBRIDGE_CACHE_DIR")
    return Path(override) if override else Path(user_cache_dir(APP_NAME)) / "teachers"


def tile_store_dir() -> Path:
    """Where on-disk tile stores are built by data key; under SEMBRIDGE_CACHE_DIR when it is set."""
    override = os.environ.get("SEMBRIDGE_CACHE_DIR")
    return (Path(override) if override else Path(user_cache_dir(APP_NAME))) / "tiles"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


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


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file; a torn last line (a run still writing) is skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def scalar(value: Any) -> float | None:
    """A finite number as float, else None (bools, lists, null, NaN are not plottable)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


class RunLocked(RuntimeError):
    """Another live process is writing this run folder."""


@dataclass(frozen=True)
class MatchingMarker:
    """A matching round of the student stage: SSM (or random pairs) before epoch 1, DynM after ``epoch``."""

    epoch: int
    kind: str
    round: int
    changed_fraction: float


@dataclass(frozen=True)
class TeacherDiversity:
    """One class in one matching round: RGB images taught, distinct MS teachers, busiest teacher's share."""

    images: int
    teachers: int
    busiest_share: float


def diversity_of(rows: Iterable[dict[str, str]]) -> dict[str, TeacherDiversity]:
    """Teacher diversity per class of one match table's rows."""
    per_class: dict[str, dict[str, int]] = {}
    for row in rows:
        teachers = per_class.setdefault(row["class"], {})
        teachers[row["ms_path"]] = teachers.get(row["ms_path"], 0) + 1
    return {name: TeacherDiversity(sum(counts.values()), len(counts), max(counts.values()) / sum(counts.values()))
            for name, counts in sorted(per_class.items())}


@dataclass
class FinalMetrics:
    """The selected student's metrics on the held-out RGB splits (student.json's ``final_metrics``)."""

    class_names: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def value(self, key: str) -> float | None:
        return scalar(self.values.get(key))

    @property
    def test_confusion(self) -> list[list[int]] | None:
        return self.values.get("test_confusion")

    @property
    def test_per_class_f1(self) -> list[float] | None:
        return self.values.get("test_per_class_f1")

    @property
    def best_epoch(self) -> int | None:
        return self.values.get("best_epoch")


class RunFolder:
    """Paths, atomic writers and readers of one run folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- layout -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.root.name

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def run_json_path(self) -> Path:
        return self.root / "run.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def log_path(self) -> Path:
        return self.root / "run.log"

    @property
    def predictions_path(self) -> Path:
        return self.root / "predictions.csv"

    @property
    def student_json_path(self) -> Path:
        return self.root / "student.json"

    @property
    def student_weights_path(self) -> Path:
        return self.root / "student.safetensors"

    @property
    def data_manifest_path(self) -> Path:
        return self.root / "data_manifest.json"

    @property
    def bundle_path(self) -> Path:
        return self.root / "model.sembridge"

    def checkpoint(self, stage: str) -> Path:
        return self.root / "checkpoints" / f"{stage}.pt"

    def match_table(self, round_index: int) -> Path:
        return self.root / "matches" / f"{MATCH_ROUND_PREFIX}{round_index}.csv"

    # -- writing ------------------------------------------------------------------------------
    def update_run_json(self, **fields: Any) -> dict[str, Any]:
        data = self.read_run_json()
        data.update(fields)
        data["updated"] = utc_now()
        write_json_atomic(self.run_json_path, data)
        return data

    def write_metrics(self, rows: Iterable[dict[str, Any]]) -> None:
        """Rewrite metrics.jsonl from the rows that checkpoints vouch for (used on resume)."""
        write_bytes_atomic(self.metrics_path, "".join(json.dumps(row) + "\n" for row in rows).encode("utf-8"))

    def append_metrics(self, row: dict[str, Any]) -> None:
        self._append(self.metrics_path, json.dumps(row) + "\n")

    def append_log(self, message: str, level: str = "info") -> None:
        prefix = "" if level == "info" else f"[{level}] "
        self._append(self.log_path, f"{utc_now()}  {prefix}{message}\n")

    @staticmethod
    def _append(path: Path, text: str) -> None:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    @property
    def lock_path(self) -> Path:
        return self.root / ".writer.lock"

    @contextlib.contextmanager
    def writer_lock(self) -> Iterator[int | None]:
        """Hold the run's writer lock while training or resuming it.

        A second writer gets RunLocked naming the process that holds it. A lock file left by a killed
        process is not held by anyone (the OS releases it), so it is simply taken over; the context
        yields that earlier process's id (None if there was none) so the caller can say so.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.lock_path, "a+", encoding="utf-8")
        try:
            handle.seek(0)
            previous = handle.read().strip()
            if not try_lock(handle):
                raise RunLocked(f"run {self.root} is being written by another process (PID {previous or 'unknown'}); "
                                "wait for it to finish or stop it first")
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
            for folder in (self.root, self.root / "checkpoints", self.root / "matches"):
                remove_stale_temporaries(folder)
            yield int(previous) if previous.isdigit() and int(previous) != os.getpid() else None
        finally:
            handle.close()

    def writer_alive(self) -> bool:
        """True while a process holds the writer lock (a run still training or resuming)."""
        if not self.lock_path.exists():
            return False
        with open(self.lock_path, "a+", encoding="utf-8") as handle:
            return not try_lock(handle)

    # -- reading ------------------------------------------------------------------------------
    def is_run(self) -> bool:
        return self.run_json_path.is_file()

    def read_run_json(self) -> dict[str, Any]:
        if not self.run_json_path.exists():
            return {}
        try:
            data = json.loads(self.run_json_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{self.run_json_path}: not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{self.run_json_path}: not a JSON object")
        return data

    def info(self) -> dict[str, Any]:
        """run.json, or {} when it is missing or unreadable (listing must not fail on one bad folder)."""
        try:
            return self.read_run_json()
        except (OSError, ValueError):
            return {}

    @property
    def status(self) -> str:
        """run.json's status; "interrupted" for a run that says "running" but whose process is gone."""
        status = str(self.info().get("status", "unknown"))
        return "interrupted" if status == "running" and not self.writer_alive() else status

    @property
    def resumable(self) -> bool:
        return self.status in RESUMABLE_STATUSES

    def config_dict(self) -> dict[str, Any]:
        """The run's config.toml as plain tables ({} when unreadable)."""
        try:
            return tomllib.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
            return {}

    def config(self) -> RunConfig | None:
        """The run's configuration, typed (not re-validated: it was when the run started), so
        clients can ask it ``uses_teacher`` and the like; None when config.toml is unreadable."""
        try:
            return config_from_dict(self.config_dict(), self.root, check=False) if self.config_path.is_file() else None
        except ConfigError:
            return None

    def setting(self, key: str, default: Any = None) -> Any:
        """One dotted config value (``student.arch``) of the run, or ``default``."""
        node: Any = self.config_dict()
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    def metrics(self) -> list[dict[str, Any]]:
        return read_jsonl(self.metrics_path)

    def stage_metrics(self, stage: str) -> list[dict[str, Any]]:
        return [row for row in self.metrics() if row.get("stage") == stage]

    def curve(self, metric: str, stage: str = "student") -> tuple[list[float], list[float]]:
        """(epochs, values) of one scalar metric of a stage, skipping epochs where it is missing."""
        xs, ys = [], []
        for row in self.stage_metrics(stage):
            value, epoch = scalar(row.get(metric)), scalar(row.get("epoch"))
            if value is not None and epoch is not None:
                xs.append(epoch)
                ys.append(value)
        return xs, ys

    def markers(self) -> list[MatchingMarker]:
        """Matching rounds: the initial one (when the run matched at all) and every DynM round so far."""
        if not self.match_table(0).exists():
            return []
        kind = "ssm" if self.setting("distill.ssm", True) else "random"
        found = [MatchingMarker(0, kind, 0, 1.0)]
        for row in self.stage_metrics("student"):
            round_index, changed = row.get("matching_round"), scalar(row.get("matching_changed_fraction"))
            if isinstance(round_index, int) and changed is not None:
                found.append(MatchingMarker(int(row["epoch"]), "dynm", round_index, changed))
        return found

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []

    def final_metrics(self) -> FinalMetrics:
        """The finished student's metrics ({} values before the run has finished)."""
        try:
            student = json.loads(self.student_json_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return FinalMetrics()
        if not isinstance(student, dict):
            return FinalMetrics()
        values = student.get("final_metrics")
        return FinalMetrics([str(name) for name in student.get("class_names", [])],
                            dict(values) if isinstance(values, dict) else {})

    def match_rounds(self) -> list[int]:
        folder = self.root / "matches"
        rounds = []
        for path in folder.glob(f"{MATCH_ROUND_PREFIX}*.csv") if folder.is_dir() else []:
            suffix = path.stem[len(MATCH_ROUND_PREFIX):]
            if suffix.isdigit():
                rounds.append(int(suffix))
        return sorted(rounds)

    def read_match_table(self, round_index: int) -> list[dict[str, str]]:
        """Rows (rgb_path, ms_path, class, score) of one matching round."""
        import csv

        with self.match_table(round_index).open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    def teacher_diversity(self) -> list[dict[str, TeacherDiversity]]:
        """Per matching round, per class: how many distinct MS tiles teach its RGB images and which
        share of them the busiest MS tile teaches (a pairing that collapses onto a few tiles shows
        here)."""
        return [diversity_of(self.read_match_table(round_index)) for round_index in self.match_rounds()]

    @property
    def has_bundle(self) -> bool:
        return self.bundle_path.is_file()


def list_runs(output_dir: Path) -> list[RunFolder]:
    """Run folders (those with a run.json) directly under ``output_dir``, newest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    runs = [RunFolder(path) for path in output_dir.iterdir() if (path / "run.json").is_file()]
    return sorted(runs, key=lambda run: (str(run.info().get("created", "")), run.name), reverse=True)
