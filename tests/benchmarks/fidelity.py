"""Does SemBridge beat its baselines on real unpaired imagery? One resumable command.

For each teacher/student pair the teacher and matcher are trained once (by the first run), then
every student variant reuses them through ``--teacher-from``. Every run goes through the real CLI
(``sembridge train`` / ``sembridge resume``) into its own run folder; finished runs are skipped,
interrupted ones resumed, so the command can be stopped and started again at any time.

Data: ``../shared/data`` beside the repository (EuroSAT 13-band MS, 10 classes x 20, vs UC Merced
RGB, 6 shared classes). The teacher learns all ten MS classes; the students the six shared ones.
Scores are OA and macro F1 on the held-out RGB test split (never used for model selection).

    python tests/benchmarks/fidelity.py --quick          # (a)-(c), one seed, light pair, < 30 min
    python tests/benchmarks/fidelity.py                  # everything, 3 seeds, both pairs (hours)
    python tests/benchmarks/fidelity.py --budget quick --pairs r34-shufflenet   # every variant, quick budget
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SEMBRIDGE_ON = {"distill.ssm": True, "distill.dynm": True, "distill.ot1": True, "distill.ot2": True}
SEMBRIDGE_OFF = {"distill.ssm": False, "distill.dynm": False, "distill.ot1": False, "distill.ot2": False}


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    settings: dict = field(default_factory=dict)


VARIANTS = [
    Variant("a_no_kd", "(a) no KD (RGB only)", {"distill.loss": "none"} | SEMBRIDGE_OFF),
    Variant("b_kd_random", "(b) vanilla KD, class-consistent random pairs", {"distill.loss": "kd"} | SEMBRIDGE_OFF),
    Variant("c_kd_sembridge", "(c) vanilla KD + SemBridge", {"distill.loss": "kd"} | SEMBRIDGE_ON),
    Variant("d_no_ssm", "(d) SemBridge without SSM", {"distill.loss": "kd"} | SEMBRIDGE_ON | {"distill.ssm": False}),
    Variant("d_no_dynm", "(d) SemBridge without DynM", {"distill.loss": "kd"} | SEMBRIDGE_ON | {"distill.dynm": False}),
    Variant("d_no_ot1", "(d) SemBridge without L_ot1", {"distill.loss": "kd"} | SEMBRIDGE_ON | {"distill.ot1": False}),
    Variant("d_no_ot2", "(d) SemBridge without L_ot2", {"distill.loss": "kd"} | SEMBRIDGE_ON | {"distill.ot2": False}),
    Variant("e_dkd", "(e) DKD, random pairs", {"distill.loss": "dkd"} | SEMBRIDGE_OFF),
    Variant("e_dkd_sembridge", "(e) DKD + SemBridge", {"distill.loss": "dkd"} | SEMBRIDGE_ON),
    Variant("f_dskd", "(f) DSKD, random pairs", {"distill.loss": "dskd"} | SEMBRIDGE_OFF),
    Variant("g_kd_pssm", "(g) KD + PSSM, random pairs", {"distill.loss": "kd", "distill.pssm": True} | SEMBRIDGE_OFF),
]
QUICK_VARIANTS = ("a_no_kd", "b_kd_random", "c_kd_sembridge")

PAIRS = {
    "r34-r34": {"teacher.arch": "resnet34", "matcher.arch": "resnet34", "student.arch": "resnet34"},
    "r34-shufflenet": {"teacher.arch": "resnet34", "matcher.arch": "resnet34", "student.arch": "shufflenet_v2_x1_0"},
}

# Budget chosen for a 2-core CPU: MS tiles at their native 64 px, RGB images down-sampled to 64 px
# (UC Merced is 256 px), enough epochs for the training losses to flatten on this small data.
FULL_SETTINGS = {
    "data.ms_tile_size": 64, "data.rgb_tile_size": 64,
    "teacher.epochs": 40, "teacher.batch_size": 32, "teacher.lr": 0.001,
    "matcher.epochs": 20, "matcher.batch_size": 32, "matcher.lr": 0.001,
    "student.epochs": 40, "student.batch_size": 32, "student.lr": 0.001,
    "distill.e0": 10, "distill.delta_e": 10, "distill.e_mu": 5,
}
QUICK_SETTINGS = FULL_SETTINGS | {
    "data.ms_tile_size": 48, "data.rgb_tile_size": 48,
    "teacher.epochs": 30, "matcher.epochs": 10, "student.epochs": 24,
    "distill.e0": 8, "distill.delta_e": 6, "distill.e_mu": 2,
}


def write_base_config(data: Path, out: Path) -> Path:
    """A run configuration pointing at the shared data (absolute paths, so runs work from anywhere)."""
    config = out / "fidelity_base.toml"
    config.write_text(
        f'name = "fidelity"\noutput_dir = "{out.as_posix()}"\n'
        f'[data]\nms_path = "{(data / "ms").as_posix()}"\nrgb_path = "{(data / "rgb").as_posix()}"\n'
        'band_preset = "sentinel2_eurosat13"\n'
    )
    return config


def sembridge(*args: str) -> None:
    command = [sys.executable, "-m", "sembridge_engine.cli", *args]
    print("$ sembridge " + " ".join(args), flush=True)
    subprocess.run(command, check=True, cwd=REPO)


def run_status(run_dir: Path) -> str:
    try:
        return json.loads((run_dir / "run.json").read_text()).get("status", "unknown")
    except (OSError, ValueError):
        return "missing"


def ensure_run(config: Path, run_dir: Path, settings: dict, teacher_from: Path | None) -> None:
    """Train the run unless it finished already; resume it when it was interrupted."""
    status = run_status(run_dir)
    if status == "finished":
        return
    if status in ("cancelled", "failed", "running"):
        sembridge("resume", str(run_dir))
        return
    overrides = [f"{key}={str(value).lower() if isinstance(value, bool) else value}" for key, value in settings.items()]
    args = ["train", "--config", str(config), "--out", str(run_dir)]
    for override in overrides:
        args += ["--set", override]
    if teacher_from is not None:
        args += ["--teacher-from", str(teacher_from)]
    sembridge(*args)


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text()).get("summary", {})


def student_curve(run_dir: Path, key: str) -> list[tuple[int, float]]:
    points = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("stage") == "student" and record.get(key) is not None:
            points.append((record["epoch"], record[key]))
    return points


def student_seconds(summary: dict) -> float:
    """Sum of the student's epoch times, read from the run's metrics log."""
    return sum(seconds for _, seconds in student_curve(Path(summary["run_dir"]), "epoch_seconds"))


def mean_std(values: list[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def plot_transport(runs: dict[str, Path], png: Path) -> None:
    """Transport cost of vanilla KD vs SemBridge per student epoch, like the paper's Figs. 2 and 7."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, key, title in zip(axes, ("transport_cost_logit", "transport_cost_feature"),
                                ("logit space", "pooled-feature space")):
        for label, run_dir in runs.items():
            curve = student_curve(run_dir, key)
            if curve:
                axis.plot(*zip(*curve), label=label)
        axis.set_title(f"Transport cost, {title}")
        axis.set_xlabel("student epoch")
        axis.set_ylabel("Wasserstein cost")
        axis.legend()
    fig.suptitle("Exact Wasserstein cost (POT EMD, squared Euclidean) between student and matched teachers, fixed probe set",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "bench_runs" / "fidelity")
    parser.add_argument("--quick", action="store_true", help="(a)-(c), one seed, the light pair, quick budget")
    parser.add_argument("--budget", choices=("quick", "full"), help="epochs and tile sizes (default: full, or quick with --quick)")
    parser.add_argument("--pairs", nargs="+", choices=sorted(PAIRS), default=None)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--report", type=Path, help="also write the markdown report here")
    parser.add_argument("--report-only", action="store_true", help="train nothing; report the runs finished so far")
    args = parser.parse_args(argv)
    if not (args.data / "ms").is_dir() or not (args.data / "rgb").is_dir():
        print(f"no shared data at {args.data} (expects ms/ and rgb/ inside)", file=sys.stderr)
        return 2

    budget = args.budget or ("quick" if args.quick else "full")
    mode = "quick" if args.quick else f"all variants, {budget} budget"
    out = (args.out / budget).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = write_base_config(args.data.resolve(), out)
    settings = QUICK_SETTINGS if budget == "quick" else FULL_SETTINGS
    variants = [v for v in VARIANTS if not args.quick or v.key in QUICK_VARIANTS]
    pairs = args.pairs or (["r34-shufflenet"] if args.quick else sorted(PAIRS))
    seeds = range(1 if args.quick else args.seeds)

    started = time.perf_counter()
    report = [f"## Fidelity ({mode} mode)", "",
              "Settings: " + ", ".join(f"`{k}={v}`" for k, v in settings.items()), ""]
    results: dict = {}
    for pair in pairs:
        teacher_run = out / pair / "c_kd_sembridge" / "seed0"
        for seed in seeds:
            for variant in sorted(variants, key=lambda v: v.key != "c_kd_sembridge"):
                run_dir = out / pair / variant.key / f"seed{seed}"
                if not args.report_only:
                    ensure_run(config, run_dir, settings | PAIRS[pair] | variant.settings | {"train.seed": seed},
                               None if run_dir == teacher_run else teacher_run)
                runs = results.setdefault(pair, {}).setdefault(variant.key, [])
                if run_status(run_dir) == "finished":
                    runs.append(summary_of(run_dir))

        teacher_summary = summary_of(teacher_run)
        report += [f"### {pair}: teacher `{PAIRS[pair]['teacher.arch']}` -> student `{PAIRS[pair]['student.arch']}`", "",
                   f"Teacher (10 MS classes) validation OA: {mean_std([teacher_summary.get('teacher_val_oa', float('nan'))])}", "",
                   f"| variant | seeds | test OA % | test macro F1 % | student minutes / run |",
                   "|---|---|---|---|---|"]
        for variant in variants:
            runs = results[pair][variant.key]
            if not runs:
                report.append(f"| {variant.label} | 0 | not run yet | | |")
                continue
            minutes = statistics.mean(student_seconds(r) for r in runs) / 60
            report.append(f"| {variant.label} | {len(runs)} | {mean_std([r['test_oa'] for r in runs])} | "
                          f"{mean_std([r['test_macro_f1'] for r in runs])} | {minutes:.1f} |")
        png = out / f"transport_cost_{pair}.png"
        plot_transport({"(b) vanilla KD, random pairs": out / pair / "b_kd_random" / "seed0",
                        "(c) vanilla KD + SemBridge": teacher_run}, png)
        report += ["", f"Transport cost curves: `{png.name}`", ""]

    report.append(f"Wall time of this invocation: {(time.perf_counter() - started) / 60:.1f} min "
                  "(finished runs are skipped, so a re-run only reports).")
    text = "\n".join(report)
    print(text)
    (out / "fidelity_results.json").write_text(json.dumps(results, indent=1))
    if args.report:
        args.report.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
