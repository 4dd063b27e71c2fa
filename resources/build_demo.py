"""Rebuild resources/demo/ from ../shared/data (maintainers only; nothing runs this at run or test time).

    python resources/build_demo.py [SHARED_DATA] [--mosaic-only]

MS tiles keep their exact pixel values, CRS and transform but are re-compressed losslessly
(DEFLATE) to fit the demo under 20 MB; most RGB images are re-encoded as JPEG (q=90), every
fifth as lossless PNG and one per class kept as the original TIFF bytes, so the demo also
exercises a realistic mix of formats and sizes.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import rasterio
from PIL import Image
from rasterio.windows import Window

CLASSES = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Residential", "River"]
MS_PER_CLASS = 20
RGB_PER_CLASS = 30


def rgb_selection(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.tif"))
    prefixes = sorted({f.name.rstrip("0123456789.tif") for f in files})
    per_prefix = RGB_PER_CLASS // len(prefixes)
    chosen = [f for p in prefixes for f in sorted(folder.glob(f"{p}*.tif"))[:per_prefix]]
    odd = [f for f in files if Image.open(f).size != (256, 256) and f not in chosen]
    return chosen[: RGB_PER_CLASS - len(odd)] + odd


def main(shared: Path, demo: Path) -> None:
    for cls in CLASSES:
        out = demo / "ms" / cls
        out.mkdir(parents=True, exist_ok=True)
        for n in range(1, MS_PER_CLASS + 1):
            src = shared / "ms" / cls / f"{cls}_{n}.tif"
            with rasterio.open(src) as ds:
                profile = ds.profile | {"compress": "deflate", "predictor": 2, "zlevel": 9}
                data = ds.read()
            with rasterio.open(out / src.name, "w", **profile) as dst:
                dst.write(data)
        out = demo / "rgb" / cls
        out.mkdir(parents=True, exist_ok=True)
        for i, src in enumerate(rgb_selection(shared / "rgb" / cls)):
            if i == 0:
                shutil.copyfile(src, out / src.name)
            elif i % 5 == 0:
                Image.open(src).convert("RGB").save(out / (src.stem + ".png"), optimize=True)
            else:
                Image.open(src).convert("RGB").save(out / (src.stem + ".jpg"), quality=90)
    scene_dir = demo / "scene"
    scene_dir.mkdir(parents=True, exist_ok=True)
    with rasterio.open(shared / "scenes" / "RGB.byte.tif") as ds:
        window = Window(0, 0, 320, 288)
        profile = ds.profile | {
            "width": window.width, "height": window.height, "transform": ds.window_transform(window),
            "compress": "deflate", "tiled": False,
        }
        profile.pop("blockxsize", None)
        profile.pop("blockysize", None)
        data = ds.read(window=window)
    with rasterio.open(scene_dir / "scene_subset.tif", "w", **profile) as dst:
        dst.write(data)


# The held-out mosaic scene: UC Merced images the demo does NOT train on, laid out as a georeferenced
# scene at the photos' resolution, with the true class of every block as a reference GeoPackage.
MOSAIC_PER_CLASS = 6
MOSAIC_COLUMNS = 6
MOSAIC_BLOCK = 256
MOSAIC_GSD = 0.3                   # UC Merced: 1 ft (0.3048 m) pixels, stated as 0.3 m like data.rgb_gsd in demo.toml
MOSAIC_CRS = "EPSG:32610"          # WGS 84 / UTM zone 10N
MOSAIC_ORIGIN = (720000.0, 4132000.0)  # a declared, arbitrary place near Merced, California (not where the photos were taken)
MOSAIC_SEED = 14


def held_out_images(shared: Path, demo: Path, cls: str) -> list[Path]:
    """256 x 256 UC Merced images of ``cls`` in the shared set whose names are not among the demo's training images,
    ``MOSAIC_PER_CLASS`` of them spread evenly over each UC Merced source class."""
    used = {path.stem for path in (demo / "rgb" / cls).iterdir()}
    files = [path for path in sorted((shared / "rgb" / cls).glob("*.tif"))
             if path.stem not in used and Image.open(path).size == (MOSAIC_BLOCK, MOSAIC_BLOCK)]
    prefixes = sorted({path.name.rstrip("0123456789.tif") for path in files})
    chosen = []
    for prefix in prefixes:
        candidates = [path for path in files if path.name.rstrip("0123456789.tif") == prefix]
        wanted = MOSAIC_PER_CLASS // len(prefixes)
        chosen += [candidates[round(index * (len(candidates) - 1) / max(1, wanted - 1))] for index in range(wanted)]
    return chosen


def build_mosaic(shared: Path, demo: Path) -> None:
    """scene/ucmerced_mosaic.tif (JPEG-compressed RGB GeoTIFF) and scene/ucmerced_mosaic_reference.gpkg."""
    import geopandas
    import numpy as np
    import shapely
    from affine import Affine

    blocks = [(cls, path) for cls in CLASSES for path in held_out_images(shared, demo, cls)]
    order = np.random.default_rng(MOSAIC_SEED).permutation(len(blocks))
    blocks = [blocks[index] for index in order]
    rows = -(-len(blocks) // MOSAIC_COLUMNS)
    width, height = MOSAIC_COLUMNS * MOSAIC_BLOCK, rows * MOSAIC_BLOCK
    pixels = np.zeros((3, height, width), dtype=np.uint8)
    transform = Affine(MOSAIC_GSD, 0, MOSAIC_ORIGIN[0], 0, -MOSAIC_GSD, MOSAIC_ORIGIN[1])
    records = []
    for position, (cls, path) in enumerate(blocks):
        row, column = divmod(position, MOSAIC_COLUMNS)
        top, left = row * MOSAIC_BLOCK, column * MOSAIC_BLOCK
        with Image.open(path) as image:
            pixels[:, top:top + MOSAIC_BLOCK, left:left + MOSAIC_BLOCK] = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
        x0, y0 = transform @ (left, top)
        x1, y1 = transform @ (left + MOSAIC_BLOCK, top + MOSAIC_BLOCK)
        records.append({"block": position, "class": cls, "ucmerced_class": path.name.rstrip("0123456789.tif"),
                        "source_file": path.name, "row": row, "column": column, "geometry": shapely.box(x0, y1, x1, y0)})
    scene_dir = demo / "scene"
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 3, "dtype": "uint8", "crs": MOSAIC_CRS,
               "transform": transform, "tiled": True, "blockxsize": MOSAIC_BLOCK, "blockysize": MOSAIC_BLOCK,
               "compress": "jpeg", "jpeg_quality": 90, "photometric": "ycbcr"}
    with rasterio.open(scene_dir / "ucmerced_mosaic.tif", "w", **profile) as dst:
        dst.write(pixels)
        for band, name in enumerate(("Red", "Green", "Blue"), start=1):
            dst.set_band_description(band, name)
    reference = scene_dir / "ucmerced_mosaic_reference.gpkg"
    reference.unlink(missing_ok=True)
    geopandas.GeoDataFrame(records, crs=MOSAIC_CRS).to_file(reference, driver="GPKG", layer="reference", engine="pyogrio")


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    arguments = [argument for argument in sys.argv[1:] if not argument.startswith("--")]
    shared_data = Path(arguments[0]) if arguments else here.parent.parent / "shared" / "data"
    if "--mosaic-only" not in sys.argv:
        main(shared_data, here / "demo")
    build_mosaic(shared_data, here / "demo")
