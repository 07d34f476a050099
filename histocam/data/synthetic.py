"""The embedded synthetic H&E benchmark: ``synthetic-colon`` and ``synthetic-node``.

Sample i of (domain, split, seed) is a pure function of those and the knobs: nothing is stored, any
size works, and the same index gives byte-identical pixels in any process. ``write_synthetic``
materialises a dataset in the WSOL split-list layout, so the real-data readers read it back.

Domains (see ``synth_colon`` and ``synth_node``): colon-like glands (benign/malignant, GlaS-like
foreground fractions) and lymph-node-like tiles (normal with empty masks / tumour clusters).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from histocam.core.progress import track
from histocam.data.config import SyntheticConfig
from histocam.data.dataset import SPLITS
from histocam.data.errors import StorageError
from histocam.data.sample import Sample
from histocam.data.synth_colon import render_colon
from histocam.data.synth_node import render_node

log = logging.getLogger("histocam")

DOMAINS = {"colon": (render_colon, ["benign", "malignant"]),
           "node": (render_node, ["normal", "tumor"])}
_SPLIT_CODE = {"train": 1, "valcl": 2, "test": 3}


class SyntheticSplit:
    """One split of a synthetic domain; indexing renders (or loads from cache) the sample."""

    def __init__(self, domain: str, split: str, config: SyntheticConfig) -> None:
        if domain not in DOMAINS:
            raise KeyError(f"unknown synthetic domain {domain!r} (known: {sorted(DOMAINS)})")
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r} (known: {SPLITS})")
        self.domain, self.split, self.config = domain, split, config
        self.name = f"synthetic-{domain}"
        self.class_names = DOMAINS[domain][1]
        base = "valcl" if split == "valpx" else split
        n = {"train": config.n_train, "valcl": config.n_valcl, "test": config.n_test}[base]
        labels = _labels(domain, base, config, n)
        indices = np.arange(n)
        if split == "valpx":  # B-LOC set: the first k images of each class of valcl (valpx ⊂ valcl)
            k = config.valpx_per_class or (3 if domain == "colon" else 5)
            indices = np.sort(np.concatenate([np.flatnonzero(labels == c)[:k] for c in (0, 1)]))
        self._base = base
        self._indices = indices
        self._labels = labels[indices]

    def __len__(self) -> int:
        return len(self._indices)

    @property
    def ids(self) -> list[str]:
        return [f"{self.domain}-{self._base}-{i:05d}" for i in self._indices]

    @property
    def labels(self) -> list[int]:
        return self._labels.tolist()

    @property
    def has_mask(self) -> list[bool]:
        return [True] * len(self)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        i = int(self._indices[index])
        label = int(self._labels[index])
        image, mask = render_cached(self.domain, self._base, i, label, self.config)
        return Sample(image, label, mask, self.ids[index], None)

    def __repr__(self) -> str:
        return f"SyntheticSplit({self.domain!r}, split={self.split!r}, n={len(self)})"


def _labels(domain: str, split: str, config: SyntheticConfig, n: int) -> np.ndarray:
    n_pos = int(round(config.positive_fraction * n))
    labels = np.array([1] * n_pos + [0] * (n - n_pos))
    rng = np.random.default_rng([config.seed, _domain_code(domain), _SPLIT_CODE[split], 0])
    return labels[rng.permutation(n)]


def _domain_code(domain: str) -> int:
    return list(DOMAINS).index(domain) + 1


#: Bumped per domain whenever its renderer changes what it draws. It keys the tile cache and the
#: dataset identity of stored CAMs, so stale tiles or teacher maps are never used.
GENERATOR_VERSIONS = {"colon": 2, "node": 1}


def generator_version(dataset: str) -> int | None:
    """The renderer version behind a ``synthetic-<domain>`` dataset name; None for other datasets."""
    domain = dataset.removeprefix("synthetic-")
    return GENERATOR_VERSIONS.get(domain) if dataset.startswith("synthetic-") else None


def _knob_hash(domain: str, config: SyntheticConfig) -> str:
    knobs = config.model_dump(exclude={"cache_dir", "n_train", "n_valcl", "n_test",
                                       "valpx_per_class", "positive_fraction"})
    knobs["generator_version"] = GENERATOR_VERSIONS[domain]
    return hashlib.sha1(repr(sorted(knobs.items())).encode()).hexdigest()[:12]


def render_sample(domain: str, split: str, index: int, label: int,
                  config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """The pure function behind every synthetic sample: (image uint8 H×W×3, mask bool H×W)."""
    rng = np.random.default_rng([config.seed, _domain_code(domain), _SPLIT_CODE[split], index + 1])
    return DOMAINS[domain][0](rng, label, config.size, config)


def render_cached(domain: str, split: str, index: int, label: int,
                  config: SyntheticConfig) -> tuple[np.ndarray, np.ndarray]:
    """``render_sample``, kept in ``config.cache_dir`` when set.

    A cache entry that cannot be decoded, or holds arrays of another shape, is rendered again and
    replaced (a warning names it): the cache holds nothing that cannot be made again. An I/O error
    of the cache folder itself (a full disk, no permission) is a ``StorageError`` naming the file:
    the sample is fine, the machine is not.
    """
    if config.cache_dir is None:
        return render_sample(domain, split, index, label, config)
    folder = Path(config.cache_dir) / f"{domain}-{_knob_hash(domain, config)}"
    path = folder / f"{split}-{index:05d}-{label}.npz"
    cached = _read_cache_entry(path, config.size)
    if cached is not None:
        return cached
    image, mask = render_sample(domain, split, index, label, config)
    _write_cache_entry(path, image, mask)
    return image, mask


def _read_cache_entry(path: Path, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The (image, mask) stored at ``path``; None when absent or corrupt (warned)."""
    try:
        with path.open("rb") as fh:
            data = np.load(fh, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive")
            image, mask = data["image"], data["mask"]
    except FileNotFoundError:
        return None
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError) as exc:
        problem = f"undecodable ({type(exc).__name__}: {exc})"
    except OSError as exc:
        raise StorageError(exc.errno, f"cannot read the synthetic cache ({exc.strerror or exc})",
                           str(path)) from exc
    else:
        if (image.shape, image.dtype, mask.shape, mask.dtype) == (
                (size, size, 3), np.uint8, (size, size), np.bool_):
            return image, mask
        problem = f"holds {image.dtype} {image.shape} and {mask.dtype} {mask.shape}"
    log.warning("%s: corrupt synthetic cache entry (%s): rendered again", path, problem)
    return None


def _save_npz(fh, image: np.ndarray, mask: np.ndarray) -> None:
    np.savez_compressed(fh, image=image, mask=mask)


def _write_cache_entry(path: Path, image: np.ndarray, mask: np.ndarray) -> None:
    """Store one sample atomically (a temporary file renamed over ``path``, removed on failure);
    concurrent writers of one entry write the same bytes, the last rename wins."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            _save_npz(fh, image, mask)
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise StorageError(exc.errno, f"cannot write the synthetic cache ({exc.strerror or exc})",
                           str(path)) from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


class SyntheticSource:
    """All splits of one synthetic domain (the ``DatasetSource`` interface)."""

    def __init__(self, domain: str, config: SyntheticConfig | None = None) -> None:
        self.domain = domain
        self.config = config or SyntheticConfig()
        self.name = f"synthetic-{domain}"
        self.class_names = DOMAINS[domain][1]
        self.splits = list(SPLITS)
        self.notes = [f"generated on the fly: seed {self.config.seed}, {self.config.size}², "
                      f"stain_shift {self.config.stain_shift}"]

    def dataset(self, split: str) -> SyntheticSplit:
        return SyntheticSplit(self.domain, split, self.config)


def write_synthetic(domain: str, out: str | Path, config: SyntheticConfig | None = None,
                    progress: bool = False) -> Path:
    """Write a synthetic dataset in the WSOL split-list layout under ``out``.

    Layout: ``images/<id>.png``, ``masks/<id>.png`` (tumour-free node tiles get an empty mask path,
    i.e. all background, as CAMELYON16 normal patches), ``<split>/{image_ids,class_labels,
    image_sizes,localization}.txt`` and ``classes.txt``. Read back with ``open_source(out)``.
    """
    from PIL import Image

    out = Path(out)
    source = SyntheticSource(domain, config)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    (out / "classes.txt").write_text("\n".join(source.class_names) + "\n")
    written: set[str] = set()
    for split in SPLITS:
        ds = source.dataset(split)
        lines: dict[str, list[str]] = {f: [] for f in ("ids", "labels", "sizes", "loc")}
        iterator = range(len(ds))
        if progress:
            iterator = track(iterator, f"{domain} {split}", unit="images")
        for i in iterator:
            image_id = ds.ids[i]
            rel_image = f"images/{image_id}.png"
            rel_mask = f"masks/{image_id}.png"
            if image_id not in written:
                sample = ds[i]
                Image.fromarray(sample.image).save(out / rel_image)
                if sample.mask.any() or domain != "node":
                    Image.fromarray(sample.mask.astype(np.uint8) * 255).save(out / rel_mask)
                written.add(image_id)
            label = ds.labels[i]
            lines["ids"].append(rel_image)
            lines["labels"].append(f"{rel_image},{label}")
            lines["sizes"].append(f"{rel_image},{source.config.size},{source.config.size}")
            mask_field = rel_mask if (out / rel_mask).exists() else ""
            lines["loc"].append(f"{rel_image},{mask_field},")
        split_dir = out / split
        split_dir.mkdir(exist_ok=True)
        for key, name in (("ids", "image_ids"), ("labels", "class_labels"),
                          ("sizes", "image_sizes"), ("loc", "localization")):
            (split_dir / f"{name}.txt").write_text("\n".join(lines[key]) + "\n")
    return out
