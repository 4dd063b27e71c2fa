"""Class colours for maps and legends: land-cover conventions for known names, a fixed palette otherwise.

Colours are stable across runs (no randomness), so the same class keeps its colour in every map,
legend, QGIS style and preview a user produces.
"""
from __future__ import annotations

import re
from typing import Sequence

# Conventional land-cover colours for class names that appear in EuroSAT/UC Merced-like archives.
LAND_COVER_COLOURS: dict[str, str] = {
    "annualcrop": "#f2d64b",
    "permanentcrop": "#c7a13c",
    "pasture": "#b8e07a",
    "herbaceousvegetation": "#8fc45a",
    "forest": "#1f7a32",
    "river": "#2c7fb8",
    "sealake": "#08519c",
    "water": "#2c7fb8",
    "residential": "#d7301f",
    "industrial": "#8c4f9f",
    "highway": "#8a8a8a",
    "road": "#8a8a8a",
    "bareland": "#c9a27e",
    "beach": "#f4e4b0",
    "agricultural": "#f2d64b",
    "buildings": "#d7301f",
    "denseresidential": "#b30000",
    "mediumresidential": "#e34a33",
    "sparseresidential": "#fc8d59",
    "parkinglot": "#5a5a5a",
    "golfcourse": "#66c164",
    "chaparral": "#a6a35a",
    "harbor": "#3f6f99",
    "airplane": "#b0b0d8",
    "runway": "#6e6e6e",
}

# Qualitative palette (ColorBrewer Set1/Dark2/Paired picks) for class names without a convention.
QUALITATIVE_PALETTE: tuple[str, ...] = (
    "#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33", "#a65628", "#f781bf",
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6cee3", "#fb9a99",
    "#cab2d6", "#b15928", "#b2df8a", "#fdbf6f",
)


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def default_colours(class_names: Sequence[str]) -> list[str]:
    """One '#rrggbb' per class: the land-cover convention when known, else the next unused palette colour."""
    colours: list[str | None] = [LAND_COVER_COLOURS.get(_key(name)) for name in class_names]
    used = {colour for colour in colours if colour}
    spare = [colour for colour in QUALITATIVE_PALETTE if colour not in used]
    for index, colour in enumerate(colours):
        if colour is None:
            colours[index] = spare.pop(0) if spare else QUALITATIVE_PALETTE[index % len(QUALITATIVE_PALETTE)]
    return [str(colour) for colour in colours]


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    """'#rrggbb' -> (r, g, b); ValueError for anything else."""
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", colour or ""):
        raise ValueError(f"colour {colour!r} is not of the form '#rrggbb'")
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)
