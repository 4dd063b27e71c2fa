"""Rebuild resources/demo/ from ../shared/data (maintainers only; nothing runs this at run or test time).

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


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else here.parent.parent / "shared" / "data", here / "demo")
