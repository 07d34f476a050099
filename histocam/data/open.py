"""Open any supported dataset by registered name or path (format detected from the files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from histocam.data.config import DataConfig
from histocam.data.csv_manifest import read_class_names, read_csv_manifest
from histocam.data.errors import DataError
from histocam.data.glas import GLAS_CLASSES, find_release, read_glas
from histocam.data.sample import Sample
from histocam.data.wsol_lists import is_wsol_lists, read_wsol_lists
from histocam.registry import Registry

CAMELYON_CLASSES = ["normal", "tumor"]


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
    return _open_path(config.root, config)


DATASETS.register("glas")(_glas)


def _synthetic(domain: str):
    def factory(config: DataConfig) -> DatasetSource:
        from histocam.data.synthetic import SyntheticSource

        return SyntheticSource(domain, config.synthetic)

    return factory


DATASETS.register("synthetic-colon")(_synthetic("colon"))
DATASETS.register("synthetic-node")(_synthetic("node"))


def _split_kwargs(config: DataConfig, valcl: float, valpx: int) -> dict[str, Any]:
    return dict(
        seed=config.split_seed,
        valcl_fraction=config.valcl_fraction if config.valcl_fraction is not None else valcl,
        test_fraction=config.test_fraction,
        valpx_per_class=config.valpx_per_class or valpx,
    )


def _open_path(path: Path, config: DataConfig) -> DatasetSource:
    if path.suffix.lower() == ".csv":
        return read_csv_manifest(path, config.classes, **_split_kwargs(config, 0.2, 3))
    if is_wsol_lists(path):
        root = config.root if config.root is not None else _lists_own_root(path)
        classes = config.classes
        if classes is None and (path / "classes.txt").is_file():
            classes = read_class_names(path / "classes.txt")
        if classes is None:
            lowered = str(path.resolve()).lower()
            classes = GLAS_CLASSES if "glas" in lowered else (
                CAMELYON_CLASSES if "camelyon" in lowered else None)
        return read_wsol_lists(path, root, classes)
    if path.is_dir():
        try:
            find_release(path)
        except DataError:
            pass
        else:
            return read_glas(path, **_split_kwargs(config, 18 / 85, 3))
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
            first = next((line.strip() for line in ids.read_text().splitlines() if line.strip()), "")
            if first and (list_dir / first).exists():
                return list_dir
    raise DataError(list_dir, "WSOL split lists need the image root (--root / data.root)")


def open_source(config: DataConfig | str, **overrides: Any) -> DatasetSource:
    """Open a dataset (all splits) from a ``DataConfig`` or a name/path plus config overrides."""
    if isinstance(config, str):
        config = DataConfig(dataset=config, **overrides)
    elif overrides:
        config = config.model_copy(update=overrides)
    if config.dataset in DATASETS:
        return DATASETS.get(config.dataset)(config)
    return _open_path(Path(config.dataset).expanduser(), config)


def open_dataset(config: DataConfig | str, split: str = "train", **overrides: Any) -> SplitDataset:
    """One split of a dataset, e.g. ``open_dataset("synthetic-colon", "test")``."""
    return open_source(config, **overrides).dataset(split)
