"""The CAM store: a teacher's low-resolution maps for a dataset split, with their provenance.

``histocam.runs.Run.export_cams`` runs a trained run's checkpoint (B-LOC by default) over a split
with the evaluation transform and stores, for every image, the normalised low-resolution map of its
ground-truth class (float16) in ``RUN/cams/<checkpoint>-<split>.npz`` (written map by map with
``NpzWriter``) with a JSON sidecar: run, checkpoint, epoch, method, a hash of the teacher config and
one of the dataset identity. ``load_cams`` refuses a store made for another dataset or split, or one
that lacks images of the split. The maps are then transformed jointly with their images (same crop
and flip) by ``JointTransform``.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from histocam.data.config import DataConfig
from histocam.data.synthetic import generator_version

IDENTITY_FIELDS = ("dataset", "root", "classes", "split_seed", "valcl_fraction", "test_fraction",
                   "valpx_per_class", "synthetic")


class CAMStoreError(ValueError):
    """A stored CAM file that does not match the dataset it is used with."""


def config_hash(obj) -> str:
    """A short stable hash of a JSON-able object."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def dataset_identity(config: DataConfig) -> str:
    """Hash of what determines the images and splits (not the augmentation or sizes)."""
    dump = config.model_dump(mode="json")
    for key in ("dataset", "root"):  # the same files reached by another relative path
        if dump.get(key) and Path(dump[key]).exists():
            dump[key] = str(Path(dump[key]).resolve())
    if isinstance(dump.get("synthetic"), dict):
        dump["synthetic"].pop("cache_dir", None)
        dump["synthetic"]["generator_version"] = generator_version(config.dataset)
    return config_hash({k: dump.get(k) for k in IDENTITY_FIELDS})


def npz_key(image_id: str) -> str:
    """The array name of an image id in an ``.npz`` (ids may contain ``/``)."""
    return image_id.replace("/", "__")


def store_paths(run_dir: Path, checkpoint: str, split: str) -> tuple[Path, Path]:
    base = Path(run_dir) / "cams" / f"{checkpoint}-{split}"
    return base.with_suffix(".npz"), base.with_suffix(".json")


class NpzWriter:
    """Writes arrays one by one into an ``.npz`` (readable by ``np.load``) without holding them:
    a temporary file renamed over ``path`` on ``close`` (never a half-written store)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_DEFLATED)
        self.keys: list[str] = []

    def add(self, image_id: str, array: np.ndarray) -> None:
        key = npz_key(image_id)
        with self._zip.open(f"{key}.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, np.ascontiguousarray(array))
        self.keys.append(image_id)

    def close(self) -> Path:
        self._zip.close()
        self._tmp.replace(self.path)
        return self.path

    def abort(self) -> None:
        self._zip.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> NpzWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _checked_meta(npz: Path, data_config: DataConfig, split: str) -> dict:
    meta_path = npz.with_suffix(".json")
    if not npz.is_file() or not meta_path.is_file():
        raise CAMStoreError(f"{npz}: CAM store (and its .json) not found; export it with "
                            "`histocam cams RUN --checkpoint best-loc --split train`")
    meta = json.loads(meta_path.read_text())
    if meta["split"] != split:
        raise CAMStoreError(f"{npz}: CAMs of split {meta['split']!r}, needed {split!r}")
    if meta["dataset_identity"] != dataset_identity(data_config):
        raise CAMStoreError(
            f"{npz}: CAMs were computed for another dataset or split definition (made on "
            f"{meta['dataset']!r}; identity {meta['dataset_identity']} != "
            f"{dataset_identity(data_config)}); export them again for this dataset")
    return meta


def store_is_current(path: str | Path, data_config: DataConfig, split: str = "train") -> bool:
    """Whether the store at ``path`` exists and was made for this dataset and split."""
    try:
        _checked_meta(Path(path), data_config, split)
    except CAMStoreError:
        return False
    return True


def load_cams(path: str | Path, data_config: DataConfig, split: str = "train",
              ids: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Load a store for ``split`` of the dataset described by ``data_config``; id -> map."""
    npz = Path(path)
    meta = _checked_meta(npz, data_config, split)
    if ids is not None:
        missing = sorted(set(ids) - set(meta["ids"]))
        if missing:
            raise CAMStoreError(f"{npz}: no CAM for {len(missing)} image(s) of the split, e.g. "
                                f"{missing[:3]}")
    with np.load(npz) as data:
        return {image_id: torch.from_numpy(data[npz_key(image_id)].astype(np.float32))
                for image_id in meta["ids"]}
