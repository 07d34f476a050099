"""What ``histocam predict`` is given: image files, whole slides, folders of them, CSV manifests.

Slides are recognised by their format: the OpenSlide vendor suffixes (``.svs``, ``.ndpi``,
``.mrxs``, ...) and tiled TIFF files (a pyramidal TIFF is tiled; a plain TIFF image is stored in
strips). A folder gives its image and slide files (not its sub-folders), sorted by name; its
other files are named as skipped. A CSV manifest gives the paths of its ``image`` (or ``path``,
``slide``) column, relative to the CSV's folder; the training manifest (``image,label,...``) is
accepted as it is. Several files, a folder or a manifest make a batch.
"""

from __future__ import annotations

import csv
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from histocam.data.csv_manifest import manifest_path
from histocam.data.errors import DataError
from histocam.wsi.backends import quiet_logger

SLIDE_SUFFIXES = {".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide"}
TIFF_SUFFIXES = {".tif", ".tiff"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"} | TIFF_SUFFIXES
CSV_COLUMNS = ("image", "path", "slide")


@dataclass(frozen=True)
class Inputs:
    images: list[Path]
    slides: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # a folder's other files
    failed: list[tuple[Path, str]] = field(default_factory=list)  # files that cannot be used
    batch: bool = False  # several files, a folder or a manifest


def is_tiled_tiff(path: Path) -> bool:
    import tifffile

    try:
        with quiet_logger("tifffile"), tifffile.TiffFile(path) as tif:
            return bool(tif.pages[0].is_tiled)
    except (tifffile.TiffFileError, OSError, ValueError, IndexError) as exc:
        raise DataError(path, f"unreadable TIFF file ({exc})") from None


def kind_of(path: Path) -> str:
    """``image`` or ``slide``; a DataError names the file when it is neither or missing."""
    suffix = path.suffix.lower()
    if not path.exists():
        raise DataError(path, "file not found")
    if suffix in SLIDE_SUFFIXES:
        return "slide"
    if suffix in TIFF_SUFFIXES:
        return "slide" if is_tiled_tiff(path) else "image"
    if suffix in IMAGE_SUFFIXES:
        return "image"
    raise DataError(path, f"unknown format {suffix or '(no suffix)'!r}: expected an image "
                    f"({', '.join(sorted(IMAGE_SUFFIXES))}), a slide "
                    f"({', '.join(sorted(SLIDE_SUFFIXES))}, tiled TIFF), a folder or a CSV manifest")


def manifest_paths(csv_path: Path) -> list[Path]:
    """The paths of a CSV manifest's image column, relative to its folder and in one spelling
    (``data.csv_manifest.manifest_path``); absolute paths and paths outside the folder are allowed,
    since a list of files to predict trains nothing."""
    try:
        with csv_path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
            fields = [f.strip().lower() for f in (rows[0].keys() if rows else [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(csv_path, f"unreadable CSV manifest ({exc})") from None
    column = next((c for c in CSV_COLUMNS if c in fields), None)
    if column is None:
        raise DataError(csv_path, f"a manifest needs a column named {' or '.join(CSV_COLUMNS)} "
                        f"(header: {', '.join(fields) or 'empty'})")
    out = []
    for line, row in enumerate(rows, start=2):
        value = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}.get(column)
        if not value:
            raise DataError(csv_path, f"line {line}: empty {column!r}")
        cell = manifest_path(value, f"{csv_path}:{line}", column, allow_outside_root=True)
        out.append(Path(posixpath.normpath(csv_path.parent / cell)))
    return out


def collect_inputs(items: list[str | Path], keep_going: bool = False) -> Inputs:
    """Expand files, folders and CSV manifests into image and slide files (first occurrence
    order, duplicates once). A file that cannot be used (missing, unknown format, unreadable
    TIFF) raises its DataError, or with ``keep_going`` is listed in ``failed``."""
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    batch = len(items) > 1
    for item in items:
        path = Path(item)
        if path.is_dir():
            batch = True
            found = sorted(p for p in path.iterdir() if p.is_file())
            known = [p for p in found if p.suffix.lower() in IMAGE_SUFFIXES | SLIDE_SUFFIXES]
            skipped += [(p, "not an image or slide file") for p in found if p not in known]
            if not known:
                raise DataError(path, "the folder holds no image or slide file")
            files += known
        elif path.suffix.lower() == ".csv":
            batch = True
            if not path.is_file():
                raise DataError(path, "manifest not found")
            files += manifest_paths(path)
        else:
            files.append(path)
    images: list[Path] = []
    slides: list[Path] = []
    failed: list[tuple[Path, str]] = []
    seen: set[Path] = set()
    for path in files:
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        try:
            (slides if kind_of(path) == "slide" else images).append(path)
        except DataError as exc:
            if not keep_going:
                raise
            failed.append((path, str(exc)))
    if not images and not slides and not failed:
        raise ValueError("no input given")
    return Inputs(images, slides, skipped, failed, batch)


def unique_stems(paths: list[Path]) -> list[str]:
    """Output names: each file's stem, with ``-2``, ``-3``... for repeated names."""
    used: set[str] = set()
    out = []
    for path in paths:
        stem, n = path.stem, 1
        while stem in used:
            n += 1
            stem = f"{path.stem}-{n}"
        used.add(stem)
        out.append(stem)
    return out
