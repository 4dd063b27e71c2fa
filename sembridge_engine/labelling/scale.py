"""Which window of a scene (or image) shows the model the ground one training image showed it.

A bundle records its training footprint: metres across one training image. A window of
``footprint / scene GSD`` scene pixels covers the same ground, and is resized to the model's tile
size exactly as training resized its images. The same choice serves scene labelling and the
classification of georeferenced tiles.

Honest limits: when a window would be under a quarter of the model's tile size (the model would see
a few upsampled pixels: the scene is far coarser than the training data) or would not fit in the
scene (the scene is less than one training image), the job stops with a message naming both
resolutions, unless forced; what was forced is written into the summary as ``scale_warning``.
"""
from __future__ import annotations

from dataclasses import dataclass

COARSEST_FRACTION = 0.25   # a window below this share of the model's tile size is "too coarse"
LARGEST_OVERHANG = 1.1     # a window up to 10 % larger than the scene is padded; beyond, the scene is "too small"
FORCE_FLAG = "--force-scale"


@dataclass(frozen=True)
class ScaleChoice:
    """The window size in scene pixels and why; ``blocked`` when an honest limit is crossed and not forced."""

    window: int
    model_tile: int
    scene_gsd: float | None        # metres per scene pixel (None: not georeferenced)
    footprint_m: float | None      # metres across one training image (None: unknown)
    training_gsd: float | None     # metres per pixel of the training images
    basis: str                     # footprint | tile option | model tile
    warning: str | None = None
    blocked: bool = False

    @property
    def factor(self) -> float:
        """Scene pixels per model input pixel (above 1: windows are shrunk to the model's tile)."""
        return self.window / self.model_tile

    @property
    def window_m(self) -> float | None:
        return None if self.scene_gsd is None else self.window * self.scene_gsd

    def describe(self) -> str:
        """One line for the pre-flight plan."""
        scene = f"scene {self.scene_gsd:.3g} m/px" if self.scene_gsd else "scene not georeferenced"
        if self.footprint_m:
            trained = f" at {self.training_gsd:.3g} m/px" if self.training_gsd else ""
            model = f"model footprint {self.footprint_m:.4g} m (trained{trained})"
        else:
            model = "model without a recorded footprint"
        ground = f" = {self.window_m:.4g} m" if self.window_m else ""
        return (f"{scene}, {model} -> window {self.window} px{ground} ({self.basis}), "
                f"scale factor {self.factor:.3g} scene px per model px")

    def to_summary(self) -> dict:
        return {"window": self.window, "model_tile": self.model_tile, "scene_gsd_m": self.scene_gsd,
                "footprint_m": self.footprint_m, "training_gsd_m": self.training_gsd, "window_m": self.window_m,
                "scale_factor": self.factor, "basis": self.basis}


def _describe_gsd(gsd: float) -> str:
    return f"{gsd:.3g} m"


def choose_window(name: str, model_tile: int, footprint_m: float | None, training_gsd: float | None,
                  scene_gsd: float | None, width: int, height: int, *, tile: int | None = None,
                  force: bool = False) -> ScaleChoice:
    """The window for a ``width`` x ``height`` px scene (``name`` is used in messages).

    ``tile`` (scene pixels) overrides everything. Without a footprint the window is the model's tile
    size, as bundles without one were always used. A scene without a GSD is assumed to have the
    training images' resolution.
    """
    common = dict(model_tile=model_tile, scene_gsd=scene_gsd, footprint_m=footprint_m, training_gsd=training_gsd)
    if tile:
        warning = None
        if footprint_m and scene_gsd and not 0.5 <= tile * scene_gsd / footprint_m <= 2:
            warning = (f"the {tile}-px window set for {name} covers {tile * scene_gsd:.4g} m of ground, the model was trained "
                       f"on images {footprint_m:.4g} m across: expect labels at the wrong scale")
        return ScaleChoice(window=int(tile), basis="tile option", warning=warning, **common)
    if not footprint_m:
        return ScaleChoice(window=model_tile, basis="model tile", warning=(
            f"the model carries no training footprint (a bundle made before footprints were recorded): windows are "
            f"its {model_tile}-px tile size in scene pixels whatever the scene's resolution; check the map's scale "
            f"or set --tile / --footprint"), **common)
    if not scene_gsd:
        if not training_gsd:
            return ScaleChoice(window=model_tile, basis="model tile", warning=(
                f"{name} is not georeferenced and the model's training resolution is unknown: windows are its "
                f"{model_tile}-px tile size; set --tile to the pixels one training image covers"), **common)
        window = max(1, round(footprint_m / training_gsd))
        return ScaleChoice(window=window, basis="footprint", warning=(
            f"{name} is not georeferenced: assumed to have the training images' {_describe_gsd(training_gsd)} "
            f"pixels (windows of {window} px)"), **common)
    exact = footprint_m / scene_gsd
    window = max(1, round(exact))
    trained = f" ({_describe_gsd(training_gsd)} per pixel)" if training_gsd else ""
    if exact < COARSEST_FRACTION * model_tile:
        warning = (f"{name} is far coarser than the training data: its pixels are {_describe_gsd(scene_gsd)}, the model "
                   f"was trained on images {footprint_m:.4g} m across{trained}, so one window would be {exact:.3g} scene "
                   f"pixels, under a quarter of the model's {model_tile}-px input: the model would see a few upsampled "
                   f"pixels. Use imagery of {_describe_gsd(footprint_m / (COARSEST_FRACTION * model_tile))} per pixel or finer, "
                   f"or {FORCE_FLAG} to label anyway")
        return ScaleChoice(window=window, basis="footprint", warning=warning, blocked=not force, **common)
    if window > LARGEST_OVERHANG * width or window > LARGEST_OVERHANG * height:
        warning = (f"{name} is smaller than one training image: the model's footprint of {footprint_m:.4g} m{trained} is "
                   f"{window} pixels at the scene's {_describe_gsd(scene_gsd)}, larger than the scene ({width} x {height} px). "
                   f"Classify it as one tile (sembridge classify), or {FORCE_FLAG} to label anyway")
        return ScaleChoice(window=min(window, max(width, height)), basis="footprint", warning=warning,
                           blocked=not force, **common)
    return ScaleChoice(window=window, basis="footprint", **common)
