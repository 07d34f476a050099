"""The WSOL split-list format of the seed papers ("wsol-done-right", Choe et al. 2020).

One folder per split (``train``, ``valcl``, ``valpx``, ``test``) with ``image_ids.txt`` (one
relative path per line), ``class_labels.txt`` (``path,int``), ``image_sizes.txt`` (``path,W,H``) and
``localization.txt`` (``path,mask_path,ignore_path``; an empty mask path means an all-background mask,
as for CAMELYON16 normal patches). Paths are relative to a data root given separately.

The ignore path (optional, empty = nothing ignored) names a mask of pixels left out of the
localisation metrics, as in the reference evaluator (wsolevaluation): the ignored pixels are that
mask's pixels > 0 minus the foreground. The lists fix the splits, so the split-drawing keys
(``split_seed``, ``valcl_fraction``, ``test_fraction``, ``valpx_per_class``) are not used.
"""

from __future__ import annotations

from pathlib import Path

from histocam.data.config import SPLIT_KEYS
from histocam.data.dataset import SPLITS, Layout, Record, resolve_path
from histocam.data.errors import DataError
from histocam.data.io import read_text

LIST_FILES = ("image_ids.txt", "class_labels.txt", "image_sizes.txt", "localization.txt")

#: Why WSOL split lists do not read the split-drawing keys.
FIXED_SPLITS = {key: "WSOL split lists fix the splits (train/valcl/valpx/test as listed)"
                for key in SPLIT_KEYS}


def is_wsol_lists(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and any((path / s / "image_ids.txt").is_file() for s in SPLITS)


def _read_lines(path: Path) -> list[tuple[int, list[str]]]:
    if not path.is_file():
        raise DataError(path, "list file not found")
    out = []
    for no, line in enumerate(read_text(path).splitlines(), start=1):
        if line.strip():
            out.append((no, [field.strip() for field in line.split(",")]))
    return out


def _keyed(path: Path, n_fields: int) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for no, fields in _read_lines(path):
        if len(fields) < n_fields:
            raise DataError(path, f"line {no}: expected {n_fields} comma-separated fields")
        if fields[0] in table:
            raise DataError(path, f"line {no}: duplicate id {fields[0]!r}")
        table[fields[0]] = fields[1:]
    return table


def read_wsol_split(split_dir: Path, root: Path, n_classes: int | None = None) -> list[Record]:
    """Records of one split folder; paths are resolved against ``root``."""
    ids = [fields[0] for _, fields in _read_lines(split_dir / "image_ids.txt")]
    labels = _keyed(split_dir / "class_labels.txt", 2)
    sizes = _keyed(split_dir / "image_sizes.txt", 3) if (split_dir / "image_sizes.txt").is_file() else {}
    masks = _keyed(split_dir / "localization.txt", 2) if (split_dir / "localization.txt").is_file() else {}
    records: list[Record] = []
    seen: set[str] = set()
    for image_id in ids:
        if image_id in seen:
            raise DataError(split_dir / "image_ids.txt", f"duplicate id {image_id!r}")
        seen.add(image_id)
        if image_id not in labels:
            raise DataError(split_dir / "class_labels.txt", f"no label for {image_id!r}")
        try:
            label = int(labels[image_id][0])
        except ValueError:
            raise DataError(split_dir / "class_labels.txt",
                            f"label {labels[image_id][0]!r} of {image_id!r} is not an integer") from None
        if label < 0 or (n_classes is not None and label >= n_classes):
            raise DataError(split_dir / "class_labels.txt",
                            f"label {label} of {image_id!r} is outside 0..{(n_classes or 1) - 1}")
        wh = None
        if image_id in sizes:
            try:
                wh = (int(sizes[image_id][0]), int(sizes[image_id][1]))
            except ValueError:
                raise DataError(split_dir / "image_sizes.txt", f"size {sizes[image_id][:2]} of "
                                f"{image_id!r} is not two integers") from None
        has_mask = image_id in masks
        mask_rel = masks[image_id][0] if has_mask else ""
        ignore_rel = masks[image_id][1] if has_mask and len(masks[image_id]) > 1 else ""
        records.append(Record(
            id=image_id,
            image_path=resolve_path(root, image_id),
            label=label,
            mask_path=resolve_path(root, mask_rel) if mask_rel else None,
            has_mask=has_mask,
            expected_wh=wh,
            source=str(split_dir / "image_ids.txt"),
            ignore_path=resolve_path(root, ignore_rel) if ignore_rel else None,
        ))
    return records


def read_wsol_lists(list_dir: str | Path, root: str | Path, class_names: list[str]) -> Layout:
    """Read every split folder present under ``list_dir`` (e.g. ``GLAS/fold-0``)."""
    list_dir, root = Path(list_dir), Path(root)
    if not is_wsol_lists(list_dir):
        raise DataError(list_dir, f"no split folders ({', '.join(SPLITS)}) with image_ids.txt")
    if not root.is_dir():
        raise DataError(root, "data root folder not found")
    if not class_names:
        raise DataError(list_dir, "no class names given for these split lists")
    n = len(class_names)
    splits = {s: read_wsol_split(list_dir / s, root, n) for s in SPLITS if (list_dir / s).is_dir()}
    notes = [f"lists from {list_dir}, images resolved against {root}"]
    return Layout(list_dir.name, class_names, splits, notes, dict(FIXED_SPLITS))
