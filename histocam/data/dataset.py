"""Datasets as lazily loaded lists of records, one per split.

A reader turns a file layout into ``Record`` lists; ``FileDataset`` loads them into ``Sample``s on
access. Procedural datasets (synthetic) implement the same small interface: ``len``, indexing
returning a ``Sample``, ``ids``, ``labels``, ``has_mask``, ``class_names``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from histocam.data.errors import DataError
from histocam.data.io import read_image, read_mask
from histocam.data.sample import Sample

SPLITS = ("train", "valcl", "valpx", "test")


@dataclass(frozen=True)
class Record:
    """Where one sample lives. ``mask_path`` None with ``has_mask`` True = all-background mask.

    ``ignore_path``: optional mask of pixels left out of the localisation metrics (the third field
    of WSOL ``localization.txt``); foreground pixels are never ignored. ``group``: the patient (or
    slide) the image comes from, when known; cross-validation folds never split a group.
    """

    id: str
    image_path: Path
    label: int
    mask_path: Path | None
    has_mask: bool
    expected_wh: tuple[int, int] | None = None  # from image_sizes.txt, checked by `data check`
    source: str | None = None  # the list/CSV file that named this record, for messages
    ignore_path: Path | None = None
    group: str | None = None


class FileDataset:
    """One split of an on-disk dataset. Indexing reads the image (and mask) from disk."""

    def __init__(self, records: list[Record], class_names: list[str], name: str, split: str):
        self.records = records
        self.class_names = list(class_names)
        self.name = name
        self.split = split

    def __len__(self) -> int:
        return len(self.records)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    @property
    def has_mask(self) -> list[bool]:
        return [r.has_mask for r in self.records]

    def __getitem__(self, index: int) -> Sample:
        rec = self.records[index]
        image, warnings = read_image(rec.image_path)
        if not 0 <= rec.label < len(self.class_names):
            raise DataError(
                rec.source or rec.image_path,
                f"label {rec.label} of {rec.id} is outside the encoding {self.class_names}",
            )
        mask = None
        if rec.has_mask:
            if rec.mask_path is None:
                mask = np.zeros(image.shape[:2], dtype=bool)
            else:
                mask = read_mask(rec.mask_path, image.shape[:2])
        ignore = None
        if rec.ignore_path is not None and mask is not None:
            ignore = read_ignore(rec.ignore_path, image.shape[:2], rec.id)
            ignore &= ~mask  # as wsolevaluation: the ignore region minus the foreground
        return Sample(image, rec.label, mask, rec.id, rec.image_path, warnings, ignore=ignore)

    def __repr__(self) -> str:
        return f"FileDataset({self.name!r}, split={self.split!r}, n={len(self)})"


def read_ignore(path: Path, expected_hw: tuple[int, int], image_id: str) -> np.ndarray:
    """An ignore mask (value > 0 = ignored); a missing or unreadable file is a ``DataError``."""
    try:
        return read_mask(path, expected_hw)
    except DataError as exc:
        raise DataError(path, f"ignore mask of {image_id}: {exc.problem}") from exc


def _normalise(name: str) -> str:
    return name.replace(" ", "_").lower()


def resolve_path(root: Path, relative: str) -> Path:
    """Join ``relative`` to ``root``, matching folder names that differ only in spaces/underscores.

    The WSOL lists spell the GlaS folder ``Warwick_QU_Dataset_(Released_2016_07_08)`` while the
    official release is ``Warwick QU Dataset (Released 2016_07_08)``; both resolve to the folder that
    exists. Returns the plain join when no match exists (the caller reports it as missing).
    """
    direct = root / relative
    if direct.exists():
        return direct
    current = root
    for part in Path(relative).parts:
        candidate = current / part
        if not candidate.exists() and current.is_dir():
            matches = [c for c in current.iterdir() if _normalise(c.name) == _normalise(part)]
            if len(matches) == 1:
                candidate = matches[0]
        current = candidate
    return current if current.exists() else direct


@dataclass
class Layout:
    """What a reader found: records per split, the class encoding, and notes for the user.

    ``unused``: ``DataConfig`` keys this layout did not read, each with the reason (e.g. split
    lists fix their splits, so ``split_seed`` is unused); ``open_source`` rejects them when set.
    """

    name: str
    class_names: list[str]
    splits: dict[str, list[Record]]
    notes: list[str]
    unused: dict[str, str] = field(default_factory=dict)

    def dataset(self, split: str) -> FileDataset:
        """The split's images; a split the files do not list has none."""
        if split not in SPLITS:
            raise KeyError(f"{self.name} has no split {split!r} (splits: {', '.join(SPLITS)})")
        return FileDataset(self.splits.get(split, []), self.class_names, self.name, split)


def layout_from_pool(
    name: str,
    class_names: list[str],
    pool: list[Record],
    test: list[Record],
    *,
    seed: int,
    valcl_fraction: float,
    test_fraction: float,
    valpx_per_class: int,
    notes: list[str],
    folds: int | None = None,
    fold: int | None = None,
) -> Layout:
    """Build the four splits from a labelled pool (and an optional fixed test set) by seed.

    When every record names its group (patient), the splits are drawn by group
    (``splits.make_group_splits``): no patient is in two of train, valcl and test.
    With ``folds`` the pool is cut into group-disjoint cross-validation folds
    (``splits.make_fold_splits``): fold ``fold`` is the test split and the fixed test set, if any,
    is not used.
    """
    from histocam.data.splits import make_fold_splits, make_group_splits, make_splits

    ids, labels, has_mask = [r.id for r in pool], [r.label for r in pool], [r.has_mask for r in pool]
    unused = {}
    if any(r.group is not None for r in pool) and not all(r.group is not None for r in pool):
        missing = next(r for r in pool if r.group is None)
        raise DataError(missing.source or missing.image_path,
                        f"image {missing.id} has no group (patient) while others have one; give "
                        "every image its group, or none")
    if folds is not None:
        grouped = all(r.group is not None for r in pool)
        groups = [r.group if grouped else r.id for r in pool]
        try:
            parts = make_fold_splits(ids, labels, has_mask, groups, folds=folds, fold=fold,
                                     seed=seed, valcl_fraction=valcl_fraction,
                                     valpx_per_class=valpx_per_class)
        except ValueError as exc:
            raise DataError(pool[0].source if pool else None, f"data.folds: {exc}") from exc
        splits = {s: [pool[i] for i in idx] for s, idx in parts.items()}
        kind = (f"{len(set(groups))} patients" if grouped else
                f"{len(pool)} images (no patient is known: folds are cut by image)")
        notes.append(f"cross-validation fold {fold} of {folds} over {kind}, drawn with seed {seed}: "
                     f"test = {len(splits['test'])} images of "
                     f"{len({r.group or r.id for r in splits['test']})} patients; valcl = "
                     f"{len(splits['valcl'])} images of other patients ({valcl_fraction:.0%} of the "
                     f"rest), valpx {valpx_per_class} per class from valcl")
        if test:
            notes.append(f"the dataset's own {len(test)} test images are not used in "
                         "cross-validation (remove data.folds to test on them)")
        unused["test_fraction"] = "with data.folds the test split is a fold"
        return Layout(name, class_names, splits, notes, unused)
    carve_test = test_fraction if not test else 0.0
    grouped = bool(pool) and all(r.group is not None for r in pool)
    by = "patient" if grouped else "image"
    if not test and test_fraction > 0:
        notes.append(f"no test images: about {test_fraction:.0%} of the pool, stratified by class "
                     f"and drawn by {by}, is held out as test")
    split_kwargs = dict(seed=seed, valcl_fraction=valcl_fraction, test_fraction=carve_test,
                        valpx_per_class=valpx_per_class)
    parts = (make_group_splits(ids, labels, has_mask, [r.group for r in pool], **split_kwargs)
             if grouped else make_splits(ids, labels, has_mask, **split_kwargs))
    splits = {s: [pool[i] for i in idx] for s, idx in parts.items()}
    if test:
        splits["test"] = test
    notes.append(f"splits drawn by {by} with seed {seed} (valcl about {valcl_fraction:.0%}, "
                 f"valpx {valpx_per_class} per class from valcl)"
                 + ("; no patient is in two of train, valcl and test" if grouped else ""))
    if test:
        unused["test_fraction"] = (f"the dataset's own {len(test)} test images form the test split; "
                                   "test_fraction is used only without test images")
    return Layout(name, class_names, splits, notes, unused)
