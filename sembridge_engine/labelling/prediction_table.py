"""The one CSV layout of tile predictions, written by ``sembridge classify --csv`` and the Classify panel.

One row per file: ``path, predicted_class, confidence`` (the names a run's ``predictions.csv``
uses), then ``class_2, probability_2, ...`` for the further ranks, then ``error`` (empty when the
file was classified) and ``warning`` (scale or radiometry far from the training data's). A table a
spreadsheet or GIS joins on ``path`` without parsing cells.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from sembridge_engine.atomic import write_csv_atomic


def prediction_header(ranks: int) -> list[str]:
    further = [name for rank in range(2, ranks + 1) for name in (f"class_{rank}", f"probability_{rank}")]
    return ["path", "predicted_class", "confidence", *further, "error", "warning"]


def prediction_rows(results: Iterable[Any], ranks: int) -> list[list[str]]:
    """Rows for objects with ``path``, ``top`` ([(class, probability)] best first, or None) and ``error``."""
    rows = []
    for result in results:
        cells = [str(result.path)]
        top = list(result.top or [])[:ranks]
        for name, probability in top:
            cells += [name, f"{probability:.6f}"]
        cells += [""] * (2 * (ranks - len(top)))
        rows.append([*cells, result.error or "", getattr(result, "warning", None) or ""])
    return rows


def check_table_target(path) -> Path:
    """The CSV path, after checking it can be written, so a long classification never ends in a write error."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{target}: is a folder; give a file name for the CSV, e.g. {target / 'predictions.csv'}")
    if not target.parent.is_dir():
        raise ValueError(f"{target}: the folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ValueError(f"{target}: not writable (permission denied)")
    return target


def write_predictions_csv(path, results: Sequence[Any]) -> Path:
    """Write ``results`` as the prediction table, atomically; as many ranks as the longest top list."""
    target = check_table_target(path)
    ranks = max([len(result.top) for result in results if result.top] or [1])
    write_csv_atomic(target, prediction_header(ranks), prediction_rows(results, ranks))
    return target
