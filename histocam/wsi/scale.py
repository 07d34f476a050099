"""Microns per pixel: of a slide's level 0, and of the tiles a run sees.

A slide's level-0 MPP comes, in this order, from a table of ``slide,mpp`` rows (``--mpp-table``:
a slide is matched by its path as written, its file name or its stem; the table corrects a file
whose metadata is wrong or missing), from the file itself (OpenSlide's and tiffslide's
``mpp-x``: Aperio ``MPP``, TIFF resolution, ...), or from ``--slide-mpp`` for the slides that give
none. A slide with none of the three is an error that says how to give it.

A magnification is turned into microns per pixel as 10 / magnification (20× = 0.5 µm/px, 40× =
0.25 µm/px), the convention of the slide tools (TRIDENT, tiatoolbox, CLAM).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from histocam.data.errors import DataError
from histocam.data.io import read_text
from histocam.wsi.backends import SlideError

MAGNIFICATION_MICRONS = 10.0


def magnification_mpp(magnification: float) -> float:
    """Microns per pixel of an objective magnification (module docstring)."""
    if not (magnification > 0 and math.isfinite(magnification)):
        raise ValueError(f"--magnification {magnification}: must be positive (e.g. 20 or 40)")
    return MAGNIFICATION_MICRONS / magnification


def positive_mpp(value: float, option: str) -> float:
    """``value`` when it is a positive, finite number of microns per pixel, else a ValueError."""
    if not (value > 0 and math.isfinite(value)) or value > 1000:
        raise ValueError(f"{option} {value}: microns per pixel must be positive (e.g. 0.25 at 40×, "
                         "0.5 at 20×)")
    return float(value)


def read_mpp_table(path: Path) -> dict[str, float]:
    """``slide,mpp`` rows (header required) as {path as written, file name, stem: mpp}."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "MPP table not found")
    rows = list(csv.DictReader(io.StringIO(read_text(path), newline="")))
    header = [h.strip().lower() for h in (rows[0].keys() if rows else [])]
    if "slide" not in header or "mpp" not in header:
        raise DataError(path, f"an MPP table needs the columns slide,mpp (header: "
                        f"{', '.join(header) or 'empty'})")
    table: dict[str, float] = {}
    for line, row in enumerate(rows, start=2):
        cells = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        try:
            mpp = float(cells["mpp"])
        except ValueError:
            mpp = -1.0
        if not (mpp > 0 and math.isfinite(mpp)):
            raise DataError(path, f"line {line}: mpp {cells['mpp']!r} is not a positive number")
        name = cells["slide"]
        if not name:
            raise DataError(path, f"line {line}: empty slide")
        for key in {name, Path(name).name, Path(name).stem}:
            table[key] = mpp
    return table


def slide_mpp(path: Path, file_mpp: float | None, table: dict[str, float] | None = None,
              fallback: float | None = None) -> tuple[float, str]:
    """(level-0 MPP of the slide at ``path``, where it came from) (module docstring)."""
    path = Path(path)
    for key in (str(path), path.name, path.stem):
        if table and key in table:
            return table[key], "--mpp-table"
    if file_mpp is not None:
        return file_mpp, "slide file"
    if fallback is not None:
        return fallback, "--slide-mpp"
    raise SlideError(path, "the slide does not record its microns per pixel: pass --slide-mpp M "
                     "(e.g. 0.25 for 40×, 0.5 for 20×) or --mpp-table FILE.csv with slide,mpp rows")
