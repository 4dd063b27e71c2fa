"""Every speed number of the engine, labelling and GUI, collected in one run.

Runs each benchmark script of this folder in its own process, one after the other (they all
measure ratios against a baseline timed in the same process, so a noisy machine moves both
sides), and prints their reports under one heading each, with the machine, date and commit.

    .venv/bin/python tests/benchmarks/speed.py [--report FILE] [--only dynm training ...]
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

BENCHMARKS = {
    "data": ("Tile cache loading (files/s, 1 vs N decoder threads)", ["bench_data_loading.py"]),
    "dynm": ("DynM re-matching: vectorised vs per-tile loop", ["bench_dynm.py"]),
    "training": ("Student epoch: SemBridge vs vanilla KD; time outside forward/backward", ["bench_training.py"]),
    "labelling": ("Scene labelling: throughput vs bare inference, peak RSS, Mpx/s", ["bench_labelling.py"]),
    "onnx": ("Student inference: ONNX Runtime vs PyTorch", ["bench_onnx.py"]),
    "gui": ("GUI event-loop stall during training", ["bench_gui_stall.py"]),
}


def machine_line() -> str:
    import torch

    return (f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}")


def commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    return result.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def run_benchmark(script: list[str]) -> tuple[str, float, int]:
    started = time.perf_counter()
    env = os.environ | {"QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run([sys.executable, str(HERE / script[0]), *script[1:]], cwd=REPO, env=env,
                            capture_output=True, text=True)
    output = result.stdout.strip()
    if result.returncode != 0:
        output += f"\n[exit code {result.returncode}]\n" + result.stderr.strip()[-2000:]
    return output, time.perf_counter() - started, result.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    parser.add_argument("--report", type=Path, help="also write the markdown report here")
    args = parser.parse_args(argv)

    lines = ["## Speed", "", f"- machine: {machine_line()}",
             f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC", f"- commit: {commit()}",
             "- command: `.venv/bin/python tests/benchmarks/speed.py`", ""]
    failures = 0
    for key, (title, script) in BENCHMARKS.items():
        if args.only and key not in args.only:
            continue
        print(f"running {script[0]} ...", file=sys.stderr, flush=True)
        output, seconds, code = run_benchmark(script)
        failures += code != 0
        lines += [f"### {title}", "", f"`python tests/benchmarks/{' '.join(script)}` ({seconds:.0f} s)", "",
                  "```", output, "```", ""]
    text = "\n".join(lines)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
