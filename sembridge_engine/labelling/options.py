"""The options of one labelling job, typed and checked in one place.

The CLI builds :class:`LabelOptions` from its arguments and the Label map panel from its widgets;
``plan_scene``/``label_scene`` take them as they are. Every default (the stride of half a window,
the batch size, the outputs written) is decided here and nowhere else.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

DEFAULT_BATCH = 32
MAX_WINDOW = 4096   # scene pixels on a window's side: one float32 RGB window is then 192 MiB
RADIOMETRY_MODES = ("auto", "none", "dtype")
DEFAULT_BLOCK = 512


class SceneError(ValueError):
    """A scene or option that cannot be labelled; the message names the file and what to change."""


@dataclass(frozen=True)
class PixelWindow:
    """Part of a scene in pixels: column and row of its top-left corner, width and height."""

    col: int
    row: int
    width: int
    height: int


@dataclass(frozen=True)
class LabelOptions:
    """What to label and how; ``None`` means "decide from the model and the scene".

    ``tile``/``stride`` are scene pixels; by default the window covers the model's training footprint
    (``footprint`` metres overrides the bundle's) and the stride is half the window. ``force_scale``
    labels scenes far coarser or finer than the training data anyway. ``radiometry`` (auto, none,
    dtype) maps the scene's values onto the training images' (labelling.radiometry). ``bands`` are
    1-based scene bands in the model's band order; ``band_preset`` names the bands of a product
    whose file carries no band descriptions (data.bands). ``window`` (pixels) or ``extent`` (xmin, ymin,
    xmax, ymax in the scene's CRS) restrict labelling to part of the scene. ``rows`` (start, stop) labels
    one row strip of that part (batch labelling shares a scene among processes this way): windows, scale
    and radiometry stay the whole part's, so the strip's pixels are those of the whole run.
    """

    tile: int | None = None
    stride: int | None = None
    batch: int = DEFAULT_BATCH
    bands: tuple[int, ...] | None = None
    band_preset: str | None = None
    nodata: float | None = None
    device: str = "auto"
    probabilities: bool = False
    polygons: bool = True
    preview: bool = True
    window: PixelWindow | None = None
    extent: tuple[float, float, float, float] | None = None
    footprint: float | None = None
    force_scale: bool = False
    radiometry: str = "auto"
    block: int = DEFAULT_BLOCK
    rows: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.bands is not None:
            object.__setattr__(self, "bands", tuple(int(band) for band in self.bands))
        for name in ("tile", "stride"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise SceneError(f"{name} must be a positive number of scene pixels, got {value} (leave it out for the default)")
            if value is not None and value > MAX_WINDOW:
                raise SceneError(f"{name} {value} is beyond the limit of {MAX_WINDOW} scene pixels (one window would take "
                                 f"{3 * value * value * 4 / 2**30:.1f} GiB); label a coarser copy of the scene instead")
        if self.batch < 1:
            raise SceneError(f"batch must be >= 1, got {self.batch}")
        if self.block < 16:
            raise SceneError(f"block must be >= 16 pixels, got {self.block}")
        if self.footprint is not None and not (math.isfinite(self.footprint) and self.footprint > 0):
            raise SceneError(f"footprint must be a positive number of metres, got {self.footprint}")
        if self.radiometry not in RADIOMETRY_MODES:
            raise SceneError(f"radiometry must be one of {', '.join(RADIOMETRY_MODES)}, got {self.radiometry!r}")
        if self.nodata is not None and math.isinf(self.nodata):
            raise SceneError(f"nodata must be a finite number or nan, got {self.nodata}")
        if self.window is not None and self.extent is not None:
            raise SceneError("give either a pixel window or an extent, not both")
        if self.window is not None and (self.window.width < 1 or self.window.height < 1 or self.window.col < 0 or self.window.row < 0):
            raise SceneError(f"window {self.window} must start inside the scene and be at least 1 x 1 pixels")
        if self.rows is not None:
            object.__setattr__(self, "rows", tuple(int(row) for row in self.rows))
            if len(self.rows) != 2 or not 0 <= self.rows[0] < self.rows[1]:
                raise SceneError(f"rows must be (start, stop) with 0 <= start < stop, got {self.rows}")
        if self.extent is not None:
            xmin, ymin, xmax, ymax = self.extent
            if not all(map(math.isfinite, self.extent)) or xmin >= xmax or ymin >= ymax:
                raise SceneError(f"extent must be finite xmin, ymin, xmax, ymax with xmin < xmax and ymin < ymax, got {self.extent}")

    def with_changes(self, **changes) -> "LabelOptions":
        return dataclasses.replace(self, **changes)

    @staticmethod
    def stride_for(tile: int) -> int:
        """The default step: half a window, so every pixel is seen by up to four windows."""
        return max(1, tile // 2)


def parse_numbers(text: str, what: str, count: int | None = None, kind=int) -> Sequence:
    """``"3,2,1"`` -> numbers, with a message naming the option when the text is not a list of numbers."""
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"{what} takes numbers separated by commas, got {text!r}") from None
    if count is not None and len(values) != count:
        raise ValueError(f"{what} takes {count} numbers separated by commas, got {text!r}")
    return values
