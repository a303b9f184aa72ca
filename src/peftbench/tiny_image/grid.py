"""Contact sheets of small images (PNG grids), for looking at what a tiny model draws."""

from __future__ import annotations

from PIL import Image


def image_grid(rows: list[list[Image.Image]], scale: int = 4, gap: int = 2) -> Image.Image:
    """The images row by row, each enlarged `scale` times (nearest neighbour, so pixels stay visible)."""
    cell = max(image.size[0] for row in rows for image in row) * scale
    columns = max(len(row) for row in rows)
    sheet = Image.new("RGB", (columns * (cell + gap) + gap, len(rows) * (cell + gap) + gap), (128, 128, 128))
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            big = image.convert("RGB").resize((cell, cell), Image.NEAREST)
            sheet.paste(big, (gap + c * (cell + gap), gap + r * (cell + gap)))
    return sheet
