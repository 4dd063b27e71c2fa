"""GIS outputs of scene labelling: GeoTIFF profiles, QGIS style, GeoPackage polygons, PNG preview.

Every writer targets a temporary path the caller later moves into place (``os.replace``), so a
cancelled or failed job never leaves a half-written file under a final name. Readers of large
rasters go block by block so memory does not grow with the scene.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Sequence

import numpy as np

from sembridge_engine.colours import hex_to_rgb

MAX_CLASSES = 65535   # class ids 0..65534 in uint16, 65535 for nodata
PREVIEW_LEGEND_ROWS = 40
CONFIDENCE_NODATA = -1.0
GTIFF_BLOCK = 256
PREVIEW_MAX_SIZE = 1024
PREVIEW_ALPHA = 0.55


def raster_profile(crs, transform, width: int, height: int, dtype: str, count: int, nodata: float) -> dict:
    """Tiled 256x256 DEFLATE GeoTIFF with the scene's CRS and transform copied unchanged; sparse (blocks
    never written are left out of the file and read as nodata), so nodata areas cost nothing."""
    return {
        "driver": "GTiff", "dtype": dtype, "count": count, "nodata": nodata,
        "width": width, "height": height, "crs": crs, "transform": transform,
        "tiled": True, "blockxsize": GTIFF_BLOCK, "blockysize": GTIFF_BLOCK,
        "compress": "deflate", "predictor": 3 if dtype.startswith("float") else 2, "BIGTIFF": "IF_SAFER",
        "sparse_ok": True,
    }


def class_names_of(dataset) -> list[str]:
    """The class names a SemBridge class raster carries in its ``class_names`` tag (empty for other rasters)."""
    text = dataset.tags().get("class_names", "")
    return [name for name in text.split(",") if name] if text else []


def class_encoding(num_classes: int) -> tuple[str, int]:
    """(dtype, nodata) of a class raster: uint8 with nodata 255 up to 255 classes, uint16 with nodata 65535 above."""
    if num_classes <= 255:
        return "uint8", 255
    if num_classes <= MAX_CLASSES:
        return "uint16", 65535
    raise ValueError(f"{num_classes} classes do not fit a class raster (at most {MAX_CLASSES})")


def class_colormap(colours: Sequence[str]) -> dict[int, tuple[int, int, int, int]]:
    """GeoTIFF colour table: class colours opaque, the nodata index transparent (GDAL fills the rest)."""
    table = {index: (*hex_to_rgb(colour), 255) for index, colour in enumerate(colours)}
    table[class_encoding(len(colours))[1]] = (0, 0, 0, 0)
    return table


def write_qml(path: Path, class_names: Sequence[str], colours: Sequence[str]) -> None:
    """QGIS paletted-renderer style; QGIS applies it automatically to the raster with the same base name."""
    root = ElementTree.Element("qgis", {"version": "3.28.0", "styleCategories": "AllStyleCategories"})
    pipe = ElementTree.SubElement(root, "pipe")
    renderer = ElementTree.SubElement(pipe, "rasterrenderer", {
        "type": "paletted", "band": "1", "opacity": "1", "alphaBand": "-1", "nodataColor": "",
    })
    ElementTree.SubElement(renderer, "rasterTransparency")
    palette = ElementTree.SubElement(renderer, "colorPalette")
    for index, (name, colour) in enumerate(zip(class_names, colours)):
        ElementTree.SubElement(palette, "paletteEntry", {"value": str(index), "color": colour, "alpha": "255", "label": name})
    ElementTree.SubElement(pipe, "brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"})
    ElementTree.SubElement(pipe, "huesaturation", {"saturation": "0", "grayscaleMode": "0", "colorizeOn": "0"})
    ElementTree.SubElement(pipe, "rasterresampler", {"maxOversample": "2"})
    ElementTree.SubElement(root, "blendMode").text = "0"
    ElementTree.indent(root)
    text = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ElementTree.tostring(root, encoding="unicode") + "\n"
    path.write_text(text, encoding="utf-8")


def _block_windows(width: int, height: int, block: int):
    from rasterio.windows import Window

    for row in range(0, height, block):
        for col in range(0, width, block):
            yield Window(col, row, min(block, width - col), min(block, height - row))


def write_polygons(path: Path, class_raster: Path, class_names: Sequence[str], mean_confidence: Sequence[float | None],
                   block: int = 512) -> int:
    """One dissolved (Multi)Polygon per present class: class_id, class_name, mean_confidence, area (map units).

    The class raster is polygonised block by block (bounded memory) and the pieces are unioned per class,
    which also merges polygons cut at block edges. Returns the number of features written.
    """
    import geopandas
    import rasterio
    import shapely
    from rasterio.features import shapes

    pieces: dict[int, list] = {}
    with rasterio.open(class_raster) as dataset:
        crs = dataset.crs
        for window in _block_windows(dataset.width, dataset.height, block):
            classes = dataset.read(1, window=window)
            valid = classes != dataset.nodata
            if not valid.any():
                continue
            for geometry, value in shapes(classes, mask=valid, transform=dataset.window_transform(window)):
                pieces.setdefault(int(value), []).append(shapely.geometry.shape(geometry))
    class_ids = sorted(pieces)
    geometries = [shapely.union_all(np.asarray(pieces[class_id], dtype=object)) for class_id in class_ids]
    frame = geopandas.GeoDataFrame({
        "class_id": np.asarray(class_ids, dtype=np.int32),
        "class_name": [class_names[class_id] for class_id in class_ids],
        "mean_confidence": [float(mean_confidence[class_id]) if mean_confidence[class_id] is not None else float("nan") for class_id in class_ids],
        "area": shapely.area(np.asarray(geometries, dtype=object)).astype(np.float64),
    }, geometry=geometries, crs=crs)
    try:
        frame.to_file(path, driver="GPKG", layer="classes", engine="pyogrio")
    except Exception as error:  # pyogrio/GDAL errors (a full disk, a read-only folder) have several types
        raise OSError(f"{path.parent}: cannot write the GeoPackage of class polygons ({error})") from None
    return len(frame)


def _stretch_limits(source, indexes: Sequence[int], block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-band 2-98 % display limits from a small decimated read (uint8 scenes are shown as is)."""
    if source.dtype == np.uint8:
        return np.zeros(len(indexes)), np.full(len(indexes), 255.0)
    scale = max(1, int(np.ceil(max(source.width, source.height) / min(256, block))))
    shape = (max(1, source.height // scale), max(1, source.width // scale))
    sample = source.read(indexes=indexes, out_shape=shape).astype(np.float64)
    low, high = np.zeros(len(indexes)), np.ones(len(indexes))
    for band, values in enumerate(sample):
        values = values[np.isfinite(values)]
        if source.nodata is not None:
            values = values[values != source.nodata]
        if values.size:
            low[band], high[band] = np.percentile(values, [2, 98])
            high[band] = max(high[band], low[band] + 1e-6)
    return low, high


def _legend_font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def write_preview(path: Path, source, class_raster: Path, class_names: Sequence[str], colours: Sequence[str],
                  shares: Sequence[float] | None = None, max_size: int = PREVIEW_MAX_SIZE, block: int = 512) -> None:
    """PNG: the class map blended over the scene's RGB (decimated), with a legend (names, shares) on the right.

    ``source`` is the labelling's SceneSource: its first three model bands are shown as R, G, B.
    """
    import rasterio
    from PIL import Image, ImageDraw
    from rasterio.enums import Resampling
    from rasterio.windows import Window

    scale = max(1.0, max(source.width, source.height) / max_size)
    width, height = max(1, round(source.width / scale)), max(1, round(source.height / scale))
    rows_per_read = max(1, (block * block) // width)
    indexes = source.indexes
    rgb_indexes = list(indexes)[:3] if len(indexes) >= 3 else [indexes[0]] * 3
    low, high = _stretch_limits(source, rgb_indexes, block)
    palette = np.zeros((len(colours) + 1, 3), dtype=np.float32)  # the extra row stands for nodata
    palette[: len(colours)] = [hex_to_rgb(colour) for colour in colours]
    image = np.zeros((height, width, 3), dtype=np.uint8)
    with rasterio.open(class_raster) as classes_dataset:
        for top in range(0, height, rows_per_read):
            bottom = min(height, top + rows_per_read)
            y0, y1 = int(top * source.height / height), max(int(top * source.height / height) + 1, int(bottom * source.height / height))
            window = Window(0, y0, source.width, y1 - y0)
            rgb = source.read(window, indexes=rgb_indexes, out_shape=(bottom - top, width))
            classes = classes_dataset.read(1, window=window, out_shape=(bottom - top, width), resampling=Resampling.nearest)
            stretched = (rgb.astype(np.float32) - low[: 3, None, None].astype(np.float32)) / (high[:3, None, None] - low[:3, None, None]).astype(np.float32)
            base = np.clip(np.nan_to_num(stretched, nan=0.0, posinf=1.0, neginf=0.0) * 255.0, 0, 255).transpose(1, 2, 0)
            labelled = classes != classes_dataset.nodata
            colour = palette[np.where(labelled, classes, len(colours))]
            blended = np.where(labelled[..., None], (1 - PREVIEW_ALPHA) * base + PREVIEW_ALPHA * colour, base)
            image[top:bottom] = blended.astype(np.uint8)
    font_size = 14
    font = _legend_font(font_size)
    labels = [f"{name} ({share:.1%})" for name, share in zip(class_names, shares)] if shares is not None else list(class_names)
    entries = list(zip(labels, colours))
    if len(entries) > PREVIEW_LEGEND_ROWS:  # many classes: the largest shares, and how many are left out
        order = np.argsort([-share for share in shares]) if shares is not None else np.arange(len(entries))
        entries = [entries[index] for index in order[:PREVIEW_LEGEND_ROWS - 1]] + [(f"... {len(entries) - PREVIEW_LEGEND_ROWS + 1} more", "#ffffff")]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = max(int(probe.textlength(label, font=font)) for label, _ in entries)
    row_height = font_size + 8
    legend_width = 16 + 18 + 8 + text_width + 16
    canvas_height = max(height, 16 + row_height * (len(entries) + 1))
    canvas = Image.new("RGB", (width + legend_width, canvas_height), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(canvas)
    left = width + 16
    draw.text((left, 8), "Classes", fill=(0, 0, 0), font=font)
    for row, (label, colour) in enumerate(entries, start=1):
        top = 8 + row * row_height
        draw.rectangle([left, top, left + 18, top + font_size], fill=hex_to_rgb(colour), outline=(0, 0, 0))
        draw.text((left + 26, top), label, fill=(0, 0, 0), font=font)
    canvas.save(path, format="PNG", compress_level=1)  # level 6 takes longer than labelling a small scene


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
