"""Draw the application icon (a 256 px PNG) with Pillow, so the repository holds no binary image.

A map-like grid of class colours (the land-cover palette the app uses) under a bridge arc: the
student's RGB world joined to the teacher's multispectral one.

    python installers/make_icon.py OUT.png
"""
from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 256
CELLS = ("#f2d16b", "#1b7837", "#b8e186", "#636363", "#d6604d", "#4393c3",
         "#1b7837", "#b8e186", "#4393c3", "#f2d16b", "#636363", "#1b7837",
         "#d6604d", "#4393c3", "#1b7837", "#b8e186")


def draw_icon(size: int = SIZE) -> Image.Image:
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    margin, radius = size // 16, size // 8
    draw.rounded_rectangle((margin, margin, size - margin, size - margin), radius=radius, fill="#20313f")
    grid, cell = 4, (size - 4 * margin) // 4
    left = top = 2 * margin
    for index, colour in enumerate(CELLS):
        row, col = divmod(index, grid)
        draw.rectangle((left + col * cell + 2, top + row * cell + 2, left + (col + 1) * cell - 2, top + (row + 1) * cell - 2), fill=colour)
    arc = (2 * margin, size // 3, size - 2 * margin, size + size // 3)
    draw.arc(arc, start=200, end=340, fill="#ffffff", width=max(4, size // 24))
    return image


def main() -> None:
    out = Path(sys.argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_icon().save(out)


if __name__ == "__main__":
    main()
