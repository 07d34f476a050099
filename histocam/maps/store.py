"""The CAM store: a teacher's low-resolution maps for a dataset split, with their provenance.

``histocam.runs.Run.export_cams`` runs a trained run's checkpoint (B-LOC by default) over a split
with the evaluation transform and stores, for every image, the normalised low-resolution map of its
ground-truth class (float16) in the run's store (``RunDir.stored_maps``; written map by map with
``NpzWriter``) with a JSON sidecar: run, checkpoint, epoch, method, a hash of the teacher config, one
of the dataset identity and one of the split's labels (``split_identity``). ``load_cams`` refuses a
store made for another dataset, split or labelling (a CSV relabelled after the export), one that
lacks images of the split, and one of another store format (``STORE_FORMAT``). An image id's array
name (``npz_key``) is its percent-encoding: one name per id, whatever the id holds. The maps are
then transformed jointly with their images (same crop and flip) by ``JointTransform``. Under
torchrun the ranks map their blocks of the split into part files that rank 0 merges, in order,
into the same single store (``ShardedNpzWriter``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch

from histocam.core.collectives import all_gather_objects, distributed_ready
from histocam.data.config import DataConfig
from histocam.data.open import open_source
from histocam.data.synthetic import generator_version

#: The layout of a store and its sidecar; a store of another format is refused (exported again).
STORE_FORMAT = 2
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


def split_identity(dataset) -> str:
    """Hash of a split's images and their labels, in order: relabelling one image changes it."""
    return config_hash([[str(i), int(y)] for i, y in zip(dataset.ids, dataset.labels)])


def store_identity(data_config: DataConfig, dataset) -> dict:
    """The sidecar entries that say which data a store is for (checked by ``load_cams``)."""
    return {"format": STORE_FORMAT, "dataset": data_config.dataset,
            "dataset_identity": dataset_identity(data_config), "split": dataset.split,
            "labels_identity": split_identity(dataset)}


def npz_key(image_id: str) -> str:
    """The array name of an image id in an ``.npz``: its percent-encoding (``/`` is ``%2F``,
    ``%`` is ``%25``), so that two ids never share a name."""
    return quote(image_id, safe="")


def provenance_path(npz: str | Path) -> Path:
    """The JSON provenance beside a store's ``.npz``."""
    return Path(npz).with_suffix(".json")


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

    def copy_from(self, npz: str | Path, ids: list[str]) -> None:
        """Append the arrays of ``ids`` from another ``.npz`` (e.g. one written by an
        ``NpzWriter``), in that order, their ``.npy`` bytes copied unchanged."""
        with zipfile.ZipFile(npz) as src_zip:
            for image_id in ids:
                name = f"{npz_key(image_id)}.npy"
                with src_zip.open(name) as src, self._zip.open(name, "w", force_zip64=True) as dst:
                    shutil.copyfileobj(src, dst)
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


class ShardedNpzWriter:
    """``NpzWriter`` for a split whose images are shared out over the ranks of ``torch.distributed``
    in contiguous blocks, in rank order (``histocam.core.collectives.shard_indices``): the result
    is the one ``.npz`` one process would write, same arrays, same order.

    Each rank streams its own maps into a hidden part file next to ``path`` (``NpzWriter``: never a
    half-written part); ``close`` (a collective: every rank calls it) has rank 0 copy the parts'
    arrays, rank 0's first, into one ``NpzWriter`` at ``path`` (a temporary file renamed over it:
    no other rank ever sees a half-written store) and delete every part, then waits for rank 0.
    The parts must be visible to rank 0: one machine, or a shared run directory (which the other
    ranks already need to read the checkpoints). Without a process group this is an
    ``NpzWriter``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.world, self.rank = 1, 0
        if distributed_ready():
            import torch.distributed as dist

            self.world, self.rank = dist.get_world_size(), dist.get_rank()
        self._writer = NpzWriter(self._part(self.rank) if self.world > 1 else self.path)

    def _part(self, rank: int) -> Path:
        return self.path.with_name(f".{self.path.name}.part{rank}-of-{self.world}")

    @property
    def keys(self) -> list[str]:
        """The ids this rank has added so far (after ``close``: every rank's, in order)."""
        return self._writer.keys

    def add(self, image_id: str, array: np.ndarray) -> None:
        self._writer.add(image_id, array)

    def close(self) -> list[str]:
        """Write the store; returns every id written, in order, on every rank."""
        self._writer.close()
        if self.world == 1:
            return list(self._writer.keys)
        import torch.distributed as dist

        parts = all_gather_objects(list(self._writer.keys))
        try:
            if self.rank == 0:
                with NpzWriter(self.path) as out:
                    for r, ids in enumerate(parts):
                        out.copy_from(self._part(r), ids)
        finally:
            if self.rank == 0:
                for r in range(self.world):
                    self._part(r).unlink(missing_ok=True)
        dist.barrier()  # the store exists before any rank goes on to read it
        self._writer.keys = [k for ids in parts for k in ids]
        return list(self._writer.keys)

    def abort(self) -> None:
        """Drop this rank's part (not a collective: a failing rank's job is torn down by torchrun)."""
        self._writer.abort()
        if self.world > 1:
            self._part(self.rank).unlink(missing_ok=True)

    def __enter__(self) -> ShardedNpzWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _checked_meta(npz: Path, data_config: DataConfig, split: str) -> dict:
    meta_path = provenance_path(npz)
    if not npz.is_file() or not meta_path.is_file():
        raise CAMStoreError(f"{npz}: CAM store (and its .json) not found; export it with "
                            "`histocam cams RUN --checkpoint best-loc --split train`")
    try:
        meta = json.loads(meta_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CAMStoreError(f"{meta_path}: unreadable provenance ({exc}); export the maps again "
                            "with `histocam cams RUN`") from None
    if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
        run, ckpt = (meta.get("run", "RUN"), meta.get("checkpoint", "best-loc")) if isinstance(
            meta, dict) else ("RUN", "best-loc")
        raise CAMStoreError(
            f"{npz}: a CAM store of an older format (its array names can collide and it does not "
            f"record the labels); export it again: histocam cams {run} --checkpoint {ckpt} "
            f"--split {split}")
    if meta["split"] != split:
        raise CAMStoreError(f"{npz}: CAMs of split {meta['split']!r}, needed {split!r}")
    if meta["dataset_identity"] != dataset_identity(data_config):
        raise CAMStoreError(
            f"{npz}: CAMs were computed for another dataset or split definition (made on "
            f"{meta['dataset']!r}; identity {meta['dataset_identity']} != "
            f"{dataset_identity(data_config)}); export them again for this dataset")
    if meta["labels_identity"] != split_identity(open_source(data_config).dataset(split)):
        raise CAMStoreError(
            f"{npz}: CAMs of other labels of split {split!r} (the dataset was relabelled after "
            f"the export); export them again: histocam cams {meta['run']} --checkpoint "
            f"{meta['checkpoint']} --split {split}")
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
