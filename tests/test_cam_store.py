"""The CAM store: one array per image id whatever the id holds, and a store that knows the labels
it was made for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_rgb

from histocam.data.open import open_source
from histocam.data.transforms import JointTransform
from histocam.maps.store import CAMStoreError, NpzWriter, load_cams, npz_key, store_is_current
from histocam.methods.catalog import create_method
from histocam.runs import Run
from histocam.train import RunConfig

IDS = ["a/x.png", "a__x.png", "a%2Fx.png", "a%x.png", "b/../c.png", "é/ü.png", "x.npy", "."]


def test_npz_keys_are_one_per_id_and_round_trip(tmp_path: Path) -> None:
    assert len({npz_key(i) for i in IDS}) == len(IDS)
    with NpzWriter(tmp_path / "s.npz") as writer:
        for k, image_id in enumerate(IDS):
            writer.add(image_id, np.full((2, 3), k, np.float16))
    with np.load(tmp_path / "s.npz") as stored:
        assert [int(stored[npz_key(i)][0, 0]) for i in IDS] == list(range(len(IDS)))


@pytest.fixture
def csv_run(tmp_path: Path) -> Path:
    """A seeded, untrained CAM run on a CSV whose ids ``a/x.png`` and ``a__x.png`` would share
    one array name if ``/`` were written ``__``."""
    data = tmp_path / "data"
    rows = []
    for k, name in enumerate(["a/x.png", "a__x.png", "b.png", "c.png", "d.png", "e.png"]):
        write_rgb(data / name, 96, 96, k)
        rows.append(f"{name},{k % 2},,{'train' if k < 4 else 'valcl'}")
    (data / "set.csv").write_text("image,label,mask,split\n" + "\n".join(rows) + "\n")
    cfg = RunConfig.model_validate({
        "name": "teacher", "out_dir": str(tmp_path / "runs"), "seed": 0, "device": "cpu",
        "data": {"dataset": str(data / "set.csv"), "classes": ["neg", "pos"], "resize": 96,
                 "crop": 96, "eval_size": 96},
        "method": {"name": "cam", "backbone": {"name": "test_resnet", "pretrained": False}}})
    run = cfg.run_dir
    run.write_config(cfg.to_yaml())
    torch.manual_seed(0)
    state = create_method(cfg.method.for_inference(), 2).state_dict()
    run.save_checkpoint("best-loc", {"model": state, "epoch": 1, "class_names": ["neg", "pos"]})
    return run.root


def test_stored_maps_are_each_images_own(csv_run: Path) -> None:
    run = Run(csv_run)
    store = run.export_cams("best-loc", "train", device="cpu")
    cams = load_cams(store, run.config.data, "train")
    dataset = open_source(run.config.data).dataset("train")
    assert sorted(cams) == sorted(dataset.ids) and {"a/x.png", "a__x.png"} <= set(cams)
    method, _ = run.method("best-loc")
    transform = JointTransform.from_config(run.config.data, train=False)
    for k, image_id in enumerate(dataset.ids):
        x = transform(dataset[k], None)["image"][None]
        with torch.no_grad():
            _, low = method.localize_with_logits(x, torch.tensor([dataset.labels[k]]),
                                                 upsample=False)
        assert torch.allclose(cams[image_id], low[0].half().float()), image_id
    assert not torch.equal(cams["a/x.png"], cams["a__x.png"])


def test_a_relabelled_csv_makes_the_store_stale(csv_run: Path) -> None:
    run = Run(csv_run)
    store = run.export_cams("best-loc", "train", device="cpu")
    data = run.config.data
    assert store_is_current(store, data, "train")
    manifest = Path(data.dataset)
    manifest.write_text(manifest.read_text().replace("b.png,0,,train", "b.png,1,,train"))
    assert not store_is_current(store, data, "train")
    with pytest.raises(CAMStoreError, match=r"other labels of split 'train'.*histocam cams "):
        load_cams(store, data, "train")


def test_a_store_of_the_older_format_is_refused(csv_run: Path) -> None:
    run = Run(csv_run)
    store = run.export_cams("best-loc", "train", device="cpu")
    meta = json.loads(store.with_suffix(".json").read_text())
    meta.pop("format")
    store.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(CAMStoreError, match="older format .* export it again: histocam cams "
                                            f"{csv_run.resolve()} --checkpoint best-loc"):
        load_cams(store, run.config.data, "train")
    assert not store_is_current(store, run.config.data, "train")
