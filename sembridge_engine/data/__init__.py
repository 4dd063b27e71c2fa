"""Data layer: discovering, reading, preprocessing, caching and splitting MS and RGB imagery.

Names are imported lazily so ``sembridge inspect`` (no torch needed) starts without torch's
two-second import.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "bands": ("BAND_PRESETS", "BandPreset", "get_preset", "guess_preset"),
    "cache": ("TileTensor", "estimate_memory_bytes", "load_index", "load_tiles"),
    "discovery": ("ClassAlignment", "ImageryIndex", "TileRecord", "align_classes", "discover_ms_archive",
                  "discover_rgb_folder", "remap_records", "summarise_imagery"),
    "problems": ("ImageReadError", "Problem"),
    "readers": ("read_image", "scale_by_dtype"),
    "splits": ("stratified_split",),
    "transforms": ("ChannelStats", "compute_channel_stats", "preprocess_arrays", "resize_tiles"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
