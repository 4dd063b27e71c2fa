"""How long does the Qt event loop stall while a training run goes on?

A 10 ms QTimer probe records the gap between its ticks while a short REAL run (demo project,
shufflenet_v2_x0_5, 32 px tiles) trains through a TrainWorker (in its own process) and the Monitor
panel draws its events. Prints max / p99 / p50 gaps (the target is a max gap under 100 ms) and the
signal rate. For the longest gaps it also prints how much CPU the UI thread itself used in them:
a long gap with little UI CPU is the machine (other processes, starved cores), not the app. On
Linux it also prints how long the UI thread sat runnable but waiting for a core in those gaps
(/proc/thread-self/schedstat): close to the gap means a starved core, near 0 means it was
blocked (the GIL, the X server) rather than queued.
``--load N`` keeps N busy processes running beside the run (a loaded machine); ``--real-x`` draws
on a real X server (tools/xserver.py: the display, or a private Xvfb) instead of offscreen.
It prints how the training process really ran (CPU threads, niceness: app/training_process.py
leaves the window a core); ``--threads N`` gives the run N threads instead.
Settings, runs and the teacher cache go to a temporary folder. numpy is imported inside main():
the spawned training process re-imports this script and must load no BLAS before it caps threads.

    QT_QPA_PLATFORM=offscreen .venv/bin/python tests/benchmarks/bench_gui_stall.py [--student-epochs 3] [--load 2]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE_MS = 10
SCHEDSTAT = Path("/proc/thread-self/schedstat")


def queued_ms() -> float:
    """Time the calling thread has spent runnable but waiting for a core, in ms (0 where unknown)."""
    try:
        return int(SCHEDSTAT.read_text().split()[1]) / 1e6
    except (OSError, IndexError, ValueError):
        return 0.0


def busy() -> None:
    """One core's worth of load (a --load process)."""
    while True:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student-epochs", type=int, default=3)
    parser.add_argument("--loss", default="kd")
    parser.add_argument("--override", action="append", default=[],
                        help="extra config override, e.g. --override train.workers=1 (repeatable)")
    parser.add_argument("--load", type=int, default=0, help="busy processes to run beside the training run")
    parser.add_argument("--map", action="store_true",
                        help="also show the Label map's map view of the demo mosaic, zoomed in, during the run")
    parser.add_argument("--real-x", action="store_true",
                        help="draw on a real X server (DISPLAY, or a private Xvfb) instead of the offscreen platform")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads of the training process (default 0: the app's choice, every core but one)")
    parser.add_argument("--switch-interval-ms", type=float, default=0.0,
                        help="set sys.setswitchinterval (GIL hand-over period) for an experiment")
    args = parser.parse_args()
    import numpy as np

    if args.switch_interval_ms:
        sys.setswitchinterval(args.switch_interval_ms / 1000)
    sys.path.insert(0, str(ROOT))
    if args.real_x:
        from tools.xserver import choose_qt_platform

        choose_qt_platform()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as app.main does; try =ACTIVE to compare
    home = Path(tempfile.mkdtemp(prefix="sembridge-bench-"))
    os.environ["SEMBRIDGE_STUDIO_HOME"] = str(home)
    os.environ["SEMBRIDGE_CACHE_DIR"] = str(home / "cache")

    from PySide6.QtCore import QCoreApplication, QElapsedTimer, QEvent, QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication

    from app.monitor import MonitorPanel
    from app.workers import TrainWorker, warm_up_engine
    from resources import demo_project

    _application = QApplication.instance() or QApplication(sys.argv[:1])  # alive for the whole benchmark
    started = time.perf_counter()
    warm_up_engine()  # what the app does at start-up, before any run
    from sembridge_engine.config import apply_overrides, load_config

    import_seconds = time.perf_counter() - started
    config = apply_overrides(load_config(demo_project() / "demo.toml"), [
        "teacher.arch=shufflenet_v2_x0_5", "matcher.arch=shufflenet_v2_x0_5", "student.arch=shufflenet_v2_x0_5",
        "teacher.epochs=1", "matcher.epochs=1", f"student.epochs={args.student_epochs}",
        "data.ms_tile_size=32", "data.rgb_tile_size=32", "train.device=cpu", f"distill.loss={args.loss}",
        f"output_dir={home / 'runs'}", *args.override,
    ])
    monitor = MonitorPanel()
    monitor.resize(1280, 800)
    monitor.show()
    if args.map:
        from PySide6.QtCore import QRectF

        from app.label.map_view import MapView

        map_view = MapView()
        map_view.resize(900, 700)
        map_view.show()
        map_view.show_scene(str(demo_project() / "scene" / "ucmerced_mosaic.tif"), [1, 2, 3], (1536, 1536))
        waiting = QEventLoop()
        map_view.sceneShown.connect(waiting.quit)
        waiting.exec()
        map_view.viewbox.setRange(QRectF(400, 400, 500, 400), padding=0)
    worker = TrainWorker(config, threads=args.threads)
    monitor.attach(worker, "benchmark run")
    child: dict = {}
    worker.processStarted.connect(child.update)
    counts = {"batch": 0, "epoch": 0}
    worker.batchProgress.connect(lambda *_: counts.__setitem__("batch", counts["batch"] + 1))
    worker.epochFinished.connect(lambda *_: counts.__setitem__("epoch", counts["epoch"] + 1))

    settle = QEventLoop()
    QTimer.singleShot(500, settle.quit)
    settle.exec()  # the first paint of the panel is start-up cost, not a stall during training

    load_before = os.getloadavg()[0]
    run_started = time.perf_counter()
    timeline: list[tuple[float, str]] = []
    worker.stageStarted.connect(lambda stage, _e: timeline.append((time.perf_counter() - run_started, f"{stage} started")))
    worker.epochFinished.connect(lambda stage, epoch, _n, _m: timeline.append(
        (time.perf_counter() - run_started, f"{stage} epoch {epoch} finished")))
    worker.matchingUpdated.connect(lambda epoch, kind, _c: timeline.append(
        (time.perf_counter() - run_started, f"{kind} matching at epoch {epoch}")))
    worker.runFinished.connect(lambda *_: timeline.append((time.perf_counter() - run_started, "results shown")))
    gaps: list[float] = []
    ends: list[float] = []
    ui_cpu: list[float] = []
    ui_queued: list[float] = []
    cpu_mark = [time.thread_time()]
    queue_mark = [queued_ms()]
    clock = QElapsedTimer()
    probe = QTimer()
    probe.setInterval(PROBE_MS)

    def tick() -> None:
        now = time.thread_time()
        ui_cpu.append((now - cpu_mark[0]) * 1000)
        cpu_mark[0] = now
        queued = queued_ms()
        ui_queued.append(queued - queue_mark[0])
        queue_mark[0] = queued
        gaps.append(clock.nsecsElapsed() / 1e6)
        ends.append(time.perf_counter() - run_started)
        clock.restart()

    probe.timeout.connect(tick)
    loop = QEventLoop()
    worker.finished.connect(loop.quit)
    loaders = [multiprocessing.get_context("spawn").Process(target=busy, daemon=True) for _ in range(args.load)]
    for loader in loaders:
        loader.start()
    clock.start()
    probe.start()
    worker.start()
    loop.exec()
    probe.stop()
    for loader in loaders:
        loader.terminate()
    run_seconds = time.perf_counter() - run_started
    worker.wait()

    values = np.array(gaps[1:])
    cpu = np.array(ui_cpu[1:])
    waiting = np.array(ui_queued[1:])
    print(f"Qt platform: {os.environ['QT_QPA_PLATFORM']}{' (DISPLAY ' + os.environ.get('DISPLAY', '') + ')' if os.environ['QT_QPA_PLATFORM'] == 'xcb' else ''}, "
          f"map view open: {args.map}")
    print(f"engine import + warm-up (app start-up, before the probe): {import_seconds:.1f} s")
    print(f"run: {run_seconds:.1f} s, result: {'ok' if not worker.error else worker.error}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, busy processes beside it: {args.load}, "
          f"load average before: {load_before:.1f}, after: {os.getloadavg()[0]:.1f}")
    print(f"training process: {child.get('torch_threads')} CPU threads, {child.get('interop_threads')} inter-op "
          f"threads, niceness {child.get('niceness')} (the machine has {os.cpu_count()} cores)")
    print(f"probe ticks: {len(values)} at {PROBE_MS} ms")
    print(f"event-loop gap: max {values.max():.1f} ms, p99 {np.percentile(values, 99):.1f} ms, "
          f"p95 {np.percentile(values, 95):.1f} ms, p50 {np.percentile(values, 50):.1f} ms")
    print(f"gaps over 100 ms: {int((values > 100).sum())}, over 50 ms: {int((values > 50).sum())}")
    print(f"UI signals: {counts['batch']} batch updates ({counts['batch'] / run_seconds:.1f}/s), "
          f"{counts['epoch']} epoch updates")
    print(f"UI-thread CPU in one probe interval: max {cpu.max():.1f} ms (the app's own longest piece of work)")
    print("target: max gap < 100 ms ->", "MET" if values.max() < 100 else "NOT MET")
    print("longest gaps (end time in the run, UI-thread CPU and time queued for a core in the gap, the last UI "
          "event before it):")
    for index in np.argsort(values)[::-1][:5]:
        end = ends[index + 1]
        before = [label for moment, label in timeline if moment <= end]
        print(f"  {values[index]:6.1f} ms ending at {end:6.2f} s, UI CPU {cpu[index]:5.1f} ms, "
              f"queued {waiting[index]:5.1f} ms, "
              f"after: {before[-1] if before else 'start'}")
    # Delete the panel while the QApplication lives: left to Python's shutdown, a top-level panel
    # was sometimes torn down after Qt's own objects and the process aborted on exit.
    monitor.deleteLater()
    if args.map:
        map_view.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
    return 0


if __name__ == "__main__":
    sys.exit(main())
