"""``histocam predict`` on a run: image maps, recorded τ*, resuming a slide, the CLI's outputs,
torchrun sharding, and one clear error per bad input (tiling itself: test_slide_tiling.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from helpers import tissue_rgb, write_slide
from PIL import Image
from typer.testing import CliRunner

from histocam.cli import app
from histocam.data.errors import DataError
from histocam.data.transforms import resize_image, resize_maps
from histocam.predict import Predictor, SlideOptions, predict, predict_slide
from histocam.runs import Run


# ------------------------------------------------------------------ images
def test_predict_images_gives_the_maps_of_localize(run_dir, tmp_path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(1)
    arrays = {"a": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
              "b": rng.integers(0, 256, (45, 77, 3), dtype=np.uint8),
              "c": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)}
    for name, a in arrays.items():
        Image.fromarray(a).save(folder / f"{name}.png")
    (tmp_path / "list.csv").write_text("image,label\nimgs/c.png,tumor\n")
    out = tmp_path / "out"
    result = predict(run_dir, [folder / "a.png", folder / "b.png", tmp_path / "list.csv"], out,
                     device="cpu", batch_size=2, num_workers=0)
    method, names = Run(run_dir).method("best-loc")
    rows = {r.split(",")[1]: r.split(",") for r in result.images_csv.read_text().splitlines()[1:]}
    for name, a in arrays.items():
        x = resize_image(torch.from_numpy(a).permute(2, 0, 1).float() / 255, 64)[None]
        with torch.no_grad():
            logits = method(x).logits
            expected = resize_maps(method.localize(x, torch.tensor([1])), a.shape[:2])[0]
        got = np.load(out / f"{name}.map.npy")
        assert got.dtype == np.float16 and got.shape == a.shape[:2]
        np.testing.assert_allclose(got.astype(np.float32), expected.numpy(), atol=1e-3)
        probs = torch.softmax(logits, 1)[0]
        row = rows[name]
        assert row[2] == names[int(probs.argmax())] and row[5] == "tumor"  # map class: auto
        np.testing.assert_allclose([float(row[3]), float(row[4])], probs.numpy(), atol=1e-5)
        region = np.asarray(Image.open(out / f"{name}.region.png")) > 0
        np.testing.assert_array_equal(region, got >= 0.4)  # τ* recorded for best-loc
        assert (out / f"{name}.overlay.png").is_file()
        assert json.loads((out / f"{name}.region.geojson").read_text())["type"] == \
            "FeatureCollection"


def test_recorded_tau_is_read_and_stale_or_missing_tau_says_why(run_dir, tmp_path) -> None:
    run = Run(run_dir)
    assert run.tau_star("best-loc")[0] == 0.4
    tau, why = run.tau_star("best-cl")
    assert tau is None and "histocam evaluate" in why
    ckpt = run.checkpoint_path("best-loc")
    metrics = run_dir / "metrics" / "best-loc-test.json"
    old = metrics.stat().st_mtime
    os.utime(metrics, (old - 1000, old - 1000))
    try:
        tau, why = run.tau_star("best-loc")
        assert tau is None and "older than" in why and ckpt.name in why
    finally:
        os.utime(metrics, (old + 1, old + 1))


# ------------------------------------------------------------------ resume
class Interrupt(Exception):
    pass


def test_an_interrupted_slide_resumes_and_gives_the_same_result(run_dir, tmp_path) -> None:
    tissue = np.zeros((230, 290), bool)
    tissue[20:200, 30:260] = True
    slide = write_slide(tmp_path / "s.tif", tissue_rgb(230, 290, tissue=tissue))
    predictor = Predictor.from_run(run_dir, device="cpu")
    opts = dict(tile=64, overlap=16, map_downsample=8, batch_size=4, num_workers=0,
                slide_map="map")
    args = dict(default_tile=64, run_mpp=(0.5, "test"), positive=1)
    full = predict_slide(predictor, slide, tmp_path / "full", "s", SlideOptions(**opts), **args)
    calls = []
    original = Predictor.__call__

    def counted(self, images):
        calls.append(len(images))
        if len(calls) == 3 and stop:
            raise Interrupt
        return original(self, images)

    Predictor.__call__ = counted
    try:
        stop = True
        with pytest.raises(Interrupt):
            predict_slide(predictor, slide, tmp_path / "part", "s", SlideOptions(**opts), **args)
        assert len(list((tmp_path / "part" / "work" / "batches").glob("batch-*.npz"))) == 2
        with pytest.raises(DataError, match=r"other settings \(overlap, tiles\)"):
            predict_slide(predictor, slide, tmp_path / "part", "s",
                          SlideOptions(**{**opts, "overlap": 8}), **args)
        calls.clear()
        stop = False
        again = predict_slide(predictor, slide, tmp_path / "part", "s", SlideOptions(**opts),
                              **args)
    finally:
        Predictor.__call__ = original
    assert sum(calls) == full["tiles"] - 8 == again["tiles_inferred_now"]  # 2 batches of 4 done
    for name in ("s.map.npy",):
        np.testing.assert_array_equal(np.load(tmp_path / "full" / name),
                                      np.load(tmp_path / "part" / name))
    assert (tmp_path / "full" / "s.tiles.csv").read_text() == \
        (tmp_path / "part" / "s.tiles.csv").read_text()
    assert (tmp_path / "full" / "s.region.geojson").read_text() == \
        (tmp_path / "part" / "s.region.geojson").read_text()
    assert not (tmp_path / "part" / "work").exists()
    # a finished slide is skipped
    assert predict_slide(predictor, slide, tmp_path / "part", "s", SlideOptions(**opts),
                         **args)["skipped"]
    assert full["label"] in ("normal", "tumor") and full["aggregation"] == "topk"


# ------------------------------------------------------------------ CLI and bad inputs
def test_cli_predicts_a_slide_with_all_outputs(run_dir, tmp_path) -> None:
    tissue = np.zeros((200, 260), bool)
    tissue[30:170, 40:220] = True
    write_slide(tmp_path / "s.tif", tissue_rgb(200, 260, tissue=tissue))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["predict", str(run_dir), str(tmp_path / "s.tif"), "--out",
                                   str(out), "--device", "cpu", "--workers", "0", "--tile", "64",
                                   "--quiet"])
    assert res.exit_code == 0, res.output
    out = out / "slides" / "s"
    summary = json.loads((out / "s.json").read_text())
    assert summary["map_level0_downsample"] == 8 and summary["mpp"] == pytest.approx(0.5)
    with tifffile.TiffFile(out / "s.heatmap.tif") as tif:
        assert tif.pages[0].shape == (25, 33)
    assert np.load(out / "s.map.npy").shape == (25, 33)
    fc = json.loads((out / "s.region.geojson").read_text())
    for feature in fc["features"]:  # level-0 pixel coordinates inside the slide
        xy = np.array(feature["geometry"]["coordinates"][0])
        assert xy[:, 0].min() >= 0 and xy[:, 0].max() <= 260 and xy[:, 1].max() <= 200
        # the region lies on tissue (a margin of one 8-px map cell for the tissue detection)
        assert xy[:, 0].min() >= 40 - 8 and xy[:, 0].max() <= 220 + 8
        assert xy[:, 1].min() >= 30 - 8 and xy[:, 1].max() <= 170 + 8
    lines = (out / "s.tiles.csv").read_text().splitlines()
    assert lines[0].split(",")[:3] == ["tile", "x", "y"] and len(lines) - 1 == summary["tiles"]
    # the overlay shows the slide itself, untouched, off the tissue (glass stays glass)
    overlay = np.asarray(Image.open(out / "s.overlay.png").convert("RGB"))
    h, w = np.asarray(Image.open(out / "s.thumbnail.png")).shape[:2]  # the legend is below
    corner = overlay[: int(h * 20 / 200), : int(w * 30 / 260)]
    assert corner.min() >= 230  # the synthetic glass is near-white


@pytest.mark.parametrize("name,content,problem", [
    ("missing.png", None, "file not found"),
    ("broken.png", b"\x89PNG\r\n\x1a\nnot really", "unreadable or truncated image"),
    ("notes.xyz", b"hello", "unknown format '.xyz'"),
    ("broken.svs", b"garbage", "cannot open the slide"),
])
def test_bad_inputs_give_one_error_line_naming_the_file(run_dir, tmp_path, name, content,
                                                        problem) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    res = CliRunner().invoke(app, ["predict", str(run_dir), str(path), "--out",
                                   str(tmp_path / "o"), "--device", "cpu", "--workers", "0",
                                   "--quiet"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]
    assert problem in lines[0]


def test_map_class_and_checkpoint_errors(run_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match="'lymph' is not a class"):
        Predictor.from_run(run_dir, device="cpu", map_class="lymph")
    with pytest.raises(ValueError, match="--checkpoint must be one of"):
        Predictor.from_run(run_dir, "best", device="cpu")


def test_a_torchrun_rank_alone_takes_its_own_slides_first_then_the_rest(run_dir, tmp_path,
                                                                         monkeypatch) -> None:
    for k in range(3):
        tissue = np.zeros((120, 100), bool)
        tissue[10:110, 10:90] = True
        write_slide(tmp_path / f"s{k}.tif", tissue_rgb(120, 100, k, tissue))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = predict(run_dir, [tmp_path], tmp_path / "out", device="cpu", num_workers=0,
                     slide_options=SlideOptions(tile=64))
    assert result.shard == (1, 2) and result.summary_csv.name == "summary-shard-1-of-2.csv"
    assert [Path(s["slide"]).name for s in result.slides] == ["s1.tif", "s0.tif", "s2.tif"]
    assert not list((tmp_path / "out" / "slides").glob("*.lock"))  # released


def test_torchrun_ranks_name_images_uniquely_over_all_ranks(run_dir, tmp_path, monkeypatch) -> None:
    """a/x.png and b/x.png on two ranks: rank 1 writes x-2, never a second x."""
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.full((20, 24, 3), 128, np.uint8)).save(tmp_path / folder / "x.png")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    predict(run_dir, [tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"], tmp_path / "out",
            device="cpu", num_workers=0)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.map.npy")) == ["x-2.map.npy"]


def test_checkpoint_both_takes_labels_from_best_cl_and_maps_from_best_loc(run_dir) -> None:
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    run = Run(run_dir)
    loc, _ = run.method("best-loc")
    cl, _ = run.method("best-cl")
    both = Predictor.from_run(run, "both", device="cpu", map_class="predicted")
    probs, classes, maps = both(x)
    with torch.no_grad():
        expected_probs = torch.softmax(cl(x).logits, 1)
        expected_maps = loc.localize(x, expected_probs.argmax(1))
    torch.testing.assert_close(probs, expected_probs)
    assert classes.tolist() == expected_probs.argmax(1).tolist()
    torch.testing.assert_close(maps, expected_maps)
    assert (both.map_checkpoint, both.label_checkpoint, both.tau) == ("best-loc", "best-cl", 0.4)


def test_a_manifest_names_each_input_once_in_one_spelling(tmp_path) -> None:
    from histocam.predict.inputs import collect_inputs
    (tmp_path / "sub").mkdir()
    for name in ("a.png", "sub/b.png"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / name)
    outside = tmp_path.parent / f"{tmp_path.name}-outside.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(outside)
    manifest = tmp_path / "list.csv"
    manifest.write_text("image\n./a.png\nsub//b.png\nsub/../a.png\n"
                        f"../{outside.name}\n{outside}\n")
    inputs = collect_inputs([manifest])
    assert inputs.images == [tmp_path / "a.png", tmp_path / "sub" / "b.png",
                             tmp_path.parent / outside.name]
    manifest.write_text("image\na.png\n.\n")
    with pytest.raises(DataError, match=r"list.csv:3.*is a folder"):
        collect_inputs([manifest])
