"""`sembridge train --config FILE`: run teacher -> matcher -> student with a progress bar."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Any, Iterator


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, help="run configuration (TOML)")
    parser.add_argument("--out", type=Path, help="run folder to create (default: <output_dir>/<name>-<time>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set student.epochs=3 (repeatable)")
    parser.add_argument("--teacher-from", type=Path, metavar="RUN_DIR",
                        help="reuse the teacher (and matcher) of a finished run instead of training them")


class ProgressPrinter:
    """Turns engine events into one tqdm bar per stage and log lines on stderr."""

    def __init__(self) -> None:
        self.bar = None

    def __call__(self, event) -> None:
        from tqdm import tqdm

        from ..events import BatchProgress, EpochFinished, LogLine, MatchingUpdated, RunFailed, StageFinished, StageStarted

        if isinstance(event, StageStarted):
            self.close()
            self.bar = tqdm(total=event.epochs, desc=f"{event.stage:8s}", unit="epoch", dynamic_ncols=True, file=sys.stderr)
            self.epochs = event.epochs
        elif isinstance(event, BatchProgress) and self.bar is not None:
            self.bar.total = self.epochs * event.total
            self.bar.n = (event.epoch - 1) * event.total + event.done
            self.bar.unit = "batch"
            self.bar.refresh()
        elif isinstance(event, EpochFinished) and self.bar is not None:
            metrics = event.metrics
            postfix = {"epoch": f"{event.epoch}/{event.epochs}", "loss": _fmt(metrics.get("loss_total"))}
            if metrics.get("val_oa") is not None:
                postfix["val_oa"] = _fmt(metrics["val_oa"])
            if metrics.get("val_retrieval_top1") is not None:
                postfix["top1"] = _fmt(metrics["val_retrieval_top1"])
            self.bar.set_postfix(postfix)
        elif isinstance(event, StageFinished):
            self.close()
        elif isinstance(event, MatchingUpdated):
            self.write(f"matching {event.kind} (epoch {event.epoch}): {event.changed_fraction:.1%} of pairs changed")
        elif isinstance(event, LogLine):
            self.write(("" if event.level == "info" else f"{event.level}: ") + event.message)
        elif isinstance(event, RunFailed):
            self.close()

    def write(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_summary(summary: dict[str, Any]) -> None:
    """One screen: stages, final val/test OA and F1, transport cost first -> last, where things are."""
    print(f"\nRun finished: {summary.get('run_dir')}")
    print(f"  device            {summary.get('device')}  ({summary.get('seconds', 0):.0f} s)")
    for stage, info in summary.get("stages", {}).items():
        last = info.get("last", {})
        detail = f"epochs {info.get('epochs')}"
        if last.get("val_oa") is not None:
            detail += f", last val OA {last['val_oa']:.3f}"
        if info.get("best_epoch") and info.get("best_val_oa") is not None:
            detail += f", best val OA {info['best_val_oa']:.3f} (epoch {info['best_epoch']}, kept)"
        if last.get("val_retrieval_top1") is not None:
            detail += f", val retrieval top-1 {last['val_retrieval_top1']:.3f}"
        if info.get("matching_rounds"):
            detail += f", DynM rounds {info['matching_rounds']}"
        print(f"  {stage:17s} {info.get('source', 'trained')}: {detail}")
    print(f"  teacher val OA    {_fmt(summary.get('teacher_val_oa'))} (MS val split, all MS classes)")
    print(f"  student val OA    {_fmt(summary.get('val_oa'))}   macro F1 {_fmt(summary.get('val_macro_f1'))}")
    print(f"  student test OA   {_fmt(summary.get('test_oa'))}   macro F1 {_fmt(summary.get('test_macro_f1'))}")
    if summary.get("transport_cost_logit_first") is not None:
        print(f"  transport cost    logits {_fmt(summary['transport_cost_logit_first'])} -> "
              f"{_fmt(summary['transport_cost_logit_last'])}, features {_fmt(summary['transport_cost_feature_first'])} -> "
              f"{_fmt(summary['transport_cost_feature_last'])}")
    print(f"  classes           {', '.join(summary.get('classes', []))}")
    print(f"  run folder        {summary.get('run_dir')}")
    print(f"  model bundle      {summary.get('bundle') or '(not exported)'}")


def report(result) -> int:
    if result.summary.get("status") == "cancelled":
        print(f"cancelled; resume with: sembridge resume {result.run_dir}", file=sys.stderr)
        return 130
    print_summary(result.summary)
    return 0


@contextlib.contextmanager
def cancel_on_signals(token) -> Iterator[None]:
    """SIGINT / SIGTERM (Ctrl-C, torchrun stopping its workers, SLURM's scancel) cancel the run through its
    token instead of interrupting this process mid-step: every rank of a torchrun job then stops at the same
    batch. A second SIGINT interrupts at once."""
    def handler(signum, frame) -> None:
        if signum == signal.SIGINT and token.cancelled:
            raise KeyboardInterrupt
        token.cancel()

    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, action in previous.items():
            signal.signal(number, action)


def run_with_progress(job, failure: str, device: str) -> int:
    """Run a training job behind a progress bar; print its summary, or one clear error line.

    Under torchrun (WORLD_SIZE > 1) this process joins the job's process group as its rank; only rank 0
    shows progress and the summary.
    """
    from ..device import resolve_device
    from ..events import CancelToken, ignore_event
    from ..distributed import Distributed

    dist = Distributed.from_environment(os.environ, cuda=resolve_device(device).type == "cuda")
    printer = ProgressPrinter() if dist.is_main else None
    token = CancelToken()
    try:
        with cancel_on_signals(token) if dist.enabled else contextlib.nullcontext():
            try:
                result = job(printer or ignore_event, token if dist.enabled else None, dist)
            finally:
                if printer is not None:
                    printer.close()
    except Exception as error:
        rank = f"rank {dist.rank}: " if dist.enabled else ""
        print(f"{rank}error: {failure}: {error}", file=sys.stderr)
        return 1
    finally:
        dist.close()
    return report(result) if dist.is_main else (130 if result.status == "cancelled" else 0)


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError, apply_overrides, load_config
    from ..training import train

    try:
        config = load_config(args.config)
        overrides = list(args.overrides)
        if args.teacher_from:
            overrides.append(f"student.teacher_from={args.teacher_from.resolve()}")
        config = apply_overrides(config, overrides)
    except ConfigError as error:
        print(f"error: invalid configuration: {error}", file=sys.stderr)
        return 2
    return run_with_progress(lambda callback, cancel, dist: train(config, run_dir=args.out, callback=callback, cancel=cancel,
                                                                  dist=dist), "training failed", config.train.device)
