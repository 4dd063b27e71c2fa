"""The Label map panel's map: the scene before and after labelling, zoom and pan, the class map
over it with adjustable opacity, the class and confidence under the cursor, and an area of interest
drawn as a rectangle.

Scene coordinates are scene pixels (x = column, y = row, y down). The whole scene is shown from one
reduced read (OVERVIEW_SIDE pixels a side at most); when the view zooms in past that resolution the
visible part is read again at screen resolution, in a worker, so a 10 000 x 10 000 px scene is never
read whole. Reads go through the engine's labelling.display.
"""
from __future__ import annotations


import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QSlider, QVBoxLayout, QWidget

from sembridge_engine.colours import hex_to_rgb
from sembridge_engine.labelling.display import UNLABELLED
from app.workers import EngineWorker, plain_worker

OVERVIEW_SIDE = 1024
DETAIL_MAX_SIDE = 2048
DETAIL_DELAY_MS = 150


def read_views(scene: str, bands: list[int], window, max_side: int, stretch, labels: tuple[str, str] | None):
    """Scene (and labelled map) pixels of ``window`` for display (worker thread)."""
    from sembridge_engine.labelling.display import read_labels_view, read_scene_view, scene_stretch

    stretch = scene_stretch(scene, bands) if stretch is None else stretch
    scene_view = read_scene_view(scene, bands, window, max_side, stretch)
    labels_view = read_labels_view(labels[0], labels[1], scene, window, max_side) if labels else None
    return scene_view, labels_view, stretch


class AreaViewBox(pg.ViewBox):
    """A view box that, in drawing mode, turns a left-button drag into a rectangle instead of a pan."""

    rectangleDrawn = Signal(QRectF)

    def __init__(self) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self.drawing = False
        self.rubber_band = pg.RectROI((0, 0), (1, 1), pen=pg.mkPen("#ffcc00", width=2), movable=False)
        self.rubber_band.hide()
        self.addItem(self.rubber_band, ignoreBounds=True)

    def mouseDragEvent(self, event, axis=None) -> None:
        if not self.drawing or event.button() != Qt.MouseButton.LeftButton:
            super().mouseDragEvent(event, axis)
            return
        event.accept()
        start, now = self.mapSceneToView(event.buttonDownScenePos()), self.mapSceneToView(event.scenePos())
        rect = QRectF(start, now).normalized()
        self.rubber_band.setPos((rect.x(), rect.y()))
        self.rubber_band.setSize((rect.width(), rect.height()))
        self.rubber_band.show()
        if event.isFinish():
            self.rubber_band.hide()
            self.drawing = False
            self.rectangleDrawn.emit(rect)


class MapView(QWidget):
    """``show_scene`` then, after labelling, ``show_labels``; ``area()`` is the drawn area of interest."""

    sceneShown = Signal()
    labelsShown = Signal()
    detailShown = Signal()
    areaChanged = Signal(object)   # PixelWindow or None
    hovered = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.scene_path = ""
        self.scene_size = (0, 0)
        self.bands: list[int] = []
        self.labels: tuple[str, str] | None = None
        self.palette = np.zeros((1, 4), dtype=np.uint8)
        self.class_names: list[str] = []
        self.stretch = None
        self._generation = 0
        self._workers: list[EngineWorker] = []
        # (window, classes, confidence) of the overview and of the zoomed-in detail, for hover look-ups
        self._label_layers: dict[str, tuple] = {}
        self._area = None

        self.viewbox = AreaViewBox()
        self.view = pg.GraphicsView()
        self.view.setCentralItem(self.viewbox)
        self.view.setBackground("#f4f4f4")
        self.view.setMinimumSize(320, 240)
        self.scene_image, self.detail_image = pg.ImageItem(axisOrder="row-major"), pg.ImageItem(axisOrder="row-major")
        self.class_image, self.class_detail = pg.ImageItem(axisOrder="row-major"), pg.ImageItem(axisOrder="row-major")
        for depth, item in enumerate((self.scene_image, self.detail_image, self.class_image, self.class_detail)):
            item.setZValue(depth)
            self.viewbox.addItem(item)
        self.area_box = pg.RectROI((0, 0), (1, 1), pen=pg.mkPen("#ff8800", width=2))
        self.area_box.setZValue(10)
        self.area_box.hide()
        self.area_box.sigRegionChangeFinished.connect(self._area_edited)
        self.viewbox.addItem(self.area_box, ignoreBounds=True)
        self.viewbox.rectangleDrawn.connect(self._area_drawn)
        self.viewbox.sigRangeChanged.connect(lambda *_args: self._detail_timer.start())
        self.view.scene().sigMouseMoved.connect(self._mouse_moved)

        self.placeholder = QLabel("Add a scene to see it here; after labelling, its class map lies over it.")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(60)
        self.opacity.setToolTip("0: the scene alone (before); 100: the class map alone (after)")
        self.opacity.valueChanged.connect(self._opacity_changed)
        self.draw_button = QPushButton("Draw area…")
        self.draw_button.setCheckable(True)
        self.draw_button.setToolTip("Drag a rectangle on the map: only that part of the scene is labelled")
        self.draw_button.toggled.connect(self._drawing_toggled)
        self.clear_button = QPushButton("Whole scene")
        self.clear_button.setToolTip("Forget the area of interest and label the whole scene")
        self.clear_button.clicked.connect(lambda: self.set_area(None))
        self.fit_button = QPushButton("Fit")
        self.fit_button.setToolTip("Show the whole scene")
        self.fit_button.clicked.connect(self.fit)
        self.legend = QListWidget()
        self.legend.setMaximumHeight(110)
        self.legend.setToolTip("Share of the labelled pixels per class")
        self.hover_label = QLabel(" ")
        self.hover_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        tools = QHBoxLayout()
        tools.addWidget(QLabel("Class map opacity:"))
        tools.addWidget(self.opacity, 1)
        tools.addWidget(self.fit_button)
        tools.addWidget(self.draw_button)
        tools.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.placeholder)
        layout.addWidget(self.view, 1)
        layout.addLayout(tools)
        layout.addWidget(self.hover_label)
        layout.addWidget(self.legend)
        self.view.hide()
        self._detail_timer = QTimer(self)
        self._detail_timer.setSingleShot(True)
        self._detail_timer.setInterval(DETAIL_DELAY_MS)
        self._detail_timer.timeout.connect(self._load_detail)
        self._opacity_changed(self.opacity.value())

    # -- content --------------------------------------------------------------------------------
    def show_scene(self, scene_path: str, bands: list[int], size: tuple[int, int]) -> None:
        """Show a scene (its model bands as R, G, B); the class map and detail of another are dropped."""
        from sembridge_engine.labelling.display import display_bands

        shown = display_bands(0, bands) if bands else [1, 2, 3]
        if scene_path == self.scene_path and shown == self.bands:
            return
        self.scene_path, self.bands, self.scene_size, self.stretch = scene_path, shown, size, None
        self.clear_labels()
        for item in (self.scene_image, self.detail_image):
            item.clear()
        self.set_area(None)
        self.placeholder.hide()
        self.view.show()
        self.viewbox.setRange(QRectF(0, 0, *size), padding=0.02)
        self._read(None, OVERVIEW_SIDE, "overview")

    def show_labels(self, classes_raster: str, confidence_raster: str, class_names: list[str], colours: list[str],
                    shares: dict[str, float]) -> None:
        """Lay the labelled map over the scene and list each class's share of the labelled pixels."""
        self.labels = (classes_raster, confidence_raster)
        self.class_names = list(class_names)
        # One row per class plus a transparent last row, which UNLABELLED (-1) indexes.
        self.palette = np.zeros((len(colours) + 1, 4), dtype=np.uint8)
        for index, colour in enumerate(colours):
            self.palette[index] = (*hex_to_rgb(colour), 255)
        self.legend.clear()
        by_name = dict(zip(class_names, colours))
        for name, share in sorted(shares.items(), key=lambda item: -item[1]):
            item = QListWidgetItem(f"{name}: {share:.1%}")
            swatch = QPixmap(14, 14)
            swatch.fill(QColor(by_name.get(name, "#888888")))
            item.setIcon(swatch)
            self.legend.addItem(item)
        self._read(None, OVERVIEW_SIDE, "overview")

    def clear_labels(self) -> None:
        self.labels = None
        self.legend.clear()
        self._label_layers.clear()
        for item in (self.class_image, self.class_detail):
            item.clear()

    def fit(self) -> None:
        if self.scene_size[0]:
            self.viewbox.setRange(QRectF(0, 0, *self.scene_size), padding=0.02)

    # -- reading ----------------------------------------------------------------------------------
    def _read(self, window, max_side: int, layer: str) -> None:
        self._generation += 1
        generation = self._generation if layer == "detail" else None
        worker = plain_worker(read_views, self.scene_path, self.bands, window, max_side, self.stretch, self.labels)
        worker.succeeded.connect(lambda result: self._shown(layer, generation, *result))
        worker.finished.connect(lambda: (self._workers.remove(worker), worker.deleteLater()))
        self._workers.append(worker)
        worker.start()

    def _shown(self, layer: str, generation: int | None, scene_view, labels_view, stretch) -> None:
        if generation is not None and generation != self._generation:
            return  # the view moved on since this detail was asked for
        self.stretch = stretch
        window = scene_view.window
        rect = QRectF(window.col, window.row, window.width, window.height)
        image, classes = (self.scene_image, self.class_image) if layer == "overview" else (self.detail_image, self.class_detail)
        image.setImage(scene_view.rgb, levels=(0, 255))
        image.setRect(rect)
        if labels_view is not None:
            classes.setImage(self.palette[labels_view.classes], levels=(0, 255))
            classes.setRect(rect)
            self._label_layers[layer] = (window, labels_view.classes, labels_view.confidence)
        if layer == "overview":
            self.detail_image.clear()
            self.class_detail.clear()
            self._label_layers.pop("detail", None)
            (self.labelsShown if labels_view is not None else self.sceneShown).emit()
            self._detail_timer.start()
        else:
            self.detailShown.emit()

    def visible_window(self):
        """The part of the scene in view, in scene pixels (clipped to the scene)."""
        from sembridge_engine.labelling.options import PixelWindow

        (x0, x1), (y0, y1) = self.viewbox.viewRange()
        width, height = self.scene_size
        col, row = max(0, int(x0)), max(0, int(y0))
        right, bottom = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
        return PixelWindow(col, row, max(1, right - col), max(1, bottom - row))

    def _load_detail(self) -> None:
        """Zoomed in past the overview's resolution: read what is in view at screen resolution."""
        if not self.scene_path or not self.scene_size[0]:
            return
        window = self.visible_window()
        overview_scale = max(self.scene_size) / OVERVIEW_SIDE  # scene pixels per overview pixel
        screen = max(1, max(self.view.width(), self.view.height()))
        needed = max(window.width, window.height) / screen      # scene pixels per screen pixel
        if overview_scale <= 1 or needed >= overview_scale:
            return
        self._read(window, min(DETAIL_MAX_SIDE, screen), "detail")

    # -- interaction ------------------------------------------------------------------------------
    def _opacity_changed(self, value: int) -> None:
        for item in (self.class_image, self.class_detail):
            item.setOpacity(value / 100)

    def _drawing_toggled(self, on: bool) -> None:
        self.viewbox.drawing = on
        self.draw_button.setText("Drag on the map…" if on else "Draw area…")

    def _area_drawn(self, rect: QRectF) -> None:
        self.draw_button.setChecked(False)
        self.set_area(self._window_of(rect))

    def _area_edited(self) -> None:
        position, size = self.area_box.pos(), self.area_box.size()
        self._set_area_window(self._window_of(QRectF(position.x(), position.y(), size.x(), size.y())))

    def _window_of(self, rect: QRectF):
        from sembridge_engine.labelling.options import PixelWindow

        width, height = self.scene_size
        col, row = int(np.clip(round(rect.left()), 0, width - 1)), int(np.clip(round(rect.top()), 0, height - 1))
        right, bottom = int(np.clip(round(rect.right()), col + 1, width)), int(np.clip(round(rect.bottom()), row + 1, height))
        return PixelWindow(col, row, right - col, bottom - row)

    def set_area(self, window) -> None:
        """Show ``window`` (scene pixels) as the area of interest, or none."""
        if window is None:
            self.area_box.hide()
        else:
            self.area_box.blockSignals(True)
            self.area_box.setPos((window.col, window.row))
            self.area_box.setSize((window.width, window.height))
            self.area_box.blockSignals(False)
            self.area_box.show()
        self._set_area_window(window)

    def _set_area_window(self, window) -> None:
        if window != self._area:
            self._area = window
            self.areaChanged.emit(window)

    def area(self):
        return self._area

    def _mouse_moved(self, position: QPointF) -> None:
        if not self.scene_size[0] or not self.viewbox.sceneBoundingRect().contains(position):
            return
        point = self.viewbox.mapSceneToView(position)
        col, row = int(np.floor(point.x())), int(np.floor(point.y()))
        if not (0 <= col < self.scene_size[0] and 0 <= row < self.scene_size[1]):
            self.hover_label.setText(" ")
            return
        self.hover_label.setText(self.describe_pixel(col, row))
        self.hovered.emit(self.hover_label.text())

    def describe_pixel(self, col: int, row: int) -> str:
        """"column, row" and, on a labelled map, the class and confidence there (finest layer first)."""
        text = f"column {col}, row {row}"
        for layer in ("detail", "overview"):
            found = self._label_layers.get(layer)
            if found is None:
                continue
            window, classes, confidence = found
            if not (window.col <= col < window.col + window.width and window.row <= row < window.row + window.height):
                continue
            y = int((row - window.row) * classes.shape[0] / window.height)
            x = int((col - window.col) * classes.shape[1] / window.width)
            index = int(classes[y, x])
            if index == UNLABELLED or index >= len(self.class_names):
                return text + " · not labelled"
            return text + f" · {self.class_names[index]} ({confidence[y, x]:.0%} confident)"
        return text
