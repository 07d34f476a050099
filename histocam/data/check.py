"""Validate a dataset and summarise it: every problem is reported with the file it concerns.

Errors (exit non-zero): missing or unreadable/truncated files (images, masks, ignore masks),
mask/image size mismatch, labels outside the encoding, duplicate ids, colour or non-integer masks,
empty splits. Warnings: images converted (grayscale, RGBA, 16-bit), size differing from
``image_sizes.txt``, masks that look like a lossy binary mask rather than a binary or instance map,
valpx not inside valcl.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from histocam.data.dataset import FileDataset, Record
from histocam.data.errors import DataError, Problem, Severity
from histocam.data.io import read_image, read_mask, read_mask_values
from histocam.data.open import DatasetSource, SplitDataset


@dataclass
class SplitSummary:
    n: int = 0
    per_class: Counter = field(default_factory=Counter)
    with_mask: int = 0
    sizes: Counter = field(default_factory=Counter)
    coverage: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    unreadable: int = 0
    readable_ids: set[str] = field(default_factory=set)
    masked_ids: set[str] = field(default_factory=set)


@dataclass
class CheckReport:
    name: str
    class_names: list[str]
    notes: list[str]
    splits: dict[str, SplitSummary]
    problems: list[Problem]
    total: SplitSummary = field(default_factory=SplitSummary)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is Severity.WARNING]


def _mask_problem(values: np.ndarray) -> tuple[Severity, str] | None:
    """(severity, description) of a mask that is neither binary nor an instance map, else None.

    Binary: one non-zero value. Instance map: labels close to a contiguous range 1..K (GlaS).
    Anything else (e.g. {1, 2, 253, 254, 255} from JPEG or antialiasing) is reported.
    """
    if np.issubdtype(values.dtype, np.floating) and not np.all(values == np.round(values)):
        return Severity.ERROR, "mask has non-integer values (expected a binary or instance label map)"
    uniq = np.unique(values[values != 0])
    if uniq.size <= 1 or uniq.max() <= 2 * uniq.size + 1:
        return None
    return Severity.WARNING, (f"mask is neither binary nor an instance map: {uniq.size} distinct "
                              f"values up to {uniq.max():g} (lossy compression or antialiasing?); "
                              "any value > 0 is foreground")


def _check_record(rec: Record, split: str, n_classes: int, summary: SplitSummary,
                  problems: list[Problem]) -> None:
    def report(severity: Severity, path: Path | str, message: str) -> None:
        problems.append(Problem(severity, str(path), message, split))

    if not 0 <= rec.label < n_classes:
        report(Severity.ERROR, rec.source or rec.image_path,
               f"label {rec.label} of {rec.id} is outside 0..{n_classes - 1}")
    if not rec.image_path.is_file():
        report(Severity.ERROR, rec.image_path, "image file not found")
        summary.unreadable += 1
        return
    try:
        image, conversions = read_image(rec.image_path)
    except DataError as exc:
        report(Severity.ERROR, rec.image_path, exc.problem)
        summary.unreadable += 1
        return
    summary.readable_ids.add(rec.id)
    for message in conversions:
        report(Severity.WARNING, rec.image_path, message)
    h, w = image.shape[:2]
    summary.sizes[(w, h)] += 1
    if rec.expected_wh is not None and rec.expected_wh != (w, h):
        report(Severity.WARNING, rec.image_path,
               f"size {w}x{h} differs from image_sizes.txt {rec.expected_wh[0]}x{rec.expected_wh[1]}")
    if not rec.has_mask:
        return
    if rec.ignore_path is not None:
        _check_ignore(rec, (h, w), report)
    if rec.mask_path is None:
        summary.with_mask += 1
        summary.masked_ids.add(rec.id)
        summary.coverage[rec.label].append(0.0)
        return
    if not rec.mask_path.is_file():
        report(Severity.ERROR, rec.mask_path, f"mask file of {rec.id} not found")
        return
    try:
        values = read_mask_values(rec.mask_path)
    except DataError as exc:
        report(Severity.ERROR, rec.mask_path, exc.problem)
        return
    if values.ndim == 3:
        if values.shape[2] >= 3 and not (values[..., :3] == values[..., :1]).all():
            report(Severity.ERROR, rec.mask_path, "mask is a colour image (channels differ)")
            return
        values = values[..., 0]
    if values.shape != (h, w):
        report(Severity.ERROR, rec.mask_path,
               f"mask size {values.shape[1]}x{values.shape[0]} does not match image {w}x{h}")
        return
    problem = _mask_problem(values)
    if problem:
        report(problem[0], rec.mask_path, problem[1])
    summary.with_mask += 1
    summary.masked_ids.add(rec.id)
    summary.coverage[rec.label].append(float((values > 0).mean()))


def _check_ignore(rec: Record, hw: tuple[int, int], report) -> None:
    if not rec.ignore_path.is_file():
        report(Severity.ERROR, rec.ignore_path, f"ignore mask of {rec.id} not found")
        return
    try:
        read_mask(rec.ignore_path, hw)
    except DataError as exc:
        report(Severity.ERROR, rec.ignore_path, f"ignore mask of {rec.id}: {exc.problem}")


def _check_generated(ds: SplitDataset, summary: SplitSummary) -> None:
    for i in range(len(ds)):
        sample = ds[i]
        h, w = sample.image.shape[:2]
        summary.sizes[(w, h)] += 1
        summary.readable_ids.add(sample.id)
        if sample.mask is not None:
            summary.masked_ids.add(sample.id)
            summary.with_mask += 1
            summary.coverage[sample.label].append(float(sample.mask.mean()))


def check_source(source: DatasetSource, splits: list[str] | None = None) -> CheckReport:
    """Read every sample of every split once and collect a summary and the problems."""
    problems: list[Problem] = []
    summaries: dict[str, SplitSummary] = {}
    names = splits or [s for s in ("train", "valcl", "valpx", "test") if s in _splits_of(source)]
    ids_by_split: dict[str, set[str]] = {}
    n_classes = len(source.class_names)
    for split in names:
        ds = source.dataset(split)
        summary = SplitSummary(n=len(ds))
        summary.per_class.update(ds.labels)
        ids = ds.ids
        for dup, count in Counter(ids).items():
            if count > 1:
                problems.append(Problem(Severity.ERROR, dup, f"duplicate id ({count}×)", split))
        ids_by_split[split] = set(ids)
        if len(ds) == 0:
            problems.append(Problem(Severity.ERROR, source.name, "split is empty", split))
        if isinstance(ds, FileDataset):
            for rec in ds.records:
                _check_record(rec, split, n_classes, summary, problems)
        else:
            _check_generated(ds, summary)
        summaries[split] = summary
    if {"valpx", "valcl"} <= ids_by_split.keys() and not ids_by_split["valpx"] <= ids_by_split["valcl"]:
        problems.append(Problem(Severity.WARNING, source.name,
                                "valpx is not a subset of valcl (the seed papers draw it from valcl)"))
    _add_missing_totals(problems, summaries)
    return CheckReport(source.name, source.class_names, list(source.notes), summaries, problems,
                       _unique_total(source, summaries))


def _unique_total(source: DatasetSource, summaries: dict[str, SplitSummary]) -> SplitSummary:
    """Readable images over the union of the splits (valpx ⊂ valcl would otherwise count twice)."""
    total = SplitSummary()
    listed: set[str] = set()
    for split, summary in summaries.items():
        ds = source.dataset(split)
        listed.update(ds.ids)
        for image_id, label in zip(ds.ids, ds.labels):
            if image_id in summary.readable_ids and image_id not in total.readable_ids:
                total.readable_ids.add(image_id)
                total.n += 1
                total.per_class[label] += 1
        total.masked_ids |= summary.masked_ids
    total.with_mask = len(total.masked_ids)
    total.unreadable = len(listed - total.readable_ids)
    return total


def _splits_of(source: DatasetSource) -> list[str]:
    splits = getattr(source, "splits", None)
    return list(splits) if splits is not None else ["train", "valcl", "valpx", "test"]


def _add_missing_totals(problems: list[Problem], summaries: dict[str, SplitSummary]) -> None:
    for split, summary in summaries.items():
        if summary.unreadable:
            problems.append(Problem(
                Severity.ERROR, f"split {split}",
                f"{summary.unreadable} of {summary.n} images missing or unreadable", split))
