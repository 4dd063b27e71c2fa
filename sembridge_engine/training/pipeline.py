"""The staged SemBridge run (Algorithm 1): teacher -> matcher -> galleries -> SSM -> student with DynM.

``train(config)`` runs every stage into a new run folder, ``resume(run_dir)`` continues one from
its checkpoints. Data order and augmentation come from a generator seeded by (seed, stage, epoch)
and global RNG states are restored from the checkpoint, so on CPU a resumed run reproduces the
uninterrupted run's metrics exactly.

Under torchrun every process calls ``train``/``resume`` with its ``Distributed`` (see training/distributed.py):
rank 0 creates and locks the run folder and writes everything in it; the other ranks train and
read. A run may be resumed with another number of processes.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..atomic import write_json_atomic
from ..config import RunConfig, config_hash, load_config, save_config
from ..device import describe_device
from ..distributed import ONE_PROCESS, Distributed
from ..events import BatchProgress, Cancelled, CancelToken, EventCallback, LogLine, RunFailed, RunFinished, ignore_event
from .checkpoint import load_checkpoint
from .context import RunContext
from .dataset import assemble_run_data, data_changes, data_manifest
from .outputs import export_run, write_outputs
from .rundir import STAGES, RunFolder, default_output_dir, new_run_dir, utc_now
from .stages import matcher_stage, teacher_stage
from .student import StudentStage


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return self.summary.get("status", "unknown")


def _transport_summary(folder: RunFolder) -> dict[str, float | None]:
    costs = [row for row in folder.stage_metrics("student") if row.get("transport_cost_logit") is not None]
    summary: dict[str, float | None] = {}
    for space in ("logit", "feature"):
        key = f"transport_cost_{space}"
        summary[f"{key}_first"] = costs[0][key] if costs else None
        summary[f"{key}_last"] = costs[-1][key] if costs else None
    return summary


def _check_same_data(ctx: RunContext) -> None:
    """Record the run's files when it starts; refuse to continue a run whose data changed since. A resume
    that finds the same content under new file times records the new times, so the next one need not
    read the files again."""
    folder = ctx.folder

    def progress(modality: str, done: int, total: int) -> None:
        ctx.emit(BatchProgress(f"{modality} files checked", 0, done, total))

    if not folder.data_manifest_path.exists():
        write_json_atomic(folder.data_manifest_path, data_manifest(ctx.config, cancel=ctx.cancel, progress=progress))
        return
    recorded = json.loads(folder.data_manifest_path.read_text(encoding="utf-8"))
    current = data_manifest(ctx.config, known=recorded, cancel=ctx.cancel, progress=progress)
    changes = data_changes(recorded, current)
    if changes:
        raise ValueError(f"the data of run {folder.root} changed since it started, so it cannot be resumed: "
                         + "; ".join(changes) + ". A changed dataset is a new run: start one with `sembridge train`.")
    if current != recorded:
        write_json_atomic(folder.data_manifest_path, current)


def _load_data(ctx: RunContext):
    """The run's data; a cancel on any rank while loading stops every rank once all have loaded."""
    def progress(modality: str, done: int, total: int) -> None:
        ctx.emit(BatchProgress(f"{modality} tiles", 0, done, total))

    try:
        return assemble_run_data(ctx.config, need_ms=ctx.config.uses_teacher, log=ctx.log, cancel=ctx.cancel,
                                 progress=progress, processes=ctx.dist.local_world_size)
    except Cancelled:
        if not ctx.dist.enabled:
            raise
        return None
    finally:
        ctx.check()


def _run_stages(ctx: RunContext) -> dict[str, Any]:
    """Every stage in order, then the outputs; returns the run's summary."""
    config = ctx.config
    ctx.dist.agree(lambda: _check_same_data(ctx))
    device_name = describe_device(ctx.device)
    world = ctx.dist.world_size
    if world > 1:
        device_name = f"{device_name} x {world} processes"
    ctx.log(f"device: {device_name}" + (" (mixed precision)" if ctx.amp else ""))
    if ctx.writes:
        sessions = ctx.folder.read_run_json().get("world_sizes", [])
        ctx.folder.update_run_json(device=device_name, device_type=ctx.device.type, world_size=world,
                                   world_sizes=[*sessions, world])
    data = _load_data(ctx)
    for problem in data.problems:
        ctx.log(str(problem), "warning")
    ctx.log(f"student classes: {', '.join(data.student_classes)}; RGB train/val/test = "
            f"{len(data.rgb_train)}/{len(data.rgb_val)}/{len(data.rgb_test)}")
    teacher = matcher = None
    if config.uses_teacher:
        teacher = teacher_stage(ctx, data)
        if config.uses_matcher:
            matcher = matcher_stage(ctx, data)
    else:
        ctx.log("plain RGB baseline (loss 'none', no OT terms): no teacher, matcher or matching")
    student = StudentStage(ctx, data, teacher, matcher).run()
    final = write_outputs(ctx, data, student)
    bundle = export_run(ctx) if ctx.writes else None
    return {
        "status": "finished", "run_dir": str(ctx.folder.root), "device": device_name,
        "seconds": time.perf_counter() - ctx.started, "classes": list(data.student_classes),
        "stages": ctx.stage_info,
        "teacher_val_oa": ctx.stage_info.get("teacher", {}).get("best_val_oa"),
        "student_best_epoch": final["best_epoch"],
        "val_oa": final["val_oa"], "val_macro_f1": final["val_macro_f1"],
        "test_oa": final["test_oa"], "test_macro_f1": final["test_macro_f1"],
        **_transport_summary(ctx.folder),
        "problems": len(data.problems), "bundle": bundle,
    }


def _logging_callback(folder: RunFolder, callback: EventCallback) -> EventCallback:
    """Pass events on, and keep every log line in run.log so a reopened run shows its log."""
    def forward(event) -> None:
        if isinstance(event, LogLine):
            folder.append_log(event.message, event.level)
        callback(event)

    return forward


def _execute(config: RunConfig, folder: RunFolder, callback: EventCallback, cancel: CancelToken | None,
             dist: Distributed) -> RunResult:
    status = folder.update_run_json if dist.is_main else (lambda **fields: None)
    try:
        status(status="running", error=None)
        summary = _run_stages(RunContext(config, folder, callback, cancel, dist))
    except (Cancelled, KeyboardInterrupt) as error:
        with contextlib.suppress(OSError):  # e.g. a full disk: the checkpoints stay valid either way
            status(status="cancelled", error="cancelled by the user")
        callback(RunFailed(str(folder.root), "cancelled by the user", cancelled=True))
        if isinstance(error, KeyboardInterrupt):
            raise
        return RunResult(folder.root, {"status": "cancelled", "run_dir": str(folder.root)})
    except Exception as error:
        message = str(error) or type(error).__name__
        with contextlib.suppress(OSError):
            status(status="failed", error=message)
        callback(RunFailed(str(folder.root), message))
        raise
    status(status="finished", finished=utc_now(), summary=summary)
    callback(RunFinished(str(folder.root), summary))
    return RunResult(folder.root, summary)


def train(config: RunConfig, *, run_dir: Path | None = None, callback: EventCallback = ignore_event,
          cancel: CancelToken | None = None, dist: Distributed | None = None) -> RunResult:
    """Run all stages of ``config`` into a new run folder (or ``run_dir``, which must not hold a run).

    Under torchrun every rank calls this with its ``dist``; rank 0 picks and locks the folder.
    """
    dist = dist or ONE_PROCESS
    def create() -> str:
        target = Path(run_dir) if run_dir is not None else new_run_dir(
            Path(config.output_dir) if config.output_dir else default_output_dir(), config.name)
        folder = RunFolder(target)
        if folder.run_json_path.exists():
            raise ValueError(f"{folder.root} already holds a run; use resume() / `sembridge resume` to continue it")
        if folder.root.is_dir() and any(folder.root.iterdir()):
            raise ValueError(f"{folder.root} already exists and holds other files; a run needs a new or empty folder, "
                             "so nothing of yours is overwritten")
        return str(target)

    folder = RunFolder(Path(dist.agree(create)))
    with contextlib.ExitStack() as held:
        def lock_and_start() -> None:
            held.enter_context(folder.writer_lock())
            save_config(config, folder.config_path)
            folder.update_run_json(name=config.name, status="created", created=utc_now(), engine_version=__version__,
                                   config_hash=config_hash(config), teacher_from=config.student.teacher_from or None)
            folder.write_metrics([])

        dist.agree(lock_and_start)
        return _execute(config, folder, _logging_callback(folder, callback) if dist.is_main else ignore_event, cancel, dist)


def resume(run_dir: Path, *, callback: EventCallback = ignore_event, cancel: CancelToken | None = None,
           dist: Distributed | None = None) -> RunResult:
    """Continue a cancelled or crashed run from its last epoch checkpoints (a finished run is returned as is),
    with any number of processes."""
    dist = dist or ONE_PROCESS
    folder = RunFolder(Path(run_dir))
    with contextlib.ExitStack() as held:
        def lock_and_read() -> dict[str, Any]:
            if not folder.config_path.exists():
                raise ValueError(f"{folder.root}: not a SemBridge run folder (no config.toml)")
            killed_writer = held.enter_context(folder.writer_lock())
            info = folder.read_run_json()
            if info.get("status") == "finished":
                return {"finished": info.get("summary", {})}
            rows: list[dict[str, Any]] = []
            for stage in STAGES:
                path = folder.checkpoint(stage)
                if path.exists():
                    rows += load_checkpoint(path)["history"]
            folder.write_metrics(rows)
            return {"kept": len(rows), "killed_writer": killed_writer}

        state = dist.agree(lock_and_read)
        if "finished" in state:
            return RunResult(folder.root, state["finished"])
        config = load_config(folder.config_path)
        callback = _logging_callback(folder, callback) if dist.is_main else ignore_event
        if state["killed_writer"] is not None:
            callback(LogLine(f"process {state['killed_writer']} that was writing this run is gone; its lock was taken over"))
        callback(LogLine(f"resuming {folder.root} ({state['kept']} finished stage-epochs kept)"))
        return _execute(config, folder, callback, cancel, dist)
