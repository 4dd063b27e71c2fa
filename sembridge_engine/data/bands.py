"""Band presets: the order of bands inside a sensor's files and which of them are R, G, B.

The R, G, B bands of an MS tile give the pseudo-RGB the matcher trains on, so a wrong preset
silently teaches the wrong colours; presets therefore name every band explicitly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class BandPreset:
    name: str
    band_names: tuple[str, ...]
    rgb_bands: tuple[str, str, str]

    def __post_init__(self) -> None:
        if len(set(self.band_names)) != len(self.band_names):
            raise ValueError(f"band preset {self.name!r}: band names must be unique, got {list(self.band_names)}")
        if len(self.rgb_bands) != 3:
            raise ValueError(f"band preset {self.name!r}: exactly three R,G,B bands needed, got {list(self.rgb_bands)}")
        missing = [band for band in self.rgb_bands if band not in self.band_names]
        if missing:
            raise ValueError(
                f"band preset {self.name!r}: R,G,B band(s) {missing} are not among its bands {list(self.band_names)}"
            )

    @property
    def band_count(self) -> int:
        return len(self.band_names)

    @property
    def rgb_indices(self) -> tuple[int, int, int]:
        """0-based positions of R, G, B in ``band_names``."""
        r, g, b = (self.band_names.index(band) for band in self.rgb_bands)
        return r, g, b


SENTINEL2_EUROSAT13 = BandPreset(
    "sentinel2_eurosat13",
    ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A"),
    ("B04", "B03", "B02"),
)
"""Sentinel-2 L1C as the EuroSAT allBands GeoTIFFs store it: B8A is the LAST band (index 12),
not ninth as in the ESA band numbering some libraries copy."""

SENTINEL2_10 = BandPreset(
    "sentinel2_10",
    ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
    ("B04", "B03", "B02"),
)
"""The ten 10 m / 20 m Sentinel-2 bands (BigEarthNet-style, no B01/B09/B10)."""

SENTINEL2_L2A12 = BandPreset(
    "sentinel2_l2a12",
    ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"),
    ("B04", "B03", "B02"),
)
"""Sentinel-2 L2A surface reflectance with its 12 bands in ESA order (B8A after B08; no B10 cirrus,
which L2A products drop), as most L2A GeoTIFF exports stack them."""

TIANGONG2_14 = BandPreset(
    "tiangong2_14",
    tuple(f"B{number:02d}" for number in range(1, 15)),
    ("B07", "B05", "B03"),
)
"""Tiangong-2 wide-band imaging spectrometer, 14 VNIR bands (NaSC-TG2 archives).

The names are POSITIONAL (B01 = first band in the file ... B14 = last): the files carry no band
names. The preset assumes the bands are stored in ascending wavelength from blue (~400 nm) to
near infrared (~1000 nm) and takes R, G, B = B07, B05, B03 (indices 6, 4, 2), the channels
nearest 665, 565 and 490 nm under that assumption. The exact channel centres were not checked
against the instrument documentation: if your product differs, use the "custom" preset.
"""

RGB = BandPreset("rgb", ("R", "G", "B"), ("R", "G", "B"))

BAND_PRESETS: dict[str, BandPreset] = {
    preset.name: preset for preset in (SENTINEL2_EUROSAT13, SENTINEL2_L2A12, SENTINEL2_10, TIANGONG2_14, RGB)
}


def get_preset(name: str, custom_bands: Sequence[str] = (), custom_rgb: Sequence[str] = ()) -> BandPreset:
    """A named preset, or (``name == "custom"``) one built from the user's band names and R,G,B."""
    if name == "custom":
        if not custom_bands:
            raise ValueError("band preset 'custom' needs custom_bands (the band names in file order)")
        if len(custom_rgb) != 3:
            raise ValueError(
                f"band preset 'custom' needs custom_rgb: three of {list(custom_bands)} for R, G, B; got {list(custom_rgb)}"
            )
        return BandPreset("custom", tuple(str(band) for band in custom_bands), tuple(str(b) for b in custom_rgb))
    try:
        return BAND_PRESETS[name]
    except KeyError:
        choices = ", ".join([*BAND_PRESETS, "custom"])
        raise ValueError(f"unknown band preset {name!r}; choose one of: {choices}") from None


def guess_preset(band_count: int) -> BandPreset | None:
    """The preset a file with ``band_count`` bands most likely uses (13 -> EuroSAT order), or None."""
    for preset in BAND_PRESETS.values():
        if preset.band_count == band_count:
            return preset
    return None


def positional_band_names(band_count: int) -> tuple[str, ...]:
    """Names for bands of an unknown sensor: the preset's when the count matches, else band_1..band_n."""
    preset = guess_preset(band_count)
    if preset is not None:
        return preset.band_names
    return tuple(f"band_{number}" for number in range(1, band_count + 1))
