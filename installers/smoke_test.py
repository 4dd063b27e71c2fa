"""Smoke test of the built installers against this checkout's venv (run after ``make installer``).

1. The frozen desktop app starts on a private Xvfb (Qt's offscreen platform when Xvfb is missing)
   and opens the bundled demo project: its window titled "SemBridge Studio — demo" appears
   (offscreen: the process is still running after the wait). Time to the window is recorded.
2. A model bundle is made from the demo RGB images (tests' run-folder fixture, exported with its ONNX).
3. The frozen labeller (no torch) classifies the demo RGB folder and labels the demo scene; the app
   folder's frozen ``sembridge`` (torch) classifies the folder too; the venv does both with the
   torch backend. Predicted classes must be identical, confidences within 1e-4, class rasters equal.
4. Start-up: time to the window for the frozen app and the venv's; best-of-three wall time of
   ``sembridge --help`` for each frozen CLI and the venv's.

Writes ``smoke.json`` into the build dir and, with ``--report``, a markdown report (with the folder
sizes from ``build.json``) for BENCHMARKS.md; exits non-zero on failure.

    .venv/bin/python installers/smoke_test.py --build-dir DIR [--app-folder sembridge-studio-cpu] [--report FILE]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WINDOW_TITLE = "SemBridge Studio — demo"
STARTUP_LIMIT = 180.0
TIE_MARGIN = 1e-4  # probabilities of the two best classes closer than this: a tie either runtime may break


def frozen(folder: Path, name: str) -> Path:
    return folder / (name + (".exe" if os.name == "nt" else ""))


def time_to_window(command: list[str], home: Path) -> tuple[float | None, str]:
    """Seconds from launch to the demo project's window (Xvfb), or the offscreen fallback's verdict."""
    env = {**os.environ, "SEMBRIDGE_STUDIO_HOME": str(home)}
    xvfb = shutil.which("Xvfb") and shutil.which("xdotool")
    server = None
    if xvfb:
        # A display number with neither a lock nor a socket: -displayfd can hand out one whose socket
        # another (stale or foreign) server still holds on a shared machine.
        display = next(n for n in range(90, 400) if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists())
        server = subprocess.Popen(["Xvfb", f":{display}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp"], stderr=subprocess.DEVNULL)
        env.update(DISPLAY=f":{display}", QT_QPA_PLATFORM="xcb")
        for _ in range(120):  # the server takes connections a moment after it starts on a busy machine
            if subprocess.run(["xdotool", "getdisplaygeometry"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.25)
    else:
        env["QT_QPA_PLATFORM"] = "offscreen"
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while time.perf_counter() - started < STARTUP_LIMIT:
            if process.poll() is not None:
                return None, f"exited with {process.returncode}: {process.stdout.read().decode(errors='replace')[-2000:]}"
            if xvfb:
                found = subprocess.run(["xdotool", "search", "--name", WINDOW_TITLE], env=env, capture_output=True, text=True)
                if found.stdout.strip():
                    return time.perf_counter() - started, "window shown under Xvfb"
            elif time.perf_counter() - started > 30:
                return None, "still running offscreen after 30 s (window not observable)"
            time.sleep(0.25)
        return None, f"no window titled {WINDOW_TITLE!r} within {STARTUP_LIMIT:.0f} s"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        if server is not None:
            server.terminate()
            server.wait(10)


def help_seconds(command: list[str]) -> float:
    """Best of three wall times of ``<command> --help`` (process start, imports, parser)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([*command, "--help"], check=True, capture_output=True)
        best = min(best, time.perf_counter() - started)
    return best


def classify_rows(command: list[str], bundle: Path, folder: Path, out: Path, backend: str) -> list[dict]:
    subprocess.run([*command, "classify", "--model", str(bundle), str(folder), "--backend", backend, "--csv", str(out)],
                   check=True, capture_output=True)
    with out.open() as handle:
        return list(csv.DictReader(handle))


def label_classes(command: list[str], bundle: Path, scene: Path, out: Path, backend: str):
    """The class raster and the per-class probabilities of labelling ``scene`` with one build."""
    import rasterio

    subprocess.run([*command, "label", "--model", str(bundle), "--scene", str(scene), "--out", str(out), "--backend", backend,
                    "--no-preview", "--probabilities"], check=True, capture_output=True)
    with rasterio.open(out / f"{scene.stem}_classes.tif") as classes, \
            rasterio.open(out / f"{scene.stem}_probabilities.tif") as probabilities:
        return classes.read(1), probabilities.read()


def compare_maps(venv: tuple, frozen: tuple) -> dict:
    """Class rasters agree where it matters: a pixel may differ only where the venv's two best classes tie
    (probabilities within TIE_MARGIN): float32 sums of the same numbers in another order pick either."""
    import numpy as np

    venv_map, venv_probabilities = venv
    frozen_map = frozen[0]
    ranked = np.sort(venv_probabilities, axis=0)
    margin = ranked[-1] - ranked[-2] if len(ranked) > 1 else np.ones_like(ranked[0])
    differs = venv_map != frozen_map
    return {"pixels": int(venv_map.size), "agreement": float((~differs).mean()), "differing": int(differs.sum()),
            "differing_at_ties": int((differs & (margin < TIE_MARGIN)).sum()),
            "ok": bool(not (differs & (margin >= TIE_MARGIN)).any())}


def compare_rows(name: str, rows: list[dict], reference: list[dict]) -> dict:
    relative = [(Path(row["path"]).name, row["predicted_class"], float(row["confidence"])) for row in rows]
    expected = [(Path(row["path"]).name, row["predicted_class"], float(row["confidence"])) for row in reference]
    same_classes = [(path, cls) for path, cls, _ in relative] == [(path, cls) for path, cls, _ in expected]
    difference = max(abs(a[2] - b[2]) for a, b in zip(relative, expected)) if same_classes else None
    return {"files": len(rows), "same_classes": same_classes, "max_confidence_difference": difference,
            "ok": same_classes and len(rows) == len(reference) and difference is not None and difference < 1e-4, "name": name}


def markdown(report: dict, build: dict) -> str:
    """The smoke test's numbers as a report block: machine, date, commit, sizes, start-up, agreement."""
    import platform
    from datetime import date

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    window = report["app_window_seconds"]
    lines = [f"`python installers/smoke_test.py` on {platform.machine()} {platform.system()}, {os.cpu_count()} cores, "
             f"{date.today()}, commit {commit or '?'}", "",
             "| build | size on disk | start-up |", "|---|---|---|"]
    for variant, entry in sorted(build.items()):
        folder = Path(entry["folder"]).name
        if folder == Path(report["app_folder"]).name:
            startup = (f"window of the demo project after {window:.1f} s (venv: {report['venv_app_window_seconds'] or float('nan'):.1f} s); "
                       f"`sembridge --help` {report['help_seconds']['frozen app CLI']:.2f} s") if window else report["app_window"]
        elif folder == Path(report["label_folder"]).name:
            startup = f"`sembridge --help` {report['help_seconds']['frozen labeller']:.2f} s"
        else:
            startup = "not smoke-tested"
        lines.append(f"| `{variant}`: `{folder}/` | {entry['bytes'] / 2**20:.0f} MiB | {startup} |")
    lines.append(f"| venv (`python -m sembridge_engine.cli`) | | `sembridge --help` {report['help_seconds']['venv']:.2f} s |")
    lines.append("")
    for entry in report["classify"]:
        lines.append(f"- classify demo RGB folder, {entry['name']} vs venv (torch): {entry['files']} files, same classes: "
                     f"{entry['same_classes']}, max |confidence difference| {entry['max_confidence_difference']:.1e}")
    lines.append(f"- label demo scene, frozen labeller (onnx) vs venv (torch): {report['label']['pixels']} pixels, "
                 f"class raster agreement {report['label']['agreement']:.4%}; of the "
                 f"{report['label']['differing']} differing pixels {report['label']['differing_at_ties']} lie where the "
                 f"two best classes tie within {TIE_MARGIN:g}")
    lines.append(f"- verdict: {'PASS' if report['ok'] else 'FAIL'}")
    return "\n".join(lines) + "\n"


def main() -> int:
    from resources import demo_project
    from sembridge_engine.training.outputs import export_bundle
    from tests.engine.labelling_fixtures import make_run_folder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build" / "installer")
    parser.add_argument("--app-folder", default="sembridge-studio-cpu")
    parser.add_argument("--label-folder", default="sembridge-label")
    parser.add_argument("--report", type=Path, default=None, help="also write a markdown report for BENCHMARKS.md here")
    args = parser.parse_args()
    dist = args.build_dir.resolve() / "dist"
    app_dir, label_dir = dist / args.app_folder, dist / args.label_folder
    venv_cli = [sys.executable, "-m", "sembridge_engine.cli"]
    report: dict = {"app_folder": str(app_dir), "label_folder": str(label_dir)}
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        seconds, verdict = time_to_window([str(frozen(app_dir, "sembridge-studio"))], work / "home")
        report["app_window_seconds"], report["app_window"] = seconds, verdict
        print(f"frozen app: {verdict}" + (f" after {seconds:.1f} s" if seconds else ""), flush=True)
        report["venv_app_window_seconds"], _ = time_to_window([sys.executable, "-m", "app.main"], work / "home")
        bundle = export_bundle(make_run_folder(work / "run", fit_steps=80))
        rgb, scene = demo_project() / "rgb", demo_project() / "scene" / "scene_subset.tif"
        reference = classify_rows(venv_cli, bundle, rgb, work / "venv.csv", "torch")
        label_cli, app_cli = [str(frozen(label_dir, "sembridge"))], [str(frozen(app_dir, "sembridge"))]
        report["classify"] = [compare_rows("frozen labeller (onnx)", classify_rows(label_cli, bundle, rgb, work / "label.csv", "onnx"), reference),
                              compare_rows("frozen app CLI (torch)", classify_rows(app_cli, bundle, rgb, work / "app.csv", "torch"), reference)]
        report["label"] = compare_maps(label_classes(venv_cli, bundle, scene, work / "venv_map", "torch"),
                                       label_classes(label_cli, bundle, scene, work / "label_map", "onnx"))
        report["help_seconds"] = {"frozen labeller": help_seconds(label_cli), "frozen app CLI": help_seconds(app_cli),
                                  "venv": help_seconds(venv_cli)}
    report["ok"] = bool(report["app_window_seconds"] or "offscreen" in report["app_window"]) and \
        all(entry["ok"] for entry in report["classify"]) and report["label"]["ok"]
    (args.build_dir / "smoke.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    if args.report:
        build_json = args.build_dir / "build.json"
        args.report.write_text(markdown(report, json.loads(build_json.read_text()) if build_json.is_file() else {}))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
