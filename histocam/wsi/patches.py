"""A WSOL patch benchmark cut from annotated slides (``histocam data patches``): the protocol that
made CAMELYON16-512 (survey, Rony et al. 2023, Appendix B), written in the WSOL split-list layout.

Slides with an annotation file (GeoJSON or ASAP XML, ``histocam.wsi.annotations``) holding a
tumour region are tumour slides; slides without one (or whose annotation has no region but
exclusions, e.g. an empty QuPath export) are normal slides. Slides, not patches, are split into
train / valcl / test (per class of slide, seeded; or a ``slide,split`` CSV), so no slide gives
patches to two splits.
Patches are ``size``×``size`` at level 0 on the grid of stride ``size`` (no two overlap), fully
inside the slide.

Tissue mass test (steps 3–4), twice: at a low level (the tissue mask of the slide's thumbnail,
``tissue.slide_tissue``: optical density above the slide's glass colour, longer side at most 2048
pixels, i.e. about 10 pixels per 512-pixel patch side on a CAMELYON16 slide) the fraction of tissue
pixels in the patch must be ≥ p_t; then at level 0, the fraction of the patch's pixels whose optical
density above the same glass colour exceeds the same threshold (``tissue.tissue_pixels``) must be
≥ p_t too. The tissue sizes are in microns: a slide without MPP needs ``slide_mpp``.

Tumour patches (tumour slides only), steps 5–7: the patch's mask Y is the annotation rasterised at
level 0 (``annotations.regions_mask``), p_m its tumour fraction; patches with p_m < p0 are dropped.
Calibration: all patches of category 1 (p0 ≤ p_m ≤ p1) are kept; from category 2 (p_m > p1),
round(n₁ · p_n) patches are drawn, n₁ being the slide's category-1 count: each draw picks a bin
uniformly among the non-empty histogram bins (width 1/``bins``) above p1, then a patch uniformly in
it, without replacement.

Normal patches (normal slides only): per split, as many as the split's tumour patches n_m, n_m/h
from each of its h normal slides (the remainder to the first slides; a slide that runs out of tissue
patches leaves its share to the others); each slide's grid patches are visited in a uniformly random
order and accepted when they pass both tissue tests. Their mask is empty (all background).

Output (``out``): ``images/STEM/STEM_x{X}_y{Y}.png`` and, for tumour patches,
``masks/STEM/STEM_x{X}_y{Y}.png`` (tumour 255); ``classes.txt`` (normal, tumor); one folder per split
with ``image_ids.txt``, ``class_labels.txt``, ``image_sizes.txt``, ``localization.txt`` (``valpx``:
the first ``valpx_per_class`` patches of each class of ``valcl``); ``patches.csv`` (every patch:
split, slide, label, x, y, tissue fractions, p_m, category); ``summary.json``. The folder is its own
image root: ``histocam data check OUT`` reads it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from histocam.core.progress import track
from histocam.data.dataset import SPLITS
from histocam.data.errors import DataError
from histocam.data.io import read_text
from histocam.wsi.annotations import DEFAULT_EXCLUDE, Region, read_annotations, regions_mask
from histocam.wsi.grid import tile_grid
from histocam.wsi.reader import SlideReader
from histocam.wsi.scale import positive_mpp, slide_mpp
from histocam.wsi.tissue import TissueOptions, slide_tissue, tissue_pixels

CLASS_NAMES = ["normal", "tumor"]
SLIDE_SPLITS = ("train", "valcl", "test")


@dataclass
class PatchProtocol:
    """Survey Appendix B settings (defaults: the CAMELYON16-512 values)."""

    size: int = 512
    p_tissue: float = 0.10  # p_t
    p0: float = 0.20
    p1: float = 0.50
    p_n: float = 0.01
    bins: int = 20  # histogram of p_m with a delta of 0.05
    valcl_fraction: float = 0.2  # of the slides of each class
    test_fraction: float = 0.2
    valpx_per_class: int = 5
    seed: int = 0
    backend: str = "auto"
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    slide_mpp: float | None = None  # level-0 µm/px of slides whose file records none
    tissue: TissueOptions = field(default_factory=TissueOptions)

    def check(self) -> None:
        if self.size < 8:
            raise ValueError(f"--size {self.size}: patches must be at least 8 pixels")
        for name in ("p_tissue", "p0", "p1", "p_n", "valcl_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} {value}: must be in [0, 1]")
        if self.p0 > self.p1:
            raise ValueError(f"--p0 {self.p0} is above --p1 {self.p1}")
        if self.valcl_fraction + self.test_fraction >= 1.0:
            raise ValueError("--valcl-fraction + --test-fraction must leave slides for train")
        if self.bins < 1 or self.valpx_per_class < 1:
            raise ValueError("--bins and --valpx-per-class must be at least 1")
        if self.slide_mpp is not None:
            positive_mpp(self.slide_mpp, "--slide-mpp")


@dataclass
class Patch:
    slide: str
    x: int
    y: int
    label: int
    tissue_low: float
    tissue_level0: float = 0.0
    tumour: float = 0.0  # p_m
    category: int = 0  # 0 normal, 1 or 2 (Appendix B calibration)
    split: str = ""


@dataclass
class SlideEntry:
    path: Path
    stem: str
    annotation: Path | None
    split: str = ""


@dataclass
class BenchmarkSummary:
    out: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    slides: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def pair_annotations(slides: list[Path], annotations: list[Path]) -> list[SlideEntry]:
    """Each slide with the annotation file of the same stem. Files given by name must match a
    slide; folders give their ``.geojson`` and ``.xml`` files that match one (others are left).
    Two annotations for one slide are an error."""
    stems = [p.stem for p in slides]
    if len(set(stems)) != len(stems):
        dup = sorted({s for s in stems if stems.count(s) > 1})
        raise DataError(None, f"two slides share the name {dup[0]!r}: slide names must be unique")
    files: list[Path] = []
    for item in annotations:
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.is_file() and p.stem in stems
                            and p.suffix.lower() in (".geojson", ".xml"))
        elif item.is_file():
            if item.stem not in stems:
                raise DataError(item, f"no slide named {item.stem!r} among the slides given")
            files.append(item)
        else:
            raise DataError(item, "annotation file or folder not found")
    by_stem: dict[str, Path] = {}
    for f in files:
        if f.stem in by_stem and by_stem[f.stem].resolve() != f.resolve():
            raise DataError(f, f"a second annotation for slide {f.stem!r} (also {by_stem[f.stem]})")
        by_stem[f.stem] = f
    return [SlideEntry(p, p.stem, by_stem.get(p.stem)) for p in slides]


def read_split_file(path: Path) -> dict[str, str]:
    """``slide,split`` lines (a header line ``slide,split`` is allowed)."""
    table: dict[str, str] = {}
    for no, line in enumerate(read_text(path).splitlines(), start=1):
        fields = [f.strip() for f in line.split(",")]
        if not line.strip() or (no == 1 and fields[:2] == ["slide", "split"]):
            continue
        if len(fields) < 2 or fields[1] not in SLIDE_SPLITS:
            raise DataError(path, f"line {no}: expected 'slide,split' with split one of "
                            f"{', '.join(SLIDE_SPLITS)}")
        table[Path(fields[0]).stem] = fields[1]
    return table


def assign_splits(entries: list[SlideEntry], protocol: PatchProtocol,
                  fixed: dict[str, str] | None = None) -> None:
    """Slide-level splits: ``fixed`` (all slides must be in it) or, per class of slide, a seeded
    shuffle with round(n·test_fraction) test and round(n·valcl_fraction) valcl slides."""
    if fixed is not None:
        missing = [e.stem for e in entries if e.stem not in fixed]
        if missing:
            raise DataError(None, f"the split file gives no split for slide(s) {', '.join(missing)}")
        for e in entries:
            e.split = fixed[e.stem]
        return
    rng = np.random.default_rng([protocol.seed, 0x5B])
    for tumour in (True, False):
        group = [e for e in entries if (e.annotation is not None) == tumour]
        order = rng.permutation(len(group))
        n_test = int(round(len(group) * protocol.test_fraction))
        n_valcl = int(round(len(group) * protocol.valcl_fraction))
        for rank, i in enumerate(order):
            group[i].split = "test" if rank < n_test else "valcl" if rank < n_test + n_valcl \
                else "train"


class SlidePatches:
    """One slide open for sampling: its grid of low-level tissue patches and the level-0 test."""

    def __init__(self, entry: SlideEntry, protocol: PatchProtocol) -> None:
        self.entry, self.protocol = entry, protocol
        self.reader = SlideReader(entry.path, protocol.backend)
        size = protocol.size
        mpp, _ = slide_mpp(entry.path, self.reader.mpp, fallback=protocol.slide_mpp)
        _, tissue, t = slide_tissue(self.reader, mpp, protocol.tissue)
        self.glass, self.threshold = tissue.glass, tissue.threshold
        width, height = self.reader.dimensions
        grid = tile_grid((width, height), tissue.mask, t, tile=size, overlap=0, map_downsample=1)
        inside = (grid.positions[:, 0] + size <= width) & (grid.positions[:, 1] + size <= height)
        keep = inside & (grid.tissue >= protocol.p_tissue)
        self.positions = grid.positions[keep]
        self.tissue_low = grid.tissue[keep]

    def read(self, x: int, y: int) -> np.ndarray:
        return self.reader.read(int(x), int(y), self.protocol.size, self.protocol.size, 0)

    def tissue_level0(self, rgb: np.ndarray) -> float:
        return float(tissue_pixels(rgb, self.glass, self.threshold).mean())

    def close(self) -> None:
        self.reader.close()


def tumour_patches(slide: SlidePatches, regions: list[Region], rng: np.random.Generator
                   ) -> list[Patch]:
    """Steps 2–7 and the calibration of Appendix B on one tumour slide (module docstring)."""
    p = slide.protocol
    size = p.size
    targets = [r.bounds for r in regions if not r.exclude]
    found: list[Patch] = []
    for (x, y), low in zip(slide.positions.tolist(), slide.tissue_low.tolist()):
        if not any(x0 < x + size and y0 < y + size and x1 > x and y1 > y
                   for x0, y0, x1, y1 in targets):
            continue
        p_m = float(regions_mask(regions, x, y, size, size).mean())
        if p_m < p.p0:
            continue
        level0 = slide.tissue_level0(slide.read(x, y))
        if level0 < p.p_tissue:
            continue
        found.append(Patch(slide.entry.stem, x, y, 1, low, level0, p_m, 1 if p_m <= p.p1 else 2))
    first = [q for q in found if q.category == 1]
    second = [q for q in found if q.category == 2]
    quota = int(round(len(first) * p.p_n))
    bins: dict[int, list[Patch]] = {}
    for q in second:
        bins.setdefault(min(int(q.tumour * p.bins), p.bins - 1), []).append(q)
    chosen: list[Patch] = []
    while len(chosen) < quota and bins:
        key = sorted(bins)[int(rng.integers(len(bins)))]
        members = bins[key]
        chosen.append(members.pop(int(rng.integers(len(members)))))
        if not members:
            del bins[key]
    return sorted(first + chosen, key=lambda q: (q.y, q.x))


def _patch_name(q: Patch) -> str:
    return f"{q.slide}/{q.slide}_x{q.x}_y{q.y}.png"


def build_patch_benchmark(slides: list[Path], annotations: list[Path], out: str | Path,
                          protocol: PatchProtocol | None = None, split_file: Path | None = None,
                          progress: bool = False) -> BenchmarkSummary:
    """Cut the benchmark (module docstring) from ``slides`` into ``out``."""
    protocol = protocol or PatchProtocol()
    protocol.check()
    out = Path(out)
    if any((out / s / "image_ids.txt").exists() for s in SPLITS):
        raise DataError(out, "already holds split lists: choose an empty --out folder")
    entries = pair_annotations(list(slides), list(annotations))
    for entry in entries:  # an annotation without a tumour region (e.g. an empty export): normal
        if entry.annotation is not None and not any(
                not r.exclude for r in read_annotations(entry.annotation, protocol.exclude)):
            entry.annotation = None
    if not any(e.annotation is not None for e in entries):
        raise DataError(None, "no slide has an annotated tumour region: tumour slides need their "
                        "annotation file (same name as the slide) among --annotations")
    assign_splits(entries, protocol, read_split_file(split_file) if split_file else None)
    rng = np.random.default_rng([protocol.seed, 0xB])
    summary = BenchmarkSummary(out)
    steps = entries
    if progress:
        steps = track(entries, "slides", unit="slides")
    patches: list[Patch] = []
    open_normals: dict[str, list[SlidePatches]] = {s: [] for s in SLIDE_SPLITS}
    for entry in steps:
        slide = SlidePatches(entry, protocol)
        if entry.annotation is None:
            open_normals[entry.split].append(slide)
            continue
        found = tumour_patches(slide, read_annotations(entry.annotation, protocol.exclude), rng)
        slide.close()
        if not found:
            summary.warnings.append(f"{entry.path}: no tumour patch passed the tests")
        for q in found:
            q.split = entry.split
        patches += found
    for split in SLIDE_SPLITS:
        n_m = sum(q.split == split for q in patches)
        normals = open_normals[split]
        if n_m and not normals:
            summary.warnings.append(f"{split}: {n_m} tumour patches but no normal slide: the split "
                                    "is not balanced")
        got = _sample_normals(normals, n_m, rng)
        for q in got:
            q.split = split
        if normals and len(got) < n_m:
            summary.warnings.append(f"{split}: {len(got)} normal patches for {n_m} tumour patches: "
                                    "the normal slides have no more tissue patches")
        patches += got
        for slide in normals:
            slide.close()
    _write(out, entries, patches, protocol, summary)
    return summary


def _sample_normals(normals: list[SlidePatches], n_m: int, rng: np.random.Generator) -> list[Patch]:
    """n_m patches over the h normal slides: n_m // h each (+1 for the first n_m % h), each slide's
    grid patches visited in a uniformly random order and kept when they pass the level-0 tissue
    test; what a slide cannot give is shared among the others, in turn."""
    taken: dict[int, list[Patch]] = {i: [] for i in range(len(normals))}
    orders = {i: rng.permutation(len(s.positions)).tolist() for i, s in enumerate(normals)}
    missing = n_m
    open_slides = list(range(len(normals)))
    while missing > 0 and open_slides:
        h = len(open_slides)
        shares = [missing // h + (1 if k < missing % h else 0) for k in range(h)]
        for share, i in list(zip(shares, open_slides)):
            slide = normals[i]
            while share > 0 and orders[i]:
                j = orders[i].pop(0)
                x, y = (int(v) for v in slide.positions[j])
                level0 = slide.tissue_level0(slide.read(x, y))
                if level0 >= slide.protocol.p_tissue:
                    taken[i].append(Patch(slide.entry.stem, x, y, 0, float(slide.tissue_low[j]),
                                          level0))
                    share -= 1
                    missing -= 1
            if not orders[i]:
                open_slides.remove(i)
    return [q for i in sorted(taken) for q in sorted(taken[i], key=lambda q: (q.y, q.x))]


def _write(out: Path, entries: list[SlideEntry], patches: list[Patch], protocol: PatchProtocol,
           summary: BenchmarkSummary) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    size = protocol.size
    lists: dict[str, list[Patch]] = {s: [] for s in SPLITS}
    for entry in entries:  # one slide open at a time
        mine = [q for q in patches if q.slide == entry.stem]
        if not mine:
            continue
        reader = SlideReader(entry.path, protocol.backend)
        regions = read_annotations(entry.annotation, protocol.exclude) if entry.annotation else []
        (out / "images" / entry.stem).mkdir(parents=True, exist_ok=True)
        for q in mine:
            name = _patch_name(q)
            Image.fromarray(reader.read(q.x, q.y, size, size, 0)).save(out / "images" / name)
            if q.label == 1:
                (out / "masks" / q.slide).mkdir(parents=True, exist_ok=True)
                mask = regions_mask(regions, q.x, q.y, size, size)
                Image.fromarray(mask.astype(np.uint8) * 255).save(out / "masks" / name)
        reader.close()
    for q in patches:
        lists[q.split].append(q)
    valcl = lists["valcl"]
    lists["valpx"] = [q for c in (1, 0) for q in [p for p in valcl if p.label == c]
                      [:protocol.valpx_per_class]]
    for split, members in lists.items():
        if not members:
            continue
        folder = out / split
        folder.mkdir(exist_ok=True)
        ids = [f"images/{_patch_name(q)}" for q in members]
        (folder / "image_ids.txt").write_text("\n".join(ids) + "\n")
        (folder / "class_labels.txt").write_text(
            "".join(f"{i},{q.label}\n" for i, q in zip(ids, members)))
        (folder / "image_sizes.txt").write_text("".join(f"{i},{size},{size}\n" for i in ids))
        (folder / "localization.txt").write_text("".join(
            f"{i},{'masks/' + _patch_name(q) if q.label == 1 else ''},\n"
            for i, q in zip(ids, members)))
        summary.counts[split] = {CLASS_NAMES[c]: sum(q.label == c for q in members) for c in (0, 1)}
    with (out / "patches.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["split", "slide", "label", "x", "y", "size", "tissue_low", "tissue_level0",
                         "tumour_fraction", "category"])
        for q in patches:
            writer.writerow([q.split, q.slide, CLASS_NAMES[q.label], q.x, q.y, size,
                             f"{q.tissue_low:.4f}", f"{q.tissue_level0:.4f}", f"{q.tumour:.4f}",
                             q.category])
    summary.slides = {s: [e.stem for e in entries if e.split == s] for s in SLIDE_SPLITS}
    (out / "summary.json").write_text(json.dumps({
        "protocol": {**asdict(protocol), "exclude": list(protocol.exclude)},
        "source": "survey (Rony et al. 2023) Appendix B, CAMELYON16-512 construction",
        "slides": {e.stem: {"path": str(e.path), "split": e.split,
                            "annotation": str(e.annotation) if e.annotation else None,
                            "class": "tumor" if e.annotation else "normal"} for e in entries},
        "counts": summary.counts, "warnings": summary.warnings}, indent=1))
