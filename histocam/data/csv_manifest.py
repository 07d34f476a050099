"""A CSV manifest for users' own data: ``image,label[,mask][,split][,group][,mpp]`` with a header
row.

Paths are relative to the CSV's folder and name one file one way: each is normalised lexically
(``./a.png``, ``a//b.png`` and ``a/../a/b.png`` are ``a.png``, ``a/b.png``, ``a/b.png``), and the
normalised image path is the image's id, so one image listed twice under two spellings is a
duplicate (an error naming both lines), never two images that could fall in different splits.
A path that leaves the CSV's folder (``../x.png``, an absolute path) is an error unless
``allow_outside_root`` (``data.allow_outside_root``, ``--allow-outside-root``) allows it.

``label`` is a class name or an integer index; the class encoding comes from ``classes`` (a list of
names, index = position), or a ``classes.txt`` beside the CSV (one name per line). ``mask`` is a
mask path, empty for an unannotated image, or the word ``background`` for an annotated image
without foreground. Without a ``split`` column the splits are drawn by seed (stratified; valpx from
valcl). ``group`` names the patient (or slide) of each image: cross-validation folds
(``data.folds``) never put one group in two splits. ``mpp`` is the images' microns per pixel, one
value for the whole manifest (``manifest_mpp``), the scale ``histocam predict`` tiles slides at.
"""

from __future__ import annotations

import csv
import io
import posixpath
from pathlib import Path

from histocam.data.config import SPLIT_KEYS
from histocam.data.dataset import SPLITS, Layout, Record, layout_from_pool
from histocam.data.errors import DataError
from histocam.data.io import read_text

ALL_BACKGROUND = "background"


def read_class_names(path: Path) -> list[str]:
    names = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if len(set(names)) != len(names):
        raise DataError(path, "class names are not unique")
    return names


def _encode(label: str, class_names: list[str] | None, where: str) -> int:
    if class_names is not None and label in class_names:
        return class_names.index(label)
    if label.lstrip("-").isdigit():
        index = int(label)
        if class_names is not None and not 0 <= index < len(class_names):
            raise DataError(where, f"label {index} is outside the encoding {class_names}")
        if index < 0:
            raise DataError(where, f"label {index} is negative")
        return index
    if class_names is None:
        raise DataError(where, f"label {label!r} is a name but no class encoding was given "
                        "(pass classes, e.g. --classes benign,malignant, or write classes.txt)")
    raise DataError(where, f"unknown label {label!r} (classes: {class_names})")


def manifest_path(cell: str, where: str, column: str, allow_outside_root: bool) -> str:
    """A path cell of a manifest in its one spelling (``posixpath.normpath``); a path outside the
    manifest's folder is a ``DataError`` unless ``allow_outside_root``."""
    path = posixpath.normpath(cell)
    if path == ".":
        raise DataError(where, f"{column} {cell!r} is a folder, not a file")
    if not allow_outside_root and (posixpath.isabs(path) or path.split("/")[0] == ".."):
        raise DataError(where, f"{column} {cell!r} is outside the manifest's folder; set "
                        "data.allow_outside_root: true (command line: --allow-outside-root) to "
                        "read it")
    return path


def read_csv_manifest(
    csv_path: str | Path,
    class_names: list[str] | None = None,
    *,
    seed: int = 0,
    valcl_fraction: float = 0.2,
    test_fraction: float = 0.2,
    valpx_per_class: int = 3,
    folds: int | None = None,
    fold: int | None = None,
    allow_outside_root: bool = False,
) -> Layout:
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(csv_path, "manifest not found")
    if class_names is None and (csv_path.parent / "classes.txt").is_file():
        class_names = read_class_names(csv_path.parent / "classes.txt")
    base = csv_path.parent
    with io.StringIO(read_text(csv_path), newline="") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = {"image", "label"} - set(header)
        if missing:
            raise DataError(csv_path, f"header must contain image,label[,mask][,split][,group]"
                            f"[,mpp]; missing {sorted(missing)} in {header}")
        unknown = set(header) - {"image", "label", "mask", "split", "group", "mpp"}
        if unknown:
            raise DataError(csv_path, f"unknown columns {sorted(unknown)}")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if not rows:
        raise DataError(csv_path, "no rows under the header: the manifest lists no image")
    records: dict[str, list[Record]] = {}
    seen: dict[str, dict[str, int]] = {}  # image id -> split -> line
    for line_no, row in enumerate(rows, start=2):
        where = f"{csv_path}:{line_no}"
        if not row["image"]:
            raise DataError(where, "empty image path")
        image_rel = manifest_path(row["image"], where, "image", allow_outside_root)
        mask_cell = row.get("mask", "")
        mask_path = (None if mask_cell in ("", ALL_BACKGROUND)
                     else base / manifest_path(mask_cell, where, "mask", allow_outside_root))
        split = row.get("split", "") or "pool"
        if split not in (*SPLITS, "pool"):
            raise DataError(where, f"unknown split {split!r} (expected one of {SPLITS})")
        earlier = seen.setdefault(image_rel, {})
        if earlier and (split in earlier or not {*earlier, split} <= {"valcl", "valpx"}):
            first = min(earlier.values())
            raise DataError(where, f"duplicate image {image_rel!r}: line {first} lists it already"
                            f" ({', '.join(sorted(earlier))}; only valpx may repeat valcl images)")
        earlier[split] = line_no
        records.setdefault(split, []).append(Record(
            id=image_rel, image_path=base / image_rel,
            label=_encode(row["label"], class_names, where),
            mask_path=mask_path, has_mask=mask_cell != "", source=where,
            group=row.get("group") or None,
        ))
    if class_names is None:
        top = max((r.label for recs in records.values() for r in recs), default=0)
        class_names = [str(i) for i in range(top + 1)]
    name = csv_path.stem
    no_root = "a CSV manifest's paths are relative to its own folder"
    if "pool" in records or not records:
        pool = records.pop("pool", [])
        fixed = [r for recs in records.values() for r in recs]
        if fixed:
            raise DataError(csv_path, "either every row has a split or none does")
        layout = layout_from_pool(
            name, class_names, pool, [], seed=seed, valcl_fraction=valcl_fraction,
            test_fraction=test_fraction, valpx_per_class=valpx_per_class,
            notes=[f"{len(pool)} images from {csv_path}"], folds=folds, fold=fold,
        )
        layout.unused["root"] = no_root
        return layout
    unused = {key: "the manifest's split column fixes the splits" for key in SPLIT_KEYS}
    unused["root"] = no_root
    return Layout(name, class_names, records, [f"splits as given in {csv_path}"], unused)


def manifest_mpp(csv_path: str | Path) -> float | None:
    """The manifest's ``mpp`` column (one positive value, empty cells allowed), or None without
    one; several values are an error (a run is tiled at one scale)."""
    csv_path = Path(csv_path)
    with io.StringIO(read_text(csv_path), newline="") as fh:
        reader = csv.DictReader(fh)
        if "mpp" not in [h.strip() for h in reader.fieldnames or []]:
            return None
        cells = {(row.get("mpp") or "").strip() for row in
                 ({(k or "").strip(): v for k, v in r.items()} for r in reader)} - {""}
    try:
        values = sorted({float(c) for c in cells})
    except ValueError:
        raise DataError(csv_path, f"mpp column: not a number among {sorted(cells)[:3]}") from None
    if any(not (v > 0 and v < 1e3) for v in values):
        raise DataError(csv_path, "mpp column: microns per pixel must be positive")
    if len(values) > 1:
        raise DataError(csv_path, f"mpp column holds several values ({', '.join(map(str, values))})"
                        ": a run is tiled at one scale; set data.mpp to the one to predict at")
    return values[0] if values else None
