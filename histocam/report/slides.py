"""The report's slide section: what ``histocam predict`` wrote for whole slides.

Given prediction folders (``histocam predict ... --out DIR``: the slides are ``DIR/slides/STEM/``)
or slide folders themselves, the section has one table of the slides (label and score with its
aggregation rule, tiles, tissue area, region area at the threshold, the tile scale, the run and its
map checkpoint) and, per slide, its thumbnail beside its overlay (with the overlay's colour bar and
scale bar), downscaled and embedded as JPEG.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from histocam.data.errors import DataError
from histocam.report.html import esc, fmt, image, note, table
from histocam.report.plots import array_uri

THUMBNAIL_WIDTH = 360
OVERLAY_WIDTH = 720


def slide_summaries(folders: list[Path]) -> list[tuple[Path, dict]]:
    """(summary file, its content) of every predicted slide under ``folders`` (module docstring)."""
    found: list[tuple[Path, dict]] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(folder, "no such prediction folder")
        candidates = sorted(folder.glob("slides/*/*.json")) + sorted(folder.glob("*.json"))
        summaries = []
        for path in candidates:
            try:
                data = json.loads(path.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise DataError(path, f"unreadable slide result ({type(exc).__name__})") from None
            if isinstance(data, dict) and "identity" in data and "files" in data:
                summaries.append((path, data))
        if not summaries:
            raise DataError(folder, "holds no predicted slide (STEM.json of `histocam predict`)")
        found += summaries
    return found


def _picture(path: Path, width: int) -> str:
    with Image.open(path) as im:
        rgb = im.convert("RGB")
        if rgb.width > width:
            rgb = rgb.resize((width, max(1, round(rgb.height * width / rgb.width))),
                             Image.Resampling.LANCZOS)
        return image(array_uri(np.asarray(rgb), jpeg_quality=85), path.name)


def _area(summary: dict) -> str:
    region = summary.get("region")
    return fmt(region.get("area_mm2"), 3) if isinstance(region, dict) else esc(region or "n/a")


def slide_section(folders: list[Path]) -> str:
    """The HTML of the section (module docstring)."""
    summaries = slide_summaries(folders)
    rows = []
    for path, s in summaries:
        scale = s.get("scale") or {}
        rows.append([esc(Path(s.get("slide", path.stem)).name), esc(s.get("label") or "n/a"),
                     fmt(s.get("score"), 3), esc(s.get("rule", "")), fmt(s.get("tiles")),
                     fmt((s.get("tissue") or {}).get("area_mm2"), 3), _area(s),
                     fmt(scale.get("tile_mpp"), 3), esc(s.get("settings", {}).get("run", "")),
                     esc(s.get("settings", {}).get("map_checkpoint", ""))])
    parts = ['<h2 id="slides">Slides</h2>',
             note("histocam predict on whole slides: the label and score follow the aggregation "
                  "rule shown; areas in mm²; the region is the map at its threshold, smoothed and "
                  "without parts below the minimum area; tile µm/px is the scale the tiles were "
                  "read at"),
             table(["slide", "label", "score", "rule", "tiles", "tissue mm²", "region mm²",
                    "tile µm/px", "run", "map checkpoint"], rows, text_columns=2)]
    for path, s in summaries:
        files = s["files"]
        folder = path.parent
        name = Path(s.get("slide", path.stem)).name
        parts.append(f"<h3>{esc(name)}</h3>")
        pictures = [_picture(folder / files[key], width)
                    for key, width in (("thumbnail", THUMBNAIL_WIDTH), ("overlay", OVERLAY_WIDTH))
                    if key in files and (folder / files[key]).is_file()]
        parts.append('<div style="display:flex;gap:1em;align-items:flex-start">'
                     + "".join(pictures) + "</div>")
    return "\n".join(parts)
