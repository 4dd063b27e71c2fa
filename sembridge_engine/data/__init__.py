"""Data layer: discovering, reading, preprocessing, caching and splitting MS and RGB imagery.

Names are imported lazily so ``sembridge inspect`` (no torch needed) starts without torch's
two-second import.
"""
from __future__ import annotations

from sembridge_engine.lazy import lazy_exports

_EXPORTS = {
    "bands": ("BAND_PRESETS", "BandPreset", "get_preset", "guess_preset"),
    "cache": ("TileTensor", "estimate_memory_bytes", "load_index", "load_tiles"),
    "discovery": ("ClassAlignment", "ImageryIndex", "TileRecord", "align_classes", "discover_ms_archive",
                  "discover_rgb_folder", "remap_records"),
    "summary": ("summarise_imagery",),
    "problems": ("ImageReadError", "Problem"),
    "readers": ("read_image", "scale_by_dtype"),
    "splits": ("stratified_split",),
    "transforms": ("ChannelStats", "compute_channel_stats", "preprocess_arrays", "resize_tiles"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
