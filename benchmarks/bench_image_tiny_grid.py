"""A PNG grid of the test images of image-gen / image-tiny runs, one row per result file, to look at.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_image_tiny_grid.py RESULT.json [RESULT.json ...] --png grid.png [--drift]

Each row: for every test prompt, its reference picture and then the run's generated images of that prompt
(the 3 repeats), so a row reads "reference, 3 generated" four times. With --drift, two rows per file
instead: the drift prompts' images with the adapter disabled (the base model), then enabled. Rows in the order of the arguments (each
row's file is printed). The image paths come from the result files (untrusted): a
path that leaves the result file's folder is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from peftbench.tiny_image.grid import image_grid  # noqa: E402


def open_inside(folder: Path, relative: str):
    from PIL import Image

    path = (folder / relative).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise SystemExit(f"{relative!r}: an image path outside {folder}")
    return Image.open(path).convert("RGB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+")
    parser.add_argument("--png", type=Path, required=True)
    parser.add_argument("--drift", action="store_true", help="the drift pairs instead of the test images")
    args = parser.parse_args()

    rows = []
    for result_file in args.results:
        result = json.loads(result_file.read_text())
        kind = "drift" if args.drift else "test"
        items = (result.get("peftbench", {}).get("images") or {}).get(kind) or []
        if not items:
            raise SystemExit(f"{result_file}: no saved {kind} images (peftbench.images.{kind})")
        if args.drift:
            rows += [[open_inside(result_file.parent, item[which]) for item in items] for which in ("base", "adapter")]
        else:
            row = []
            for item in items:
                row.append(open_inside(result_file.parent, item["reference"]))
                row += [open_inside(result_file.parent, path) for path in item["images"]]
            rows.append(row)
        print(f"row {len(rows)}: {result_file}")
    image_grid(rows, scale=3).save(args.png)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
