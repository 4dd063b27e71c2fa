"""Runs & comparison: runs read from their folders, curves overlaid, metrics tabulated."""
from __future__ import annotations

import shutil

from app.runs import RunsPanel, latest_bundle
from sembridge_engine.training.rundir import list_runs


def test_runs_are_listed_and_compared(qtbot, settings, trained_run, tmp_path):
    output = tmp_path / "runs"
    output.mkdir()
    first = shutil.copytree(trained_run, output / "first")
    second = shutil.copytree(trained_run, output / "second")
    settings.output_dir = str(output)
    panel = RunsPanel(settings)
    qtbot.addWidget(panel)
    panel.refresh()
    assert {run.name for run in panel.runs} == {"first", "second"}
    assert all(run.status == "finished" and run.has_bundle for run in panel.runs)
    assert latest_bundle(output).name == "model.sembridge"

    panel.select_runs([first, second])
    assert len(panel.selected_runs()) == 2
    assert panel.metric_combo.currentText() == "val_oa"
    curves = panel.compare_plot.getPlotItem().listDataItems()
    assert len(curves) == 2 and all(len(curve.getData()[0]) >= 1 for curve in curves)
    assert panel.compare_table.columnCount() == 2
    fields = [panel.compare_table.verticalHeaderItem(i).text() for i in range(panel.compare_table.rowCount())]
    assert "test_oa" in fields and "test_macro_f1" in fields
    oa_row = fields.index("test_oa")
    assert all(0.0 <= float(panel.compare_table.item(oa_row, column).text()) <= 1.0 for column in range(2))
    assert not panel.resume_button.isEnabled()

    panel.select_runs([first])
    assert panel.bundle_button.isEnabled()
    with qtbot.waitSignal(panel.useBundleRequested) as blocker:
        panel.bundle_button.click()
    assert blocker.args == [str(first / "model.sembridge")]
    assert len(list_runs(output)) == 2
