"""The HTML report's image gallery: for each image-task point, its test prompts' reference photos beside
the generated images, and the drift pairs (adapter disabled / enabled, same prompt, same noise).

Images are embedded as small JPEG thumbnails (data URIs) so that the report stays one self-contained, small
file. The image lists come from result files, which are untrusted: a listed path must stay inside the result
file's folder and be a readable image of reasonable size, else it is left out.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, Optional

from peftbench.analysis.points import Point

THUMBNAIL_SIDE = 112  # pixels, the longer side
MAX_TEST_ITEMS = 4  # test prompts per row
MAX_DRIFT_PAIRS = 3
MAX_IMAGE_FILE_BYTES = 32 * 2**20
MAX_PROMPT = 300  # characters shown


def thumbnail(result_file: Path, relative: Any) -> Optional[str]:
    """A data URI of a small JPEG of the image at `relative` (to the result file's folder), or None when the path
    is not a string, leaves that folder, or is not a readable image."""
    from PIL import Image

    if not isinstance(relative, str) or not relative:
        return None
    folder = result_file.parent.resolve()
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder) or not path.is_file() or path.stat().st_size > MAX_IMAGE_FILE_BYTES:
        return None
    try:
        with Image.open(path) as image:
            if image.width * image.height > 64 * 2**20:  # a decompression bomb is not a thumbnail
                return None
            image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
            buffer = io.BytesIO()
            image.convert("RGB").save(buffer, format="JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _prompt(value: Any) -> str:
    text = value if isinstance(value, str) else ""
    return text if len(text) <= MAX_PROMPT else text[: MAX_PROMPT - 1] + "…"


def _entries(images: dict[str, Any], key: str, count: int) -> list[dict[str, Any]]:
    entries = images.get(key)
    return [e for e in entries if isinstance(e, dict)][:count] if isinstance(entries, list) else []


def gallery_row(point: Point) -> Optional[dict[str, Any]]:
    run = next((r for r in point.runs if r.extra("images")), None)
    if run is None:
        return None
    images = run.extra("images")  # paths relative to the result file's folder, untrusted: thumbnail checks them
    test = []
    for entry in _entries(images, "test", MAX_TEST_ITEMS):
        generated = entry.get("images") if isinstance(entry.get("images"), list) else []
        test.append({"prompt": _prompt(entry.get("prompt")), "reference": thumbnail(run.path, entry.get("reference")),
                     "image": thumbnail(run.path, generated[0] if generated else None)})
    drift = [{"prompt": _prompt(entry.get("prompt")), "base": thumbnail(run.path, entry.get("base")),
              "adapter": thumbnail(run.path, entry.get("adapter"))}
             for entry in _entries(images, "drift", MAX_DRIFT_PAIRS)]
    if not any(item["image"] or item["reference"] for item in test) and not drift:
        return None
    return {"name": point.name, "task": point.task, "test": test, "drift": drift}


def image_gallery(points: list[Point]) -> list[dict[str, Any]]:
    """One row per point that saved images, in the points' order."""
    return [row for row in map(gallery_row, points) if row is not None]
