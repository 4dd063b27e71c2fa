"""One progress bar per training stage, and the time left in the running stage."""
from __future__ import annotations

import time
from typing import Callable

from PySide6.QtWidgets import QGridLayout, QProgressBar, QWidget

from app.widgets import human_seconds, steady_label
from sembridge_engine.training.rundir import STAGES


class StageProgress(QWidget):
    """Bars for teacher, matcher and student, and an ETA for the running stage.

    The ETA extrapolates from the epochs run since this session started the stage: a resumed
    stage that starts at epoch 16 of 40 has 15 epochs behind it that took no time in this session,
    and counting them made "about 6 s left" out of 25 epochs to go.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.clock = clock
        self.bars: dict[str, QProgressBar] = {}
        layout = QGridLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for column, stage in enumerate(STAGES):
            bar = QProgressBar()
            bar.setRange(0, 1000)
            bar.setMinimumWidth(120)
            self.bars[stage] = bar
            layout.addWidget(bar, 0, column)
        self.eta_label = steady_label(lines=1)
        layout.addWidget(self.eta_label, 1, 0, 1, len(STAGES))
        self.reset()

    def reset(self) -> None:
        self.stage = ""
        self.stage_epochs = 0
        self.stage_started = 0.0
        self.first_epoch: int | None = None
        for stage, bar in self.bars.items():
            bar.setValue(0)
            bar.setFormat(f"{stage.capitalize()}: waiting")
        self.eta_label.setText("No run yet.")

    def start_stage(self, stage: str, epochs: int) -> None:
        """Stages run in order, so an earlier stage still waiting was taken from a cache or run."""
        if stage in STAGES:
            for earlier in STAGES[:STAGES.index(stage)]:
                if self.bars[earlier].value() == 0:
                    self.skip_stage(earlier, "reused")
        self.stage, self.stage_epochs, self.stage_started = stage, max(epochs, 1), self.clock()
        self.first_epoch = None
        bar = self.bars.get(stage)
        if bar is not None:
            bar.setValue(0)
            bar.setFormat(f"{stage.capitalize()}: starting")
        self.eta_label.setText(f"{stage.capitalize()} started ({epochs} epochs).")

    def finish_stage(self, stage: str) -> None:
        bar = self.bars.get(stage)
        if bar is not None:
            bar.setValue(1000)
            bar.setFormat(f"{stage.capitalize()}: done")

    def skip_stage(self, stage: str, reason: str) -> None:
        bar = self.bars[stage]
        bar.setValue(1000)
        bar.setFormat(f"{stage.capitalize()}: {reason}")

    def show_done_epochs(self, stage: str, done: int, epochs: int) -> None:
        """A stage partly run before (a resumed run): its bar at ``done`` of ``epochs``."""
        bar = self.bars.get(stage)
        if bar is not None and epochs > 0:
            bar.setValue(int(1000 * min(done / epochs, 1.0)))
            bar.setFormat(f"{stage.capitalize()}: epoch {done}/{epochs}")

    def progress(self, stage: str, epoch: int, done: int, total: int) -> None:
        """Batch ``done`` of ``total`` in epoch ``epoch`` (counted from 1) of ``stage``."""
        bar = self.bars.get(stage)
        if bar is None or total <= 0:
            return
        if stage != self.stage:
            self.start_stage(stage, self.stage_epochs)
        epoch = max(epoch, 1)
        if self.first_epoch is None:
            self.first_epoch = epoch
        fraction = min(1.0, (epoch - 1 + done / total) / self.stage_epochs)
        bar.setValue(int(fraction * 1000))
        bar.setFormat(f"{stage.capitalize()}: epoch {epoch}/{self.stage_epochs} · {int(fraction * 100)} %")
        session_epochs = self.stage_epochs - (self.first_epoch - 1)
        session_fraction = min(1.0, (epoch - self.first_epoch + done / total) / max(session_epochs, 1))
        elapsed = self.clock() - self.stage_started
        if session_fraction > 0.01 and elapsed > 0.5:
            remaining = elapsed * (1 - session_fraction) / session_fraction
            self.eta_label.setText(f"{stage.capitalize()}: about {human_seconds(remaining)} left in this stage "
                                   f"({human_seconds(elapsed)} so far).")
