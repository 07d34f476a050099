"""A user's unreadable file is a bad sample (skipped, counted); histocam's own I/O failing is an
error; a run that learns or selects on nothing stops with one line saying why."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import write_rgb
from PIL import Image
from typer.testing import CliRunner

from histocam.cli import app
from histocam.data import DataError, open_source
from histocam.data.config import DataConfig, SyntheticConfig
from histocam.data.errors import StorageError
from histocam.data.synthetic import render_cached, render_sample
from histocam.data.transforms import JointTransform
from histocam.train.loader import make_loader

RUNNER = CliRunner()


def _train(tmp_path: Path, data: dict, *overrides: str):
    tree = {"name": "run", "out_dir": str(tmp_path / "runs"), "seed": 0, "device": "cpu",
            "data": {"resize": 32, "crop": 32, "eval_size": 32, **data},
            "method": {"name": "cam", "backbone": {"name": "test_resnet"}},
            "train": {"epochs": 1, "batch_size": 2, "eval_batch_size": 4, "num_workers": 0}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(tree))
    return RUNNER.invoke(app, ["train", "-c", str(tmp_path / "run.yaml"), *overrides])


def _error_line(result) -> str:
    """The one ``error:`` line of a failed command (warnings may precede it)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output, result.output
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.output.rstrip().endswith(errors[0]), result.output
    assert "done:" not in result.output
    return errors[0]


def _manifest(tmp_path: Path, bad_train: int, n_train: int = 4) -> Path:
    """image,label,mask,split: ``n_train`` train images of which the first ``bad_train`` are
    truncated files, 2 valcl images (also valpx, with masks) and 2 test images."""
    rows = []
    for i in range(n_train):
        path = tmp_path / f"train{i}.png"
        write_rgb(path, 32, 32, i)
        if i < bad_train:
            path.write_bytes(path.read_bytes()[:40])
        rows.append(f"train{i}.png,{i % 2},,train")
    for i in range(2):
        write_rgb(tmp_path / f"val{i}.png", 32, 32, 10 + i)
        mask = np.zeros((32, 32), np.uint8)
        mask[8:20, 8:20] = 255
        Image.fromarray(mask).save(tmp_path / f"val{i}-mask.png")
        rows += [f"val{i}.png,{i},val{i}-mask.png,valcl", f"val{i}.png,{i},val{i}-mask.png,valpx"]
        write_rgb(tmp_path / f"test{i}.png", 32, 32, 20 + i)
        rows.append(f"test{i}.png,{i},,test")
    path = tmp_path / "set.csv"
    path.write_text("image,label,mask,split\n" + "\n".join(rows) + "\n")
    return path


def test_a_run_whose_every_training_sample_fails_stops(tmp_path: Path) -> None:
    result = _train(tmp_path, {"dataset": str(_manifest(tmp_path, bad_train=4))})
    line = _error_line(result)
    assert "all 4 train samples of set in epoch 1 were unreadable" in line


@pytest.mark.parametrize("bad,limit,error", [
    (2, 0.4, "2 of the 4 train samples of set in epoch 1 were unreadable"),
    (1, 0.4, None),
    # one readable sample in batches of 2: nothing to train on (BatchNorm needs 2 samples)
    (3, 1.0, "no train sample of set was trained on in epoch 1")])
def test_max_bad_fraction(tmp_path: Path, caplog, bad: int, limit: float, error) -> None:
    with caplog.at_level(logging.WARNING, logger="histocam"):
        result = _train(tmp_path, {"dataset": str(_manifest(tmp_path, bad_train=bad))},
                        f"train.max_bad_fraction={limit}")
    if error:
        assert error in _error_line(result)
    else:
        assert result.exit_code == 0, result.output
    skipped = {r.getMessage().split(": ")[1] for r in caplog.records
               if r.getMessage().startswith("skipping bad sample")}
    assert skipped == {str(tmp_path / f"train{i}.png") for i in range(bad)}


def test_every_valcl_sample_failing_stops_the_run(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, bad_train=0)
    for i in range(2):
        (tmp_path / f"val{i}.png").write_bytes(b"not an image")
    line = _error_line(_train(tmp_path, {"dataset": str(manifest)}))
    assert "valcl samples of set in the evaluation of epoch 0 were unreadable" in line


def test_a_csv_without_rows_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("image,label,mask,split\n")
    line = _error_line(_train(tmp_path, {"dataset": str(tmp_path / "empty.csv"),
                                         "classes": ["a", "b"]}))
    assert str(tmp_path / "empty.csv") in line and "no rows under the header" in line


def test_an_empty_split_the_run_needs_is_an_error(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, bad_train=0)
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(x for x in lines if not x.endswith(("valcl", "valpx"))) + "\n")
    line = _error_line(_train(tmp_path, {"dataset": str(manifest)}))
    assert "split 'valcl' of set" in line and "has no image" in line


@pytest.mark.parametrize("workers", [0, 1])
def test_a_full_disk_under_the_synthetic_cache_is_an_error(tmp_path: Path, monkeypatch,
                                                            workers: int) -> None:
    """ENOSPC while writing a cache entry: one error line naming the entry, no temporary file
    left, and no sample counted as bad (with and without loader workers)."""
    import histocam.data.synthetic as synthetic

    def full_disk(fh, image, mask):
        fh.write(b"\0" * 100)  # part of the entry, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(synthetic, "_save_npz", full_disk)
    cache = tmp_path / "cache"
    data = {"dataset": "synthetic-colon",
            "synthetic": {"size": 64, "n_train": 4, "n_valcl": 2, "n_test": 2,
                          "valpx_per_class": 1, "cache_dir": str(cache)}}
    line = _error_line(_train(tmp_path, data, f"train.num_workers={workers}"))
    assert line.startswith(f"error: {cache}/colon-") and ".npz: cannot write the synthetic cache "
    assert "No space left on device" in line
    assert "skipping bad sample" not in line
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # no temporary file behind


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"garbage" * 20, "shape"])
def test_a_corrupt_cache_entry_is_rendered_again(tmp_path: Path, caplog, content) -> None:
    config = SyntheticConfig(size=64, cache_dir=tmp_path)
    expected = render_cached("colon", "train", 0, 1, config)  # writes the entry
    (entry,) = tmp_path.rglob("*.npz")
    if content == "shape":
        np.savez_compressed(entry, image=np.zeros((8, 8, 3), np.uint8), mask=np.zeros((8, 8), bool))
    else:
        entry.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="histocam"):
        image, mask = render_cached("colon", "train", 0, 1, config)
    assert np.array_equal(image, expected[0]) and np.array_equal(mask, expected[1])
    assert np.array_equal(image, render_sample("colon", "train", 0, 1, config)[0])
    assert any(str(entry) in r.getMessage() and "rendered again" in r.getMessage()
               for r in caplog.records)
    with np.load(entry) as stored:  # replaced by a whole entry
        assert np.array_equal(stored["image"], expected[0])


def test_an_unreadable_cache_folder_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")  # the cache folder's place is taken by a file
    with pytest.raises(StorageError) as info:
        render_cached("colon", "train", 0, 1, SyntheticConfig(size=64, cache_dir=blocker))
    assert info.value.filename.startswith(str(blocker)) and "synthetic cache" in str(info.value)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_loader_worker_raises_the_error_it_met(tmp_path: Path, workers: int) -> None:
    """With ``on_bad_sample="error"`` a bad file's ``DataError`` reaches the caller as itself,
    naming the file, also from a worker process (not a RuntimeError holding a traceback)."""
    write_rgb(tmp_path / "a.png", 16, 16, 0)
    (tmp_path / "b.png").write_bytes(b"not an image")
    (tmp_path / "set.csv").write_text("image,label\na.png,0\nb.png,1\n")
    dataset = open_source(str(tmp_path / "set.csv"), valcl_fraction=0.0,
                          test_fraction=0.0).dataset("train")
    loader = make_loader(dataset, JointTransform.from_config(DataConfig(eval_size=16), False), 2,
                         shuffle=False, num_workers=workers, on_bad_sample="error")
    with pytest.raises(DataError) as info:
        list(loader)
    assert info.value.path == tmp_path / "b.png"
