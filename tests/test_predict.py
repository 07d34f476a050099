"""``histocam predict``: values of stitching, blending, GeoJSON, pyramids, tile grids, image maps,
resuming, and one clear error per bad input."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch
from conftest import SHARED
from PIL import Image
from typer.testing import CliRunner

from histocam.cli import app
from histocam.data.errors import DataError
from histocam.data.transforms import resize_image, resize_maps
from histocam.methods.registry import create_method
from histocam.predict import Predictor, SlideOptions, predict, predict_slide, recorded_tau
from histocam.predict.export import level_shapes, write_pyramid
from histocam.predict.geojson import mask_polygons, region_features, signed_area
from histocam.predict.slides import SlideReader, axis_starts, tile_grid
from histocam.predict.stitch import Stitcher, ramp_window, tile_window
from histocam.predict.tissue import tissue_mask
from histocam.runs import Run
from histocam.train import RunConfig
from histocam.train.checkpoint import save_checkpoint

SLIDES = SHARED / "data" / "slides"


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory of a (randomly initialised, seeded) CAM on synthetic-node at eval size 64,
    with both checkpoints and a recorded τ*: what the trainer and `histocam evaluate` leave."""
    root = tmp_path_factory.mktemp("runs")
    cfg = RunConfig.model_validate({
        "name": "r", "out_dir": str(root), "seed": 1,
        "data": {"dataset": "synthetic-node", "resize": 72, "crop": 64, "eval_size": 64,
                 "synthetic": {"size": 72, "n_train": 8, "n_valcl": 4, "n_test": 4}},
        "method": {"name": "cam", "backbone": {"name": "test_resnet", "pretrained": False}},
        "train": {"epochs": 1, "batch_size": 4, "num_workers": 0}})
    run = cfg.run_dir
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(cfg.to_yaml())
    for k, name in enumerate(("best-loc", "best-cl", "last")):
        torch.manual_seed(k)
        method = create_method(cfg.method.for_inference(), 2)
        save_checkpoint({"model": method.state_dict(), "epoch": 1, "class_names": ["normal", "tumor"],
                         "config": cfg.model_dump(mode="json")}, run / "checkpoints" / f"{name}.pt")
    (run / "metrics").mkdir()
    (run / "metrics" / "best-loc-test.json").write_text(
        json.dumps({"localization": {"tau_star_valpx": 0.4}}))
    return run


def tissue_rgb(h: int, w: int, seed: int = 0, tissue: np.ndarray | None = None) -> np.ndarray:
    """White glass with pink, textured tissue where ``tissue`` (default: everywhere)."""
    rng = np.random.default_rng(seed)
    pink = np.stack([rng.integers(150, 230, (h, w)), rng.integers(40, 140, (h, w)),
                     rng.integers(110, 200, (h, w))], axis=2).astype(np.uint8)
    if tissue is None:
        return pink
    return np.where(tissue[..., None], pink, np.uint8(245))


def write_slide(path: Path, rgb: np.ndarray, mpp: float = 0.5) -> Path:
    """A tiled pyramidal TIFF (level 0 and a 4× level as successive pages, as OpenSlide reads
    generic TIFF)."""
    per_cm = 1e4 / mpp
    with tifffile.TiffWriter(path) as tw:
        tw.write(rgb, tile=(64, 64), photometric="rgb", compression="zlib",
                 resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
        tw.write(rgb[::4, ::4], tile=(64, 64), photometric="rgb", compression="zlib",
                 subfiletype=1, resolution=(per_cm / 4, per_cm / 4), resolutionunit="CENTIMETER")
    return path


class PixelModel(torch.nn.Module):
    """A model whose map is a known function of each pixel: 0.7 R + 0.3 B."""

    def forward(self, images):
        m = images.mean(dim=(1, 2, 3))
        return SimpleNamespace(logits=torch.stack([1 - m, m], dim=1))

    def localize_with_logits(self, images, classes, upsample=True):
        return self(images).logits, 0.7 * images[:, 0] + 0.3 * images[:, 2]


def pixel_predictor(eval_size: int) -> Predictor:
    return Predictor(PixelModel(), None, ["normal", "tumor"], 1, eval_size, torch.device("cpu"),
                     "best-loc", "best-loc", 0.8, "test")


def pixel_reference(rgb: np.ndarray, d: int, tile: int) -> np.ndarray:
    """The map computed on the whole slide at once (white beyond the edges, as tiles read it),
    d×d block means."""
    h, w = rgb.shape[:2]
    H, W = math.ceil(h / d) * d, math.ceil(w / d) * d
    padded = np.full((H, W, 3), 255, np.uint8)
    padded[:h, :w] = rgb
    f = (0.7 * padded[..., 0] + 0.3 * padded[..., 2]) / 255.0
    return f.reshape(H // d, d, W // d, d).mean(axis=(1, 3))


# ------------------------------------------------------------------ blending
def test_window_weights_sum_to_one_in_overlaps() -> None:
    w = ramp_window(12, 4)
    # hand values: sin²(π/2 (i+½)/4) for i = 0..3, then 1, then the mirror
    rise = [math.sin(math.pi / 2 * (i + 0.5) / 4) ** 2 for i in range(4)]
    np.testing.assert_allclose(w, rise + [1.0] * 4 + rise[::-1], atol=1e-12)
    # tiles 8 apart: the falling ramp of one + the rising ramp of the next = 1 exactly
    np.testing.assert_allclose(w[8:] + w[:4], 1.0, atol=1e-12)
    # 2-D, three tiles per axis at stride 8 on a 28×28 map: sum 1 wherever two or four tiles meet
    s = Stitcher((28, 28), 12, 4)
    for r in (0, 8, 16):
        for c in (0, 8, 16):
            s.add(r, c, np.zeros((12, 12)))
    den = np.asarray(s.den)
    np.testing.assert_allclose(den[4:24, 4:24], 1.0, atol=1e-6)
    assert den[0, 0] == pytest.approx(rise[0] ** 2, rel=1e-6)  # only one tile at the corner
    np.testing.assert_allclose(tile_window(12, 0), 1.0)
    with pytest.raises(ValueError, match="half the tile"):
        ramp_window(12, 7)


def test_stitching_a_constant_and_a_known_field_has_no_seams() -> None:
    # a constant field tiled with overlap (and a map size that is no multiple of the stride)
    s = Stitcher((23, 31), 8, 2)
    for r in axis_starts(23, 8, 6):
        for c in axis_starts(31, 8, 6):
            s.add(int(r), int(c), np.full((8, 8), 0.37))
    out = s.write(np.empty((23, 31), np.float32))
    np.testing.assert_allclose(out, 0.37, atol=1e-6)
    # tiles cut from a known field (a ramp) reproduce it exactly, edges included
    field = np.add.outer(np.arange(23) * 0.01, np.arange(31) * 0.02)
    s = Stitcher((23, 31), 8, 2)
    for r in axis_starts(23, 8, 6):
        for c in axis_starts(31, 8, 6):
            t = np.zeros((8, 8))
            part = field[r:r + 8, c:c + 8]
            t[:part.shape[0], :part.shape[1]] = part
            s.add(int(r), int(c), t)
    np.testing.assert_allclose(s.write(np.empty((23, 31))), field, atol=1e-5)
    # no tile: 0, not NaN
    assert Stitcher((3, 3), 2, 0).write(np.ones((3, 3))).tolist() == [[0.0] * 3] * 3


@pytest.mark.parametrize("tile,overlap,d", [(64, 16, 8), (48, 0, 8), (40, 16, 4)])
def test_slide_map_equals_the_map_computed_on_the_whole_slide(tmp_path, tile, overlap, d) -> None:
    rgb = tissue_rgb(203, 157, seed=tile)  # not a multiple of any tile size
    slide = write_slide(tmp_path / "s.tif", rgb)
    opts = SlideOptions(tile=tile, overlap=overlap, map_downsample=d, batch_size=7, num_workers=0,
                        weight_by_probability=False, regions=False)
    summary = predict_slide(pixel_predictor(tile), slide, tmp_path / "out", "s", opts, tile, None)
    got = np.load(tmp_path / "out" / "s.map.npy").astype(np.float64)
    ref = pixel_reference(rgb, d, tile)
    assert got.shape == ref.shape == (math.ceil(203 / d), math.ceil(157 / d))
    np.testing.assert_allclose(got, ref, atol=1e-3)
    assert summary["tiles"] == len(axis_starts(203, tile, tile - overlap)) * \
        len(axis_starts(157, tile, tile - overlap))


# ------------------------------------------------------------------ GeoJSON
def test_geojson_polygon_of_a_mask_with_a_hole_in_level0_coordinates() -> None:
    mask = np.zeros((6, 8), bool)
    mask[1:5, 2:7] = True  # a 4×5 block ...
    mask[2:4, 4] = False  # ... with a 2×1 hole
    mask[5, 0] = True  # and a separate pixel
    prob = np.where(mask, 0.5, 0.0)
    prob[1, 2] = 0.9
    fc = region_features(mask, prob, name="tumor", color=(255, 0, 0), scale=4.0, origin=(100, 0))
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 2
    block = fc["features"][0]
    outer, hole = block["geometry"]["coordinates"]
    # level-0 = 100 + 4·x, 4·y on the pixel edges
    assert sorted(map(tuple, outer[:-1])) == sorted([(108, 4), (128, 4), (128, 20), (108, 20)])
    assert sorted(map(tuple, hole[:-1])) == sorted([(116, 8), (120, 8), (120, 16), (116, 16)])
    assert outer[0] == outer[-1] and hole[0] == hole[-1]
    assert signed_area(np.array(outer[:-1])) > 0 > signed_area(np.array(hole[:-1]))
    props = block["properties"]
    assert props["classification"] == {"name": "tumor", "color": [255, 0, 0]}
    assert props["measurements"]["mean probability"] == pytest.approx((17 * 0.5 + 0.9) / 18)
    assert props["measurements"]["area (level-0 px^2)"] == pytest.approx(18 * 16)
    single = fc["features"][1]["geometry"]["coordinates"]
    assert sorted(map(tuple, single[0][:-1])) == [(100, 20), (100, 24), (104, 20), (104, 24)]
    # clipped to the slide: the last row of map pixels reaches past a 22-pixel-high slide
    clipped = region_features(mask, prob, name="tumor", color=(255, 0, 0), scale=4.0,
                              origin=(100, 0), bounds=(1000, 22))
    single = clipped["features"][1]["geometry"]["coordinates"]
    assert sorted(map(tuple, single[0][:-1])) == [(100, 20), (100, 22), (104, 20), (104, 22)]
    assert clipped["features"][1]["properties"]["measurements"]["area (level-0 px^2)"] == 8


def test_diagonal_pixels_are_separate_polygons() -> None:
    polygons, _ = mask_polygons(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], bool))
    assert len(polygons) == 3 and all(len(p["outer"]) == 4 and not p["holes"] for p in polygons)


# ------------------------------------------------------------------ pyramid
def test_pyramid_levels_shapes_values_and_resolution(tmp_path) -> None:
    rng = np.random.default_rng(0)
    values = rng.random((600, 1000)).astype(np.float32)
    path = write_pyramid(values, tmp_path / "h.tif", downsample=8, mpp=0.5, scratch=tmp_path / "w")
    assert level_shapes((600, 1000)) == [(600, 1000), (300, 500), (150, 250)]
    with tifffile.TiffFile(path) as tif:
        assert [p.shape for p in tif.pages] == [(600, 1000), (300, 500), (150, 250)]
        for k, page in enumerate(tif.pages):
            assert page.is_tiled and page.tilewidth == 256 and page.dtype == np.uint8
            assert page.tags["ResolutionUnit"].value == 3  # centimetre
            num, den = page.tags["XResolution"].value
            assert num / den == pytest.approx(1e4 / (0.5 * 8 * 2 ** k), rel=1e-6)
            assert json.loads(page.description)["level0_downsample"] == 8 * 2 ** k
            assert page.tags["NewSubfileType"].value == (1 if k else 0)
        level0, level1 = tif.pages[0].asarray(), tif.pages[1].asarray()
    np.testing.assert_array_equal(level0, np.rint(values * 255).astype(np.uint8))
    expect = values.reshape(300, 2, 500, 2).mean(axis=(1, 3))
    assert np.abs(level1.astype(float) - expect * 255).max() <= 0.51
    assert not list((tmp_path / "w").iterdir())  # the temporary levels are gone


# ------------------------------------------------------------------ tissue and grid
def test_tile_grid_covers_tissue_only(tmp_path) -> None:
    h, w = 300, 420
    yy, xx = np.mgrid[:h, :w]
    tissue = ((yy - 150) / 90) ** 2 + ((xx - 150) / 100) ** 2 < 1  # an ellipse ...
    tissue |= (yy > 40) & (yy < 100) & (xx > 330) & (xx < 400)  # ... and a rectangle
    rgb = tissue_rgb(h, w, tissue=tissue)
    reader = SlideReader(write_slide(tmp_path / "t.tif", rgb))
    assert reader.level_downsamples == [1.0, 4.0]
    thumb = reader.thumbnail(4)
    assert thumb.shape == (75, 105, 3)
    found = tissue_mask(thumb)
    truth = tissue[::4, ::4]
    assert (found == truth).mean() > 0.97
    grid = tile_grid((w, h), found, 4, tile=40, overlap=8, map_downsample=8)
    covered = np.zeros((h, w), bool)
    thumb_tissue = np.kron(found, np.ones((4, 4), bool))[:h, :w]
    for x, y in grid.positions:
        assert thumb_tissue[y:y + 40, x:x + 40].any()  # every tile holds tissue
        covered[y:y + 40, x:x + 40] = True
    assert covered[thumb_tissue].all()  # and every tissue pixel lies in a tile
    all_tiles = len(axis_starts(h, 40, 32)) * len(axis_starts(w, 40, 32))
    assert 0 < len(grid.positions) < all_tiles
    assert np.all((grid.tissue > 0) & (grid.tissue <= 1))


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
    assert recorded_tau(run, "best-loc")[0] == 0.4
    tau, why = recorded_tau(run, "best-cl")
    assert tau is None and "histocam evaluate" in why
    ckpt = run.checkpoint_path("best-loc")
    metrics = run_dir / "metrics" / "best-loc-test.json"
    old = metrics.stat().st_mtime
    os.utime(metrics, (old - 1000, old - 1000))
    try:
        tau, why = recorded_tau(run, "best-loc")
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
    opts = dict(tile=64, overlap=16, map_downsample=8, batch_size=4, num_workers=0)
    full = predict_slide(predictor, slide, tmp_path / "full", "s", SlideOptions(**opts), 64, 1)
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
            predict_slide(predictor, slide, tmp_path / "part", "s", SlideOptions(**opts), 64, 1)
        assert len(list((tmp_path / "part" / "s.work" / "batches").glob("batch-*.npz"))) == 2
        with pytest.raises(DataError, match=r"other settings \(overlap, tiles\)"):
            predict_slide(predictor, slide, tmp_path / "part", "s",
                          SlideOptions(**{**opts, "overlap": 8}), 64, 1)
        calls.clear()
        stop = False
        again = predict_slide(predictor, slide, tmp_path / "part", "s", SlideOptions(**opts), 64, 1)
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
    assert not (tmp_path / "part" / "s.work").exists()
    # a finished slide is skipped
    assert predict_slide(predictor, slide, tmp_path / "part", "s", SlideOptions(**opts), 64,
                         1)["skipped"]
    assert full["prediction"] in ("normal", "tumor") and full["aggregation"].startswith("max")


# ------------------------------------------------------------------ CLI and bad inputs
def test_cli_predicts_a_slide_with_all_outputs(run_dir, tmp_path) -> None:
    tissue = np.zeros((200, 260), bool)
    tissue[30:170, 40:220] = True
    write_slide(tmp_path / "s.tif", tissue_rgb(200, 260, tissue=tissue))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["predict", str(run_dir), str(tmp_path / "s.tif"), "--out",
                                   str(out), "--device", "cpu", "--workers", "0", "--tile", "64",
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
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
    h, w = overlay.shape[:2]
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
                                   "--no-progress"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0]
    assert problem in lines[0]


def test_map_class_and_checkpoint_errors(run_dir, tmp_path) -> None:
    with pytest.raises(ValueError, match="'lymph' is not a class"):
        Predictor.from_run(run_dir, device="cpu", map_class="lymph")
    with pytest.raises(ValueError, match="--checkpoint must be one of"):
        Predictor.from_run(run_dir, "best", device="cpu")


# ------------------------------------------------------------------ real slides
@pytest.mark.skipif(not (SLIDES / "CMU-1-Small-Region.svs").is_file(), reason="no shared slides")
@pytest.mark.parametrize("name", ["CMU-1-Small-Region.svs", "TCGA-CR-7395-01A-01-TS1.svs"])
def test_real_slides_give_the_same_tile_pixels_with_openslide_and_tiffslide(name) -> None:
    a, b = SlideReader(SLIDES / name, "openslide"), SlideReader(SLIDES / name, "tiffslide")
    assert a.dimensions == b.dimensions and a.level_dimensions == b.level_dimensions
    w, h = a.dimensions
    for x, y in [(0, 0), (w // 2, h // 3), (w - 100, h - 100)]:  # the last overhangs the edge
        ta, tb = a.read(x, y, 256, 256), b.read(x, y, 256, 256)
        assert np.abs(ta.astype(int) - tb.astype(int)).max() <= 2
    level = len(a.level_dimensions) - 1
    np.testing.assert_allclose(a.read(0, 0, 64, 64, level).astype(int),
                               b.read(0, 0, 64, 64, level).astype(int), atol=2)


def test_torchrun_ranks_share_the_slides(run_dir, tmp_path, monkeypatch) -> None:
    slides = []
    for k in range(3):
        tissue = np.zeros((120, 100), bool)
        tissue[10:110, 10:90] = True
        slides.append(write_slide(tmp_path / f"s{k}.tif", tissue_rgb(120, 100, k, tissue)))
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = predict(run_dir, [tmp_path], tmp_path / "out", device="cpu", num_workers=0,
                     slide_options=SlideOptions(tile=64))
    assert (result.rank, result.world_size) == (1, 2)
    assert [Path(s["slide"]).name for s in result.slides] == ["s1.tif"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.json")) == ["s1.json"]


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
