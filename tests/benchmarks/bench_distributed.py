"""torchrun scaling on this machine, and the communication of a data-parallel step computed on paper.

Measured (each run its own `sembridge` process, one OpenMP thread per process unless said):
  * student epoch: the demo project (UC Merced RGB student MobileNetV2 at 64 px, EuroSAT teacher
    ShuffleNetV2 x0.5, SSM + DynM + Planner/CORAL) trained in one process and under
    `torchrun --nproc-per-node 2`; the student's `epoch_seconds` (train, DynM, validation), median over
    its epochs after the first. One process with two threads is the other way to use both cores.
  * labelling: `sembridge label --scenes` of six copies of the demo UC Merced mosaic (1536 x 1536 px),
    and of one copy (row strips under torchrun), with the bundle the one-process run exported; the batch
    summary's seconds (planning to index, without interpreter start-up) and the command's wall time; no
    previews on either side.
The ratios are one process's time over two processes' time, measured in the same invocation, one run at a
time. The machine's 2 cores are shared with other jobs: read the load average printed beside them.
Because wall-time ratios on a shared machine say more about the other jobs than about torchrun, each
command's CPU seconds (all its processes: torchrun and its workers, start-up included) are counted too.
Their ratio is the work that going to two processes adds (start-up, duplicated set-up, communication,
waiting spun on the CPU), whatever the load, and 2 x (one process's CPU / two processes' CPU) is the
speed-up two free cores would give if the work split evenly: an upper bound, not a measurement.

On paper: bytes each GPU sends per student step at 8 GPUs for a ResNet34 student (DDP's ring all-reduce
of the gradients of the student and the Planner; the rows InfoNCE and CORAL gather, whose backward is an
all-reduce of the gathered gradient; synchronised BatchNorm's per-channel sums).

Usage: python tests/benchmarks/bench_distributed.py [--workdir /tmp/sembridge-bench-dist] [--parts paper,epoch,label]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

EPOCH_SETTINGS = [
    "train.device=cpu", "teacher.arch=shufflenet_v2_x0_5", "teacher.epochs=1", "matcher.epochs=1",
    "student.epochs=4", "distill.e0=2", "distill.delta_e=2", "train.precise_bn=false",
]
LABEL_COPIES = 6
LABEL_ROUNDS = 2   # 1 and 2 processes alternate; the faster of each is kept (other jobs share the cores)
GPUS, PER_GPU_BATCH, PAPER_TILE, PAPER_CLASSES, PAPER_BANDS, EMBED_DIM = 8, 32, 120, 10, 13, 64


def _command(processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "sembridge_engine.cli"]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes), "--standalone",
            "-m", "sembridge_engine.cli"]


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(arguments: list[str], processes: int, threads: int, cache: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and every process it waited for)."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads), "SEMBRIDGE_CACHE_DIR": str(cache)}
    started, started_cpu = time.perf_counter(), _children_cpu_seconds()
    finished = subprocess.run(_command(processes) + arguments, env=environment, cwd=REPO, capture_output=True, text=True)
    if finished.returncode != 0:
        raise SystemExit(f"{' '.join(arguments[:2])} x{processes} failed:\n{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}")
    return time.perf_counter() - started, _children_cpu_seconds() - started_cpu


def _cpu_line(label: str, one: float, two: float) -> str:
    return (f"  CPU, {label}: 1 process {one:.1f} s, 2 processes {two:.1f} s -> work added x{two / one:.2f}; "
            f"speed-up two free cores would give at most {2 * one / two:.2f}x")


def _load() -> str:
    return "load %.1f" % os.getloadavg()[0]


def student_epochs(workdir: Path) -> Path:
    """Student epoch seconds for 1 process x 1 thread, 1 x 2 threads, 2 processes x 1 thread; returns a bundle."""
    from resources import demo_project
    from sembridge_engine.training.rundir import RunFolder

    settings = [item for value in EPOCH_SETTINGS for item in ("--set", value)]
    medians, cpu = {}, {}
    for label, processes, threads in (("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2),
                                      ("2 processes x 1 thread", 2, 1)):
        run_dir = workdir / f"run-{processes}x{threads}"
        shutil.rmtree(run_dir, ignore_errors=True)
        load = _load()
        wall, cpu[label] = _run(["train", "--config", str(demo_project() / "demo.toml"), "--out", str(run_dir), *settings],
                                processes, threads, workdir / "cache")
        seconds = [row["epoch_seconds"] for row in RunFolder(run_dir).metrics() if row["stage"] == "student"][1:]
        medians[label] = statistics.median(seconds)
        print(f"student epoch, {label}: {medians[label]:.2f} s (epochs 2+: {', '.join(f'{s:.2f}' for s in seconds)}); "
              f"whole run {wall:.0f} s wall, {cpu[label]:.0f} s CPU; {load}", flush=True)
    baseline = medians.pop("1 process x 1 thread")
    for label, value in medians.items():
        print(f"  ratio 1 process x 1 thread / {label}: {baseline / value:.2f}x")
    print(_cpu_line("whole training run", cpu["1 process x 1 thread"], cpu["2 processes x 1 thread"]))
    return workdir / "run-1x1" / "model.sembridge"


def labelling(workdir: Path, bundle: Path) -> None:
    """Batch labelling of several scenes and of one scene (strips), one process against two."""
    from resources import demo_project

    scenes = workdir / "scenes"
    scenes.mkdir(parents=True, exist_ok=True)
    copies = [scenes / f"mosaic_{index}.tif" for index in range(LABEL_COPIES)]
    for copy in copies:
        shutil.copyfile(demo_project() / "scene" / "ucmerced_mosaic.tif", copy)
    for label, scene_arguments in ((f"{LABEL_COPIES} scenes", ["--scenes", *map(str, copies)]),
                                   ("1 scene", ["--scenes", str(copies[0])])):
        measured: dict[int, list[float]] = {1: [], 2: []}
        cpu: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(LABEL_ROUNDS):
            for processes in (1, 2):
                out = workdir / f"labels-{label.replace(' ', '')}-{processes}"
                shutil.rmtree(out, ignore_errors=True)
                load = _load()
                wall, seconds_cpu = _run(["label", "--model", str(bundle), "--out", str(out), "--device", "cpu", "--no-preview",
                                          *scene_arguments], processes, 1, workdir / "cache")
                cpu[processes].append(seconds_cpu)
                summary = json.loads((out / "batch_summary.json").read_text())
                measured[processes].append(summary["seconds"])
                print(f"labelling {label}, {processes} process(es): {summary['seconds']:.2f} s in the job, "
                      f"{wall:.1f} s wall, {seconds_cpu:.1f} s CPU; {load}", flush=True)
        print(f"  ratio 1 process / 2 processes ({label}, fastest of {LABEL_ROUNDS}): {min(measured[1]) / min(measured[2]):.2f}x")
        print(_cpu_line(f"labelling {label} (least of {LABEL_ROUNDS})", min(cpu[1]), min(cpu[2])))


def on_paper() -> None:
    """Bytes per GPU per student step at GPUS GPUs (ring all-reduce: 2 (N-1)/N of the buffer sent by each GPU)."""
    import torch

    from sembridge_engine.distill.planner import Planner
    from sembridge_engine.models.backbones import build_backbone

    student = build_backbone("resnet34", 3, PAPER_CLASSES)
    teacher = build_backbone("resnet34", PAPER_BANDS, PAPER_CLASSES)
    planner = Planner(teacher, student)
    with torch.no_grad():
        side = student.eval().forward_features(torch.zeros(1, 3, PAPER_TILE, PAPER_TILE)).feature_map.shape[-1]
    student_parameters = sum(parameter.numel() for parameter in student.parameters())
    planner_parameters = sum(parameter.numel() for parameter in planner.parameters())
    batchnorm_channels = sum(module.num_features for module in student.modules() if isinstance(module, torch.nn.BatchNorm2d))
    ring = 2 * (GPUS - 1) / GPUS
    global_batch = GPUS * PER_GPU_BATCH
    gradients = ring * 4 * (student_parameters + planner_parameters)
    # CORAL: refined rows (cells x width) and pooled rows (width), student and teacher side, gathered forward
    # (all_gather: each GPU sends its own rows to the others) and their gradient all-reduced backward.
    width = planner.width
    coral_columns = 2 * (side * side * width + width)
    coral_forward = (GPUS - 1) * 4 * PER_GPU_BATCH * coral_columns
    coral_backward = ring * 4 * global_batch * coral_columns
    # Synchronised BatchNorm: per channel a sum and a sum of squares forward, their two gradients backward.
    batchnorm = ring * 4 * 4 * batchnorm_channels
    infonce = (GPUS - 1) * 4 * PER_GPU_BATCH * 2 * EMBED_DIM + ring * 4 * global_batch * 2 * EMBED_DIM
    megabytes = 2 ** 20
    print(f"on paper, {GPUS} GPUs, ResNet34 student ({student_parameters / 1e6:.2f} M parameters, {PAPER_CLASSES} classes) "
          f"+ Planner ({planner_parameters / 1e6:.2f} M), {PER_GPU_BATCH} tiles of {PAPER_TILE} px per GPU "
          f"(feature map {side} x {side}, Planner width {width}), float32:")
    print(f"  gradient all-reduce: {gradients / megabytes:.1f} MiB sent per GPU per step "
          f"({4 * (student_parameters + planner_parameters) / megabytes:.1f} MiB of gradients x {ring:.2f})")
    print(f"  CORAL rows: {coral_forward / megabytes:.2f} MiB all-gather + {coral_backward / megabytes:.2f} MiB gradient all-reduce")
    print(f"  synchronised BatchNorm ({batchnorm_channels} channels): {batchnorm / megabytes:.3f} MiB")
    print(f"  total {(gradients + coral_forward + coral_backward + batchnorm) / megabytes:.1f} MiB per GPU per student step; "
          f"matcher step's InfoNCE rows ({EMBED_DIM}-d embeddings): {infonce / megabytes:.2f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sembridge-bench-dist"))
    parser.add_argument("--parts", default="paper,epoch,label")
    args = parser.parse_args()
    parts = args.parts.split(",")
    args.workdir.mkdir(parents=True, exist_ok=True)
    import platform

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    print(f"`python tests/benchmarks/bench_distributed.py` on {platform.machine()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}, commit {commit or 'unknown'}; {_load()}\n\n```", flush=True)
    if "paper" in parts:
        on_paper()
    bundle = args.workdir / "run-1x1" / "model.sembridge"
    if "epoch" in parts:
        bundle = student_epochs(args.workdir)
    if "label" in parts:
        labelling(args.workdir, bundle)
    print("```")
    return 0


if __name__ == "__main__":
    sys.exit(main())
