"""Open any supported dataset by registered name or path (format detected from the files)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Protocol

from histocam.core.registry import Registry
from histocam.data.config import SYNTHETIC_DATASETS, DataConfig
from histocam.data.csv_manifest import read_class_names, read_csv_manifest
from histocam.data.dataset import Layout
from histocam.data.errors import DataError
from histocam.data.glas import GLAS_CLASSES, find_release, read_glas
from histocam.data.io import read_text
from histocam.data.sample import Sample
from histocam.data.wsol_lists import FIXED_SPLITS, is_wsol_lists, read_wsol_lists

CAMELYON_CLASSES = ["normal", "tumor"]

#: Class names of the benchmarks whose WSOL split lists the seed papers released, keyed by the
#: lower-cased folder name (``wsol-done-right-splits/GLAS/fold-k``, ``.../CAMELYON512/fold-k``).
BENCHMARK_CLASSES = {
    "glas": GLAS_CLASSES,
    "camelyon512": CAMELYON_CLASSES,
    "camelyon16": CAMELYON_CLASSES,
    "camelyon16-512": CAMELYON_CLASSES,
    "camelyon16_512": CAMELYON_CLASSES,
}
_FOLD_FOLDER = re.compile(r"fold-\d+")


class SplitDataset(Protocol):
    class_names: list[str]
    name: str
    split: str

    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Sample: ...
    @property
    def ids(self) -> list[str]: ...
    @property
    def labels(self) -> list[int]: ...
    @property
    def has_mask(self) -> list[bool]: ...


class DatasetSource(Protocol):
    """A dataset with its splits (``Layout`` for files, ``SyntheticSource`` for generated data)."""

    name: str
    class_names: list[str]
    notes: list[str]

    def dataset(self, split: str) -> SplitDataset: ...


DATASETS: Registry = Registry("dataset")


def _glas(config: DataConfig) -> DatasetSource:
    if config.root is None:
        raise DataError(None, "dataset 'glas' needs root: the GlaS release folder")
    return _open_glas(Path(config.root).expanduser(), config, root_read=True)


DATASETS.register("glas")(_glas)


def _synthetic(domain: str):
    def factory(config: DataConfig) -> DatasetSource:
        from histocam.data.synthetic import SyntheticSource

        return SyntheticSource(domain, config.synthetic)

    return factory


for _name, _domain in SYNTHETIC_DATASETS.items():
    DATASETS.register(_name)(_synthetic(_domain))


def _split_kwargs(config: DataConfig, valcl: float, valpx: int) -> dict[str, Any]:
    return dict(
        seed=config.split_seed,
        valcl_fraction=config.valcl_fraction if config.valcl_fraction is not None else valcl,
        test_fraction=config.test_fraction,
        valpx_per_class=config.valpx_per_class or valpx,
        folds=config.folds,
        fold=config.fold,
    )


def _reject_unused(config: DataConfig, where: Path, unused: dict[str, str],
                   class_names: list[str] | None = None) -> None:
    """A ``DataConfig`` key set (to a non-default value) that the dataset at ``where`` does not read
    is an error. ``unused``: key -> why it is not read. ``classes`` equal to the dataset's own
    ``class_names`` is accepted: it changes nothing."""
    changed = config.changed_keys()
    unused = {key: why for key, why in unused.items() if key in changed}
    if "classes" in unused and config.classes == class_names:
        del unused["classes"]
    if unused:
        raise DataError(where, "; ".join(
            f"data.{key} is set ({getattr(config, key)!r}) but not used: {why}"
            for key, why in unused.items()) + "; remove it from the config")


def _open_glas(path: Path, config: DataConfig, root_read: bool = False) -> Layout:
    layout = read_glas(path, **_split_kwargs(config, 18 / 85, 3))
    if not root_read:
        layout.unused["root"] = ("the GlaS release folder is data.dataset itself (data.root is "
                                 "read only with dataset: glas)")
    _reject_unused(config, path, layout.unused, layout.class_names)
    return layout


def benchmark_of(list_dir: Path) -> str | None:
    """The released benchmark a WSOL list folder belongs to, from folder names only.

    The folder's own name, or its parent's when it is a ``fold-k`` folder (the released lists are
    ``GLAS/fold-0`` .. ``GLAS/fold-4``), must equal a key of ``BENCHMARK_CLASSES`` (any case).
    Nothing else in the path counts: ``/home/douglas/lists`` is not GlaS.
    """
    path = Path(os.path.abspath(list_dir))
    name = path.name
    if _FOLD_FOLDER.fullmatch(name.lower()):
        name = path.parent.name
    return name if name.lower() in BENCHMARK_CLASSES else None


def list_class_names(list_dir: Path, config: DataConfig) -> list[str]:
    """Class names of WSOL lists: ``data.classes``, else ``classes.txt`` in the list folder, else
    those of the released benchmark the folder is named after (``benchmark_of``)."""
    if config.classes is not None:
        return list(config.classes)
    if (list_dir / "classes.txt").is_file():
        return read_class_names(list_dir / "classes.txt")
    benchmark = benchmark_of(list_dir)
    if benchmark is not None:
        return list(BENCHMARK_CLASSES[benchmark.lower()])
    raise DataError(list_dir, f"class names of the split lists in folder {list_dir.name!r} are "
                    "unknown: set data.classes (e.g. data.classes=[benign,malignant], or "
                    f"--classes benign,malignant) or write {list_dir / 'classes.txt'} with one "
                    "class name per line (line k = label k)")


def _open_path(path: Path, config: DataConfig) -> DatasetSource:
    if path.suffix.lower() == ".csv":
        layout = read_csv_manifest(path, config.classes, **_split_kwargs(config, 0.2, 3),
                                   allow_outside_root=config.allow_outside_root)
        _reject_unused(config, path, layout.unused, layout.class_names)
        return layout
    if is_wsol_lists(path):
        _reject_unused(config, path, FIXED_SPLITS)
        root = config.root if config.root is not None else _lists_own_root(path)
        return read_wsol_lists(path, root, list_class_names(path, config))
    if path.is_dir():
        try:
            find_release(path)
        except DataError:
            pass
        else:
            return _open_glas(path, config)
    if not path.exists():
        raise DataError(path, "no such file or folder, and not a registered dataset name "
                        f"(known: {', '.join(DATASETS.names())})")
    raise DataError(path, "unrecognised dataset: expected a GlaS release folder, a WSOL split-list "
                    "folder (train/valcl/valpx/test with image_ids.txt) or a CSV manifest")


def _lists_own_root(list_dir: Path) -> Path:
    """Lists written by ``histocam data synth`` hold their images: the list folder is the root."""
    for split in ("train", "valcl", "valpx", "test"):
        ids = list_dir / split / "image_ids.txt"
        if ids.is_file():
            first = next((line.strip() for line in read_text(ids).splitlines() if line.strip()), "")
            if first and (list_dir / first).exists():
                return list_dir
    raise DataError(list_dir, "WSOL split lists need the image root (--root / data.root)")


def negative_class(config: DataConfig, class_names: list[str]) -> int | None:
    """Index of the fully negative class (``DataConfig.negative_class``), or None.

    ``auto`` knows the datasets whose negative class is a fact of the benchmark: synthetic-node's
    normal tiles, and the normal patches of CAMELYON16 lists (``benchmark_of``)."""
    name = config.negative_class
    if name == "auto":
        name = "none"
        if config.dataset == "synthetic-node":
            name = "normal"
        elif config.dataset not in DATASETS:
            benchmark = benchmark_of(Path(config.dataset))
            if benchmark is not None and BENCHMARK_CLASSES[benchmark.lower()] == CAMELYON_CLASSES:
                name = "normal"
    if name == "none":
        return None
    if name not in class_names:
        raise DataError(None, f"data.negative_class {name!r} is not a class of the dataset "
                        f"({', '.join(class_names)})")
    return class_names.index(name)


def open_source(config: DataConfig | str, **overrides: Any) -> DatasetSource:
    """Open a dataset (all splits) from a ``DataConfig`` or a name/path plus config overrides."""
    if isinstance(config, str):
        config = DataConfig(dataset=config, **overrides)
    elif overrides:  # validated again: the overrides may set keys this dataset does not read
        config = DataConfig.model_validate({**config.model_dump(exclude_unset=True), **overrides})
    if config.dataset in DATASETS:
        return DATASETS.get(config.dataset)(config)
    return _open_path(Path(config.dataset).expanduser(), config)


def open_dataset(config: DataConfig | str, split: str = "train", **overrides: Any) -> SplitDataset:
    """One split of a dataset, e.g. ``open_dataset("synthetic-colon", "test")``."""
    return open_source(config, **overrides).dataset(split)
