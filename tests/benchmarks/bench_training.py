"""Benchmark of the student stage (a script, not a pass/fail test).

All times are CPU seconds of this process (min over repeats), robust to other jobs on shared cores.

(b) student epoch time with full SemBridge (SSM + DynM + Planner OT terms + KD) against vanilla KD
    on random class-consistent pairs, both reusing one teacher, measured in this process on the
    same data (ratio; the paper's Table 8 reports +8.7% to +18.6%);
(c) training throughput against the bare model step (forward + loss + backward + optimiser step
    on ready-made batches): the share of the training loop spent outside the model.

The per-step Planner cost is measured twice: on an untrained teacher's features for random input
(huge activations, saturated attention: the case the first Planner was slowest on) and on the
features of the teacher trained in the setup run for real MS tiles; each against the KD step and
beside the frozen first implementation of the same maths (tests/engine/planner_reference.py),
all in this process, interleaved.

Uses ../shared/data (10 MS classes, 700 RGB images) when present, else the bundled demo.
Run: .venv/bin/python tests/benchmarks/bench_training.py [--epochs 4] [--threads 2] [--steps-only]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from resources import demo_project  # noqa: E402
from sembridge_engine.config import apply_overrides, load_config  # noqa: E402
from sembridge_engine.data.transforms import ChannelStats, preprocess_arrays  # noqa: E402
from sembridge_engine.events import BatchProgress, EpochFinished, StageStarted  # noqa: E402
from sembridge_engine.models.backbones import Features, build_backbone  # noqa: E402
from sembridge_engine.training import train  # noqa: E402
from sembridge_engine.training.checkpoint import load_checkpoint  # noqa: E402
from tests.engine.planner_reference import ReferencePlanner  # noqa: E402

VARIANTS = {
    "vanilla KD, random pairs": ["distill.loss=kd", "distill.ssm=false", "distill.dynm=false",
                                 "distill.ot1=false", "distill.ot2=false"],
    "SemBridge (SSM+DynM+OT+KD)": ["distill.loss=kd", "distill.ssm=true", "distill.dynm=true",
                                   "distill.ot1=true", "distill.ot2=true"],
    "plain RGB baseline": ["distill.loss=none", "distill.ot1=false", "distill.ot2=false"],
}


class EpochTimer:
    """CPU seconds of this process per student epoch: the training loop (epoch start to last batch)
    and the after-loop part (DynM, validation, transport cost). CPU time rather than wall time,
    because the benchmark machine's cores are shared and wall time there is mostly other jobs."""

    def __init__(self) -> None:
        self.loop_seconds: list[float] = []
        self.tail_seconds: list[float] = []
        self.batches = 0
        self.mark = None
        self.loop_end = None

    def __call__(self, event) -> None:
        now = time.process_time()
        if isinstance(event, StageStarted) and event.stage == "student":
            self.mark = now
        elif isinstance(event, BatchProgress) and event.stage == "student" and event.done == event.total:
            self.loop_seconds.append(now - self.mark)
            self.loop_end, self.batches = now, event.total
        elif isinstance(event, EpochFinished) and event.stage == "student":
            self.tail_seconds.append(now - self.loop_end)
            self.mark = time.process_time()


def trained_teacher_features(run_dir: Path, ms_root: Path, batch: int, size: int, classes: int) -> Features:
    """The setup run's teacher on `batch` real MS tiles (classes in turn), preprocessed as training does;
    logits cut to the student's class count (the KD loss only needs their shape here)."""
    import rasterio

    state = load_checkpoint(run_dir / "checkpoints" / "teacher.pt")
    meta = state["meta"]
    teacher = build_backbone(meta["arch"], meta["in_channels"], meta["num_classes"])
    teacher.load_state_dict(state["best"]["state"] if state["best"] else state["modules"]["teacher"])
    by_class = [sorted(folder.glob("*.tif")) for folder in sorted(ms_root.iterdir()) if folder.is_dir()]
    files = [by_class[index % len(by_class)][index // len(by_class)] for index in range(batch)]
    arrays = []
    for path in files:
        with rasterio.open(path) as dataset:
            arrays.append(dataset.read())
    tiles = preprocess_arrays(arrays, size, ChannelStats.from_dict(meta["ms_stats"]))
    with torch.no_grad():
        features = teacher.eval().forward_features(tiles)
    features.logits = features.logits[:, :classes]
    return features


def step_seconds(arch: str, teacher_arch: str, teacher_features: Features, classes: int, batch: int, size: int,
                 repeats: int) -> dict[str, float]:
    """CPU seconds per training step (min over repeats, interleaved) for the bare student step, + vanilla
    KD on cached teacher features, + the Planner's OT terms (the full SemBridge step), and the same with
    the frozen first implementation of the Planner in its place; plus the FLOPs of one KD and one full
    step (forward and backward), whose ratio bounds what any implementation of the same maths can save."""
    from sembridge_engine.distill.losses import KDInputs, build_kd_loss
    from sembridge_engine.distill.planner import Planner

    torch.manual_seed(0)
    student = build_backbone(arch, 3, classes)
    teacher_stub = build_backbone(teacher_arch, 13, classes)   # the Planner only reads its feature width
    kd = build_kd_loss("kd", {}, student=student, teacher=teacher_stub)
    planner = Planner(teacher_stub, student, heads=8)
    first = ReferencePlanner(teacher_stub.feature_channels, student.feature_channels, heads=8, width=None)
    first.load_state_dict(planner.state_dict())
    optimizers = {module: torch.optim.Adam([*student.parameters(), *module.parameters()], lr=1e-3)
                  for module in (planner, first)}
    inputs, labels = torch.randn(batch, 3, size, size), torch.randint(0, classes, (batch,))

    def step(level: str) -> None:
        features = student.forward_features(inputs)
        loss = F.cross_entropy(features.logits, labels)
        if level != "bare":
            loss = loss + 0.4 * kd(KDInputs(features, teacher_features, labels, 0, 10))
        optimizer = optimizers[planner]
        if level == "sembridge":
            ot1, ot2 = planner(teacher_features, features)
            loss = loss + 0.6 * (ot1 + ot2)
        elif level == "first":
            ot1, ot2 = first(teacher_features.feature_map, features.feature_map)
            loss, optimizer = loss + 0.6 * (ot1 + ot2), optimizers[first]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    best = {"bare": float("inf"), "kd": float("inf"), "sembridge": float("inf"), "first": float("inf")}
    for level in ("kd", "sembridge"):  # arithmetic of one step: what the Planner adds whatever the machine's load
        with FlopCounterMode(display=False) as counter:
            step(level)
        best[f"{level}_flops"] = counter.get_total_flops()
    for _ in range(repeats):
        for level in ("bare", "kd", "sembridge", "first"):
            started = time.process_time()
            for _ in range(4):
                step(level)
            best[level] = min(best[level], (time.process_time() - started) / 4)
    return best


def step_report(arch: str, teacher_arch: str, setup_run: Path, ms_root: Path, classes: int, sizes: list[int],
                repeats: int) -> dict[tuple[str, int], dict[str, float]]:
    """Per-step costs at each tile size, for an untrained teacher on random input and the trained one."""
    results = {}
    for size in sizes:
        torch.manual_seed(0)
        untrained = build_backbone(teacher_arch, 13, classes).eval()
        with torch.no_grad():
            random_features = untrained.forward_features(torch.randn(32, 13, size, size))
        for name, features in (("untrained teacher, random input", random_features),
                               ("trained teacher, real MS tiles", trained_teacher_features(setup_run, ms_root, 32,
                                                                                           size, classes))):
            steps = step_seconds(arch, teacher_arch, features, classes, 32, size, repeats)
            results[name, size] = steps
            print(f"  {size} px, {name}: bare {steps['bare'] * 1e3:.1f} ms, +KD {steps['kd'] * 1e3:.1f} ms, "
                  f"+KD+Planner {steps['sembridge'] * 1e3:.1f} ms -> Planner {(steps['sembridge'] / steps['kd'] - 1) * 100:+.1f}% "
                  f"over the KD step (first implementation, same run: {(steps['first'] / steps['kd'] - 1) * 100:+.1f}%); "
                  f"its arithmetic: {(steps['sembridge_flops'] / steps['kd_flops'] - 1) * 100:+.0f}% of the KD step's FLOPs")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="student epochs per variant (first is warm-up)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of every variant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arch", default="shufflenet_v2_x1_0")
    parser.add_argument("--teacher-arch", default="resnet34")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--step-tiles", type=int, nargs="+", default=[48], help="tile sizes of the per-step costs, "
                        "besides --tile")
    parser.add_argument("--step-repeats", type=int, default=6, help="interleaved repeats of the per-step costs")
    parser.add_argument("--steps-only", action="store_true", help="only the per-step costs (no epochs, no (b)/(c))")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    shared = REPO.parent / "shared" / "data"
    root = shared if (shared / "ms").is_dir() and (shared / "rgb").is_dir() else demo_project()
    base = apply_overrides(load_config(demo_project() / "demo.toml"), [
        f"data.ms_path={root / 'ms'}", f"data.rgb_path={root / 'rgb'}", "train.device=cpu",
        f"data.ms_tile_size={args.tile}", f"data.rgb_tile_size={args.tile}", "train.scheduler=none",
        f"teacher.arch={args.teacher_arch}", "teacher.epochs=2", "matcher.epochs=1",
        f"student.arch={args.arch}", "student.batch_size=32", "teacher.batch_size=32", "matcher.batch_size=32",
        "distill.e0=1", "distill.delta_e=1", "distill.e_mu=0",   # DynM after every epoch: the worst case
    ])
    print(f"data: {root}  threads: {args.threads}  student {args.arch} <- teacher {args.teacher_arch}, {args.tile} px")
    loops: dict[str, list[float]] = {name: [] for name in VARIANTS}
    tails: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SEMBRIDGE_CACHE_DIR"] = str(Path(tmp) / "cache")
        setup = train(apply_overrides(base, ["student.epochs=1"]), run_dir=Path(tmp) / "teacher")
        classes = len(setup.summary["classes"])
        print(f"teacher + matcher trained once in {setup.summary['seconds']:.1f} s; {classes} student classes")
        print(f"\nper-step costs (CPU ms, min over {args.step_repeats} interleaved repeats of 4 steps, batch 32)")
        steps = step_report(args.arch, args.teacher_arch, setup.run_dir, root / "ms", classes,
                            sorted({*args.step_tiles, args.tile}), args.step_repeats)
        if args.steps_only:
            return
        batches = 0
        for repeat in range(args.repeats):
            for index, (name, overrides) in enumerate(VARIANTS.items()):
                timer = EpochTimer()
                config = apply_overrides(base, [*overrides, f"student.epochs={args.epochs}",
                                                f"student.teacher_from={setup.run_dir}"])
                train(config, run_dir=Path(tmp) / f"run-{repeat}-{index}", callback=timer)
                loops[name] += timer.loop_seconds[1:]
                tails[name] += timer.tail_seconds[1:]
                batches = timer.batches
    steps = steps["trained teacher, real MS tiles", args.tile]   # the teacher the loops above distil
    loop = {name: min(values) for name, values in loops.items()}
    tail = {name: min(values) for name, values in tails.items()}
    vanilla_name, sembridge_name, plain_name = VARIANTS
    print(f"\n(b) student epoch ({batches} batches of 32), min over epochs 2.. of {args.repeats} alternating runs")
    for name in VARIANTS:
        print(f"  {name:28s} train loop {loop[name]:.3f} s + after-loop {tail[name]:.3f} s "
              f"(val, transport cost{', DynM re-match' if name == sembridge_name else ''})")
    ratio = loop[sembridge_name] / loop[vanilla_name]
    whole = (loop[sembridge_name] + tail[sembridge_name]) / (loop[vanilla_name] + tail[vanilla_name])
    print(f"  SemBridge / vanilla KD: train loop x{ratio:.3f} ({(ratio - 1) * 100:+.1f}%), "
          f"whole epoch with a DynM round EVERY epoch x{whole:.3f} ({(whole - 1) * 100:+.1f}%)")
    print(f"  one DynM round (student logits on all train tiles + batched KL argmin) ~ "
          f"{max(0.0, tail[sembridge_name] - tail[vanilla_name]):.3f} s")
    print("\n(c) throughput vs the bare model step (forward + CE + backward + Adam on ready batches)")
    bare_epoch = steps["bare"] * batches
    print(f"  bare step: {steps['bare'] * 1e3:.1f} ms/batch, {32 / steps['bare']:.0f} img/s")
    for name, seconds in ((plain_name, loop[plain_name]),):
        print(f"  {name:28s} {batches * 32 / seconds:.0f} img/s; share of its loop outside the bare step "
              f"{(1 - bare_epoch / seconds) * 100:.1f}%")
    kd_epoch = steps["kd"] * batches
    print(f"  {vanilla_name:28s} {batches * 32 / loop[vanilla_name]:.0f} img/s; share outside the model "
          f"step (+KD) {(1 - kd_epoch / loop[vanilla_name]) * 100:.1f}%")
    sem_epoch = steps["sembridge"] * batches
    print(f"  {sembridge_name:28s} {batches * 32 / loop[sembridge_name]:.0f} img/s; share outside the model "
          f"step (+KD+Planner) {(1 - sem_epoch / loop[sembridge_name]) * 100:.1f}%")


if __name__ == "__main__":
    main()
