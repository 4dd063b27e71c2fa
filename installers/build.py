"""Build the installers (``make installer``): one PyInstaller folder per variant, each from its own venv.

Variants:
  cpu    the desktop app + ``sembridge`` CLI with the CPU build of torch 2.13.0 and its torchvision
         0.28.0 (no CUDA libraries). pip must find ``torch==2.13.0+cpu``: on this project's machines it
         is in pip's find-links; elsewhere pass ``--torch-index https://download.pytorch.org/whl/cpu``.
  cuda   the same app with the project's pinned torch 2.14.1 / torchvision 0.29.1 as PyPI serves them
         on Linux (CUDA build, ~4 GB of CUDA libraries; runs on the CPU too).
  label  ``sembridge classify`` / ``label`` only: ONNX Runtime, rasterio, geopandas/pyogrio; no torch, no Qt.

Everything goes under ``--build-dir`` (venvs, PyInstaller work files, ``dist/``, one log per variant);
a venv is reinstalled only when its requirement list changes. The app folders get the icon (drawn
by make_icon.py), a ``.desktop`` template and ``install-desktop-entry.sh``. ``build.json`` records
each folder's size. Windows and macOS build with the same specs (see installers/README.md).

    python installers/build.py --build-dir DIR [--variants cpu,label] [--python /usr/bin/python3.11]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INSTALLERS = ROOT / "installers"
PYINSTALLER = "pyinstaller>=6.10"
TORCH_CPU = ["torch==2.13.0+cpu", "torchvision==0.28.0"]
# What `classify` and `label` import on the onnx backend (see installers/sembridge_label.spec).
LABEL_REQUIREMENTS = ["numpy", "rasterio", "geopandas", "pyogrio", "shapely", "pyproj", "pillow", "platformdirs", "psutil", "onnx",
                      "onnxruntime"]
VARIANTS = {
    "cpu": {"spec": "sembridge_studio.spec", "folder": "sembridge-studio-cpu", "app": True},
    "cuda": {"spec": "sembridge_studio.spec", "folder": "sembridge-studio", "app": True},
    "label": {"spec": "sembridge_label.spec", "folder": "sembridge-label", "app": False},
}


def project_requirements(torch_pins: list[str] | None) -> list[str]:
    """The project's runtime + GUI + export dependencies, with torch/torchvision replaced by ``torch_pins``."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    requirements = [*project["dependencies"], *extras["gui"], *extras["export"]]
    if torch_pins is not None:
        requirements = [r for r in requirements if not r.startswith(("torch==", "torchvision=="))] + torch_pins
    return requirements


def requirements_for(variant: str) -> list[str]:
    if variant == "label":
        return [*LABEL_REQUIREMENTS, PYINSTALLER]
    return [*project_requirements(TORCH_CPU if variant == "cpu" else None), PYINSTALLER]


def run(command: list, log, **kwargs) -> None:
    log.write(f"\n$ {' '.join(map(str, command))}\n")
    log.flush()
    subprocess.run(list(map(str, command)), stdout=log, stderr=subprocess.STDOUT, check=True, **kwargs)


def prepare_venv(venv: Path, python: str, requirements: list[str], pip_args: list[str], log) -> Path:
    """A venv holding ``requirements`` and this project (no deps); reinstalled when the list changes."""
    stamp = venv / ".requirements"
    wanted = "\n".join([*requirements, *pip_args])
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    if not (stamp.is_file() and stamp.read_text() == wanted):
        shutil.rmtree(venv, ignore_errors=True)
        run([python, "-m", "venv", venv], log)
        run([bin_dir / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q", *pip_args, *requirements], log)
        stamp.write_text(wanted)
    run([bin_dir / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps", "--force-reinstall", ROOT], log)
    return bin_dir


def folder_bytes(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file() and not item.is_symlink())


def finish_app_folder(folder: Path, icon: Path) -> None:
    """Icon, .desktop template and the script that installs it for the folder's current location."""
    shutil.copy2(icon, folder / "sembridge-studio.png")
    shutil.copy2(INSTALLERS / "linux" / "sembridge-studio.desktop.in", folder)
    script = folder / "install-desktop-entry.sh"
    shutil.copy2(INSTALLERS / "linux" / "install-desktop-entry.sh", script)
    script.chmod(0o755)


def build(variant: str, build_dir: Path, python: str, pip_args: list[str], icon: Path) -> dict:
    spec = VARIANTS[variant]
    (build_dir / "logs").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(build_dir / "logs" / f"{variant}.log", "w") as log:
        extra = pip_args if variant != "label" else []
        bin_dir = prepare_venv(build_dir / f"venv-{variant}", python, requirements_for(variant), extra, log)
        run([bin_dir / "python", INSTALLERS / "make_icon.py", icon], log)  # Pillow is in every build venv
        env = {**os.environ, "SEMBRIDGE_BUILD_NAME": spec["folder"], "SEMBRIDGE_ICON": str(icon) if spec["app"] else "",
               "SEMBRIDGE_TORCH_CPU": "1" if variant == "cpu" else ""}
        run([bin_dir / "pyinstaller", "--noconfirm", "--log-level", "WARN", "--distpath", build_dir / "dist",
             "--workpath", build_dir / "work" / variant, INSTALLERS / spec["spec"]], log, env=env, cwd=build_dir)
    folder = build_dir / "dist" / spec["folder"]
    if spec["app"]:
        finish_app_folder(folder, icon)
    return {"folder": str(folder), "bytes": folder_bytes(folder), "build_seconds": round(time.perf_counter() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-dir", type=Path, default=ROOT / "build" / "installer")
    parser.add_argument("--variants", default="cpu,label", help="comma-separated: cpu, cuda, label (default cpu,label)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the build venvs (default: this one)")
    parser.add_argument("--torch-index", default=None, metavar="URL",
                        help="extra pip index for the torch variants (e.g. the PyTorch CPU index for torch==2.13.0+cpu)")
    args = parser.parse_args()
    variants = [name.strip() for name in args.variants.split(",") if name.strip()]
    unknown = [name for name in variants if name not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    build_dir = args.build_dir.resolve()
    icon = build_dir / "sembridge-studio.png"
    pip_args = ["--extra-index-url", args.torch_index] if args.torch_index else []
    report_path = build_dir / "build.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    for variant in variants:
        print(f"building {variant} (log: {build_dir / 'logs' / (variant + '.log')}) ...", flush=True)
        try:
            report[variant] = build(variant, build_dir, args.python, pip_args, icon)
        except subprocess.CalledProcessError as error:
            print(f"{variant}: FAILED ({error}); see the log", file=sys.stderr)
            return 1
        report[variant]["requirements_sha"] = hashlib.sha256("\n".join(requirements_for(variant)).encode()).hexdigest()[:12]
        report_path.write_text(json.dumps(report, indent=2))
        print(f"{variant}: {report[variant]['folder']} ({report[variant]['bytes'] / 2**20:.0f} MiB)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
