"""The CAM store: a teacher's low-resolution maps for a dataset split, with their provenance.

``export_cams`` runs a trained run's checkpoint (B-LOC by default) over a split with the evaluation
transform and stores, for every image, the normalised low-resolution map of its ground-truth class
(float16) in ``RUN/cams/<checkpoint>-<split>.npz`` with a JSON sidecar: run, checkpoint, epoch,
method, a hash of the teacher config and one of the dataset identity. ``load_cams`` refuses a store
made for another dataset or split, or one that lacks images of the split. The maps are then
transformed jointly with their images (same crop and flip) by ``JointTransform``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from histocam.data.config import DataConfig
from histocam.data.synthetic import generator_version

IDENTITY_FIELDS = ("dataset", "root", "classes", "split_seed", "valcl_fraction", "test_fraction",
                   "valpx_per_class", "synthetic")


class CAMStoreError(ValueError):
    """A stored CAM file that does not match the dataset it is used with."""


def _hash(obj) -> str:
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
    return _hash({k: dump.get(k) for k in IDENTITY_FIELDS})


def _key(image_id: str) -> str:
    return image_id.replace("/", "__")


def store_paths(run_dir: Path, checkpoint: str, split: str) -> tuple[Path, Path]:
    base = Path(run_dir) / "cams" / f"{checkpoint}-{split}"
    return base.with_suffix(".npz"), base.with_suffix(".json")


def export_cams(run_dir: str | Path, checkpoint: str = "best-loc", split: str = "train", *,
                device: str = "auto", batch_size: int = 32, progress: bool = False) -> Path:
    from histocam.data.open import open_source
    from histocam.data.transforms import JointTransform
    from histocam.train.checkpoint import load_checkpoint
    from histocam.train.loader import make_loader
    from histocam.train.seeding import resolve_device
    from histocam.train.trainer import load_method

    run_dir = Path(run_dir)
    dev = resolve_device(device)
    method, config, class_names = load_method(run_dir, checkpoint, str(dev))
    dataset = open_source(config.data).dataset(split)
    loader = make_loader(dataset, JointTransform.from_config(config.data, train=False), batch_size,
                         shuffle=False, num_workers=0)
    maps: dict[str, np.ndarray] = {}
    ids: list[str] = []
    steps = loader
    if progress:
        from rich.progress import track

        steps = track(loader, description=f"CAMs {checkpoint} {split}", transient=True)
    for batch in steps:
        with torch.no_grad():  # top-down CAMs re-enable gradients where they need them
            _, low = method.localize_with_logits(batch["image"].to(dev), batch["label"].to(dev),
                                                 upsample=False)
        for image_id, m in zip(batch["id"], low.detach().cpu().numpy()):
            maps[_key(image_id)] = m.astype(np.float16)
            ids.append(image_id)
    npz, meta = store_paths(run_dir, checkpoint, split)
    npz.parent.mkdir(parents=True, exist_ok=True)
    tmp = npz.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **maps)
    tmp.replace(npz)
    state = load_checkpoint(run_dir / "checkpoints" / f"{checkpoint}.pt")
    meta.write_text(json.dumps({
        "run": str(run_dir.resolve()), "checkpoint": checkpoint, "epoch": state["epoch"],
        "method": config.method.name, "teacher_config_hash": _hash(
            config.method.model_dump(mode="json")),
        "dataset": config.data.dataset, "dataset_identity": dataset_identity(config.data),
        "split": split, "class_names": class_names, "ids": ids,
        "map_shape": list(next(iter(maps.values())).shape) if maps else None,
    }, indent=2))
    return npz


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
        return {image_id: torch.from_numpy(data[_key(image_id)].astype(np.float32))
                for image_id in meta["ids"]}
