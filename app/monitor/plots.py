"""The monitor's plots: metric curves with matching markers, the confusion matrix, per-class F1.

pyqtgraph draws them; antialiasing and grid lines are off because they made each repaint of the
live plots 4-7x dearer (tests/benchmarks/bench_gui_stall.py) while the UI thread shares the machine
with training."""
from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22")
SYMBOL_POINTS = 3

pg.setConfigOptions(antialias=False, background="w", foreground="#333333")


class EpochAxis(pg.AxisItem):
    """Epochs are whole numbers: ticks only at integers, never closer than one epoch."""

    def tickValues(self, minVal, maxVal, size):
        levels = [(spacing, [value for value in values if float(value).is_integer()])
                  for spacing, values in super().tickValues(minVal, maxVal, size) if spacing >= 1]
        if not levels:
            levels = [(1.0, [float(value) for value in range(math.ceil(minVal), math.floor(maxVal) + 1)])]
        return levels


class DecadeAxis(pg.AxisItem):
    """A log-scale axis labelled at powers of ten only (the labels of the minor ticks in between
    overlapped); minor ticks are still drawn."""

    def tickStrings(self, values, scale, spacing):
        decades = [abs(value - round(value)) < 1e-6 for value in values]
        if not self.logMode or not any(decades):  # within one decade the default labels do not crowd
            return super().tickStrings(values, scale, spacing)
        return [f"{10 ** value:g}" if decade else "" for value, decade in zip(values, decades)]


class MetricPlot(QWidget):
    """Curves of a fixed set of metrics against epochs, vertical markers, and a legend line below.

    Every curve is made once, here: making curves and pyqtgraph legend entries while a run trains
    cost the UI thread ~40 ms at each stage start (three plots, twelve curves), the biggest share
    of the freezes left once training ran in its own process. Clearing only empties the curves;
    the legend is a rich-text label listing the metrics that have data, cheap to rewrite.
    ``log`` puts the values on a log scale."""

    def __init__(self, title: str, y_label: str, metrics: tuple[str, ...], log: bool = False,
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.base_title = title
        self.view = pg.PlotWidget(axisItems={"bottom": EpochAxis("bottom"),
                                             "left": DecadeAxis("left") if log else pg.AxisItem("left")})
        self.view.setTitle(title)
        self.view.setLabel("bottom", "epoch")
        self.view.setLabel("left", y_label)
        self.view.getAxis("left").enableAutoSIPrefix(False)
        if log:
            self.view.setLogMode(y=True)
        self.view.setMinimumHeight(140)
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        # Two lines, always: a legend growing by a line would resize the plot, and a resize makes
        # pyqtgraph lay out and redraw the whole plot while the run goes on.
        self.legend.setFixedHeight(2 * self.legend.fontMetrics().lineSpacing() + 2)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.legend)
        self.colours = {name: PALETTE[number % len(PALETTE)] for number, name in enumerate(metrics)}
        self.curves = {name: self.view.plot([], [], pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=6,
                                            symbolBrush=colour, symbolPen=None)
                       for name, colour in self.colours.items()}
        self.series: dict[str, tuple[list[float], list[float]]] = {}
        self.markers: list[pg.InfiniteLine] = []
        self._spare_markers: list[pg.InfiniteLine] = []

    def setTitle(self, text: str) -> None:
        self.view.setTitle(text)

    def add_point(self, name: str, x: float, y: float) -> None:
        xs, ys = self.series.setdefault(name, ([], []))
        xs.append(x)
        ys.append(y)
        self._show(name)

    def set_series(self, name: str, xs: list[float], ys: list[float]) -> None:
        self.series[name] = (list(xs), list(ys))
        self._show(name)

    def _show(self, name: str) -> None:
        curve = self.curves.get(name)
        if curve is None:
            return
        xs, ys = self.series[name]
        curve.setSymbol(None if len(xs) > SYMBOL_POINTS else "o")  # dots show 1-2 points; beyond, they cost paint time
        curve.setData(xs, ys)
        if len(xs) == 1:
            self._update_legend()

    def _update_legend(self) -> None:
        self.legend.setText("&nbsp;&nbsp; ".join(
            f'<span style="color:{colour}">■</span>&nbsp;{name}'
            for name, colour in self.colours.items() if self.series.get(name, ([], []))[0]))

    def add_marker(self, x: float, text: str) -> None:
        """A dashed vertical line at ``x`` labelled ``text`` (lines are kept and reused)."""
        if self._spare_markers:
            line = self._spare_markers.pop()
            line.setPos(x)
            line.label.setFormat(text)
            line.show()
        else:
            line = pg.InfiniteLine(pos=x, angle=90, pen=pg.mkPen("#888888", style=Qt.PenStyle.DashLine),
                                   label=text, labelOpts={"position": 0.92, "color": "#555555"})
            self.view.addItem(line)
        self.markers.append(line)

    def point_count(self) -> int:
        return sum(len(xs) for xs, _ in self.series.values())

    def clear_all(self) -> None:
        for name in self.series:
            if name in self.curves:
                self.curves[name].setData([], [])
        for line in self.markers:
            line.hide()
        self._spare_markers.extend(self.markers)
        self.markers.clear()
        self.series.clear()
        self.legend.clear()


class CellCounts(pg.GraphicsObject):
    """The counts of a matrix written in its unit cells, all in one item. One pg.TextItem per cell
    (a rich-text document each) cost 1-2 ms of UI thread to create and add: a freeze that grew
    with classes² when a run's results were shown."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[float, float, str, QColor]] = []
        self.grid = (0, 0)  # rows, columns (not "shape": that is a QGraphicsItem method)

    def set_counts(self, matrix: np.ndarray | None, dark: np.ndarray | None = None) -> None:
        """``dark[row, column]`` True writes that count in black (on a light cell), else white."""
        self.prepareGeometryChange()
        black, white = QColor("#000000"), QColor("#ffffff")
        self.cells = [] if matrix is None else [
            (column + 0.5, row + 0.5, f"{int(count)}", black if dark is not None and dark[row, column] else white)
            for (row, column), count in np.ndenumerate(matrix)]
        self.grid = (0, 0) if matrix is None else matrix.shape
        self.update()

    def boundingRect(self) -> QRectF:
        return QRectF(0, 0, self.grid[1], self.grid[0])

    def paint(self, painter, *_args) -> None:
        to_device = painter.transform()
        painter.resetTransform()  # text at its pixel size, upright whatever the view's scale or flip
        for x, y, text, colour in self.cells:
            centre = to_device.map(QPointF(x, y))
            painter.setPen(colour)
            painter.drawText(QRectF(centre.x() - 60, centre.y() - 20, 120, 40), Qt.AlignmentFlag.AlignCenter, text)


class ConfusionView(pg.PlotWidget):
    """Confusion matrix heatmap (row = true class, column = predicted), counts written in cells.

    Rows carry numbered class names and columns the numbers only, so the labels fit at any width;
    the view follows resizes and is not dragged by the mouse (a dragged matrix hid columns)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.setTitle("Test confusion matrix")
        self.setLabel("left", "true class")
        self.setLabel("bottom", "predicted class (number)")
        self.setMinimumSize(240, 200)
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setLookupTable(pg.colormap.get("viridis").getLookupTable(0.0, 1.0, 256))
        self.addItem(self.image)
        self.counts = CellCounts()
        self.addItem(self.counts, ignoreBounds=True)
        self.getViewBox().invertY(True)
        self.matrix: np.ndarray | None = None

    def clear_matrix(self) -> None:
        self.image.clear()
        self.counts.set_counts(None)
        self.matrix = None
        self.getAxis("bottom").setTicks(None)
        self.getAxis("left").setTicks(None)

    def set_matrix(self, matrix: np.ndarray, class_names: list[str]) -> None:
        self.matrix = matrix
        rows = matrix.sum(axis=1, keepdims=True)
        normalised = matrix / np.maximum(rows, 1)
        self.image.setImage(normalised, levels=(0.0, 1.0))
        self.image.setRect(0, 0, matrix.shape[1], matrix.shape[0])
        names = [name if len(name) <= 16 else name[:15] + "…" for name in class_names]
        self.getAxis("bottom").setTicks([[(i + 0.5, str(i + 1)) for i in range(len(names))]])
        self.getAxis("left").setTicks([[(i + 0.5, f"{i + 1} {name}") for i, name in enumerate(names)]])
        self.counts.set_counts(matrix, normalised > 0.6)
        self.getViewBox().setRange(xRange=(0, matrix.shape[1]), yRange=(0, matrix.shape[0]), padding=0.02)
        self.enableAutoRange()


class F1Bars(pg.PlotWidget):
    """Per-class F1 as horizontal bars: class names on the vertical axis never overlap."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent=parent)
        self.setTitle("Test F1 per class")
        self.setMinimumSize(240, 200)
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        self.getViewBox().invertY(True)
        self.setXRange(0, 1)
        self.bars: pg.BarGraphItem | None = None
        self.values: list[float] = []

    def clear_values(self) -> None:
        self.values = []
        if self.bars is not None:
            self.removeItem(self.bars)
            self.bars = None
        self.getAxis("left").setTicks(None)

    def set_values(self, values: list[float], class_names: list[str]) -> None:
        self.values = values
        if self.bars is not None:
            self.removeItem(self.bars)
        self.bars = pg.BarGraphItem(x0=0, y=np.arange(len(values)), width=values, height=0.7, brush="#4c78a8")
        self.addItem(self.bars)
        names = [name if len(name) <= 16 else name[:15] + "…" for name in class_names]
        self.getAxis("left").setTicks([list(enumerate(names))])
        self.setXRange(0, 1)
        self.setYRange(-0.6, len(values) - 0.4)
