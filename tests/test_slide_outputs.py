"""What a predicted slide gives a pathologist: tiles at the run's microns per pixel, a heatmap TIFF
masked to tissue with its pixel size that opens as a pyramid aligned with the slide, QuPath GeoJSON
(tissue, regions, tile detections), an overlay without a tile pattern or holes, with its colour bar
and scale bar, and the slide score's aggregation rules."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch
from helpers import predict_run, tissue_rgb, write_slide
from PIL import Image

from histocam.data.config import DataConfig
from histocam.data.errors import DataError
from histocam.data.mpp import CAMELYON16_MPP, GLAS_MPP, SYNTHETIC_MPP, dataset_mpp
from histocam.predict import Predictor, SlideOptions, predict, predict_slide
from histocam.predict.aggregate import SlideScore, resolve_aggregation
from histocam.predict.legend import add_legend, nice_length
from histocam.wsi.maps import resample_mask
from histocam.wsi.scale import magnification_mpp, read_mpp_table

shapely_geometry = pytest.importorskip("shapely.geometry")


def slide_folder(out: Path, stem: str) -> Path:
    return out / "slides" / stem


def summary_of(out: Path, stem: str) -> dict:
    return json.loads((slide_folder(out, stem) / f"{stem}.json").read_text())


# ------------------------------------------------------------------ microns
@pytest.fixture(scope="module")
def half_micron_run(tmp_path_factory) -> Path:
    """A run whose training data is 0.5 µm/px (``data.mpp``)."""
    return predict_run(tmp_path_factory.mktemp("runs"), "half", mpp=0.5)


def test_a_run_at_half_a_micron_tiles_a_quarter_micron_slide_at_half_a_micron(
        half_micron_run, tmp_path) -> None:
    tissue = np.zeros((400, 480), bool)
    tissue[40:360, 60:420] = True
    slide = write_slide(tmp_path / "q.tif", tissue_rgb(400, 480, 1, tissue), mpp=0.25)
    predict(half_micron_run, [slide], tmp_path / "out", device="cpu", num_workers=0)
    summary = summary_of(tmp_path / "out", "q")
    scale = summary["scale"]
    assert scale["tile_mpp"] == 0.5 and scale["tile_mpp_source"].startswith("the run's")
    assert scale["slide_mpp"] == 0.25 and scale["level0_per_tile_pixel"] == 2.0
    assert summary["map_level0_downsample"] == 16 and scale["map_mpp"] == 4.0
    rows = list(csv.DictReader((slide_folder(tmp_path / "out", "q") / "q.tiles.csv").open()))
    assert {int(r["width"]) for r in rows} == {144}  # the run's 72-pixel tiles, at 2 level-0 px
    assert np.load(slide_folder(tmp_path / "out", "q") / "q.map.npy").shape == (25, 30)


def test_magnification_and_mpp_override_the_run_and_slides_without_mpp_say_how(
        half_micron_run, tmp_path) -> None:
    rgb = tissue_rgb(300, 300, 2, np.pad(np.ones((200, 200), bool), 50))
    write_slide(tmp_path / "a.tif", rgb, mpp=0.5)
    predict(half_micron_run, [tmp_path / "a.tif"], tmp_path / "o1", device="cpu", num_workers=0,
            slide_options=SlideOptions(magnification=10))
    assert summary_of(tmp_path / "o1", "a")["scale"]["level0_per_tile_pixel"] == 2.0  # 1 µm/px
    assert magnification_mpp(40) == 0.25
    write_slide(tmp_path / "n.tif", rgb, mpp=None)
    with pytest.raises(DataError, match="n.tif: the slide does not record its microns per pixel: "
                                        "pass --slide-mpp"):
        predict(half_micron_run, [tmp_path / "n.tif"], tmp_path / "o2", device="cpu",
                num_workers=0)
    predict(half_micron_run, [tmp_path / "n.tif"], tmp_path / "o3", device="cpu", num_workers=0,
            slide_options=SlideOptions(slide_mpp=0.25))
    assert summary_of(tmp_path / "o3", "n")["scale"]["slide_mpp_source"] == "--slide-mpp"
    (tmp_path / "mpp.csv").write_text("slide,mpp\nn.tif,1.0\n")
    predict(half_micron_run, [tmp_path / "n.tif"], tmp_path / "o4", device="cpu", num_workers=0,
            slide_options=SlideOptions(mpp_table=read_mpp_table(tmp_path / "mpp.csv"),
                                       slide_mpp=0.25))  # the table wins
    assert summary_of(tmp_path / "o4", "n")["scale"]["slide_mpp"] == 1.0


def test_training_data_scales(tmp_path) -> None:
    assert dataset_mpp(DataConfig(dataset="synthetic-node"))[0] == SYNTHETIC_MPP
    assert dataset_mpp(DataConfig(dataset="glas", root=tmp_path))[0] == GLAS_MPP
    lists = tmp_path / "CAMELYON512" / "fold-0"
    lists.mkdir(parents=True)
    assert dataset_mpp(DataConfig(dataset=str(lists)))[0] == CAMELYON16_MPP
    assert dataset_mpp(DataConfig(dataset="synthetic-node", mpp=0.25)) == (0.25, "data.mpp")
    (tmp_path / "own.csv").write_text("image,label,mpp\na.png,0,0.46\nb.png,1,0.46\n")
    assert dataset_mpp(DataConfig(dataset=str(tmp_path / "own.csv")))[0] == 0.46
    (tmp_path / "mixed.csv").write_text("image,label,mpp\na.png,0,0.25\nb.png,1,0.5\n")
    with pytest.raises(DataError, match="several values"):
        dataset_mpp(DataConfig(dataset=str(tmp_path / "mixed.csv")))
    (tmp_path / "plain").mkdir()
    mpp, why = dataset_mpp(DataConfig(dataset=str(tmp_path / "plain")))
    assert mpp is None and "--mpp" in why


# ------------------------------------------------------------------ heatmap and GeoJSON
@pytest.fixture(scope="module")
def predicted(run_dir, tmp_path_factory) -> tuple[Path, Path]:
    """A 2200×600 slide (0.5 µm/px) with a block of tissue on glass, predicted with regions at
    threshold 0.3, the RGBA heatmap and default options otherwise."""
    root = tmp_path_factory.mktemp("heatmap")
    tissue = np.zeros((600, 2200), bool)
    tissue[150:450, 700:1300] = True
    slide = write_slide(root / "h.tif", tissue_rgb(600, 2200, 3, tissue))
    predict(run_dir, [slide], root / "out", device="cpu", num_workers=0, threshold=0.3,
            slide_options=SlideOptions(tile=64, heatmap_rgba=True))
    return slide, slide_folder(root / "out", "h")


@pytest.mark.parametrize("library", ["openslide", "tiffslide"])
def test_heatmap_is_masked_to_tissue_carries_its_pixel_size_and_aligns_as_a_pyramid(
        predicted, library) -> None:
    slide_path, folder = predicted
    summary = json.loads((folder / "h.json").read_text())
    d = summary["map_level0_downsample"]
    assert d == 8
    lib = pytest.importorskip(library)
    opener = lib.OpenSlide if library == "openslide" else lib.TiffSlide
    heat, slide = opener(str(folder / "h.heatmap.tif")), opener(str(slide_path))
    assert heat.level_count >= 2 and heat.level_downsamples[1] == pytest.approx(2.0, rel=0.03)
    assert float(heat.properties[f"{library}.mpp-x"]) == pytest.approx(0.5 * d)
    for hw, sw in zip(heat.dimensions, slide.dimensions):  # same extent within one map pixel
        assert abs(hw * d - sw) < d
    with tifffile.TiffFile(folder / "h.heatmap.tif") as tif:
        assert json.loads(tif.pages[0].description)["level0_downsample"] == d
        values = tif.pages[0].asarray().astype(np.float64)
    tissue = np.asarray(Image.open(folder / "h.tissue.png")) > 0
    on_tissue = resample_mask(tissue, summary["tissue"]["thumbnail_level0_downsample"],
                              values.shape, d)
    assert values.sum() > 0 and values[~on_tissue].sum() <= 0.01 * values.sum()
    rgba = opener(str(folder / "h.heatmap-rgba.tif"))
    assert rgba.dimensions == heat.dimensions
    with tifffile.TiffFile(folder / "h.heatmap-rgba.tif") as tif:
        alpha = tif.pages[0].asarray()[..., 3]
    np.testing.assert_array_equal(alpha, values.astype(np.uint8))  # alpha = the value


def _check_qupath_features(path: Path, object_type: str) -> list[dict]:
    fc = json.loads(path.read_text())
    assert fc["type"] == "FeatureCollection" and fc["features"]
    for feature in fc["features"]:
        assert feature["type"] == "Feature"
        props = feature["properties"]
        assert props["objectType"] == object_type
        cls = props["classification"]
        assert isinstance(cls["name"], str) and len(cls["color"]) == 3
        assert all(isinstance(c, int) and 0 <= c <= 255 for c in cls["color"])
        assert isinstance(props["measurements"], dict)
        assert all(isinstance(v, float) for v in props["measurements"].values())
        shape = shapely_geometry.shape(feature["geometry"])
        assert feature["geometry"]["type"] == "Polygon" and shape.is_valid and shape.area > 0
    return fc["features"]


def test_geojson_tissue_regions_and_tiles_load_in_qupaths_schema(predicted) -> None:
    _, folder = predicted
    tissue = _check_qupath_features(folder / "h.tissue.geojson", "annotation")
    x0, y0, x1, y1 = shapely_geometry.shape(tissue[0]["geometry"]).bounds  # within 5 µm
    assert max(abs(x0 - 700), abs(x1 - 1300), abs(y0 - 150), abs(y1 - 450)) <= 10
    regions = _check_qupath_features(folder / "h.region.geojson", "annotation")
    for feature in regions:
        assert feature["properties"]["measurements"]["area (µm^2)"] >= 10_000  # minimum area
    tiles = _check_qupath_features(folder / "h.tiles.geojson", "detection")
    rows = list(csv.DictReader((folder / "h.tiles.csv").open()))
    assert len(tiles) == len(rows)
    for feature, row in zip(tiles, rows):
        assert feature["properties"]["measurements"]["P(tumor)"] == \
            pytest.approx(float(row["p_tumor"]), abs=1e-6)


# ------------------------------------------------------------------ overlay
class CamLike(torch.nn.Module):
    """A classifier whose probability depends on the tile's mean red and whose map, like a CAM's,
    is min–max normalised per tile: 1 at the tile's centre, 0 at its corners."""

    probability_maps = False

    def forward(self, images):
        z = 8.0 * (images[:, 0].mean(dim=(1, 2)) - 0.5)
        return SimpleNamespace(logits=torch.stack([-z, z], dim=1))

    def localize_with_logits(self, images, classes, upsample=True):
        n = images.shape[-1]
        ramp = torch.sin(math.pi * (torch.arange(n) + 0.5) / n)
        bump = torch.outer(ramp, ramp)
        bump = (bump - bump.min()) / (bump.max() - bump.min())
        return self(images).logits, bump.expand(images.shape[0], n, n)


def uniform_tumour_slide(path: Path) -> tuple[Path, tuple[slice, slice]]:
    """Glass with a 480×640 block of one tumour colour (noise σ 3) holding a 12-pixel lumen."""
    rng = np.random.default_rng(0)
    rgb = np.clip(243 + rng.normal(0, 2, (640, 800, 3)), 0, 255)
    block = (slice(80, 560), slice(80, 720))
    rgb[block] = np.clip(np.array([190.0, 70.0, 160.0]) + rng.normal(0, 3, (480, 640, 3)), 0, 255)
    yy, xx = np.mgrid[:640, :800]
    rgb[(yy - 300) ** 2 + (xx - 400) ** 2 < 36] = 243  # a lumen of 28 µm²
    return write_slide(path, rgb.astype(np.uint8)), block


@pytest.mark.parametrize("slide_map,uniform", [("auto", True), ("map", False)])
def test_a_uniform_tumour_region_gives_a_uniform_overlay_without_holes(tmp_path, slide_map,
                                                                       uniform) -> None:
    slide, (rows, cols) = uniform_tumour_slide(tmp_path / "u.tif")
    predictor = Predictor(CamLike(), None, ["normal", "tumor"], 1, 64, torch.device("cpu"),
                          "best-loc", "best-loc", None, "test")
    opts = SlideOptions(tile=64, overlap=16, map_downsample=8, num_workers=0, slide_map=slide_map)
    summary = predict_slide(predictor, slide, tmp_path / "out", "u", opts, default_tile=64,
                            run_mpp=(0.5, "test"), positive=1)
    values = np.load(tmp_path / "out" / "u.map.npy").astype(np.float64)
    d = 8  # map pixels: the interior one tile (8 map pixels) inside the block's edges
    inner = values[rows.start // d + 8:rows.stop // d - 8, cols.start // d + 8:cols.stop // d - 8]
    variation = (inner.max() - inner.min()) / inner.mean()
    assert (variation < 0.05) == uniform, variation  # the CAM-like maps make a honeycomb
    tissue = np.asarray(Image.open(tmp_path / "out" / "u.tissue.png")) > 0
    assert tissue[300, 400]  # the lumen is filled (below --tissue-max-hole) ...
    assert values[300 // d, 400 // d] > 0.5 * inner.mean()  # ... and has the map: no hole
    covered = resample_mask(tissue, summary["tissue"]["thumbnail_level0_downsample"],
                            values.shape, d)
    assert (values[covered] > 0).all()  # every tissue pixel lies under a tile


def test_the_overlay_has_a_colour_bar_and_a_scale_bar() -> None:
    picture = np.full((300, 500, 3), 200, np.uint8)
    out = add_legend(picture, title="P(tumor) of the tiles", value_range=(0.0, 1.0), um_per_px=2.0)
    assert out.shape[1] == 500 and out.shape[0] > 300
    np.testing.assert_array_equal(out[:300], picture)
    strip = out[300:].reshape(-1, 3).astype(int)
    assert ((strip[:, 0] > 100) & (strip[:, 2] < 60)).any()  # the colour bar's red end
    assert ((strip[:, 2] > 100) & (strip[:, 0] < 60)).any()  # and its blue end
    assert [nice_length(v) for v in (180, 1000, 499, 7.5)] == [100, 1000, 200, 5]


# ------------------------------------------------------------------ slide score
def test_aggregation_rules_by_hand() -> None:
    names = ["normal", "tumor"]
    tiles = [(0.9, 1.0), (0.8, 0.5), (0.1, 1.0), (0.2, 1.0), (0.05, 0.5)]  # P(tumor), tissue

    def score(rule: str, k: int = 2, area: float | None = None) -> dict:
        s = SlideScore(names, rule, 1, k)
        for p, t in tiles:
            s.add(np.array([1 - p, p]), t)
        return s.result(area)

    assert score("max")["score"] == pytest.approx(0.9) and score("max")["label"] == "tumor"
    assert score("topk")["score"] == pytest.approx(0.85)
    assert score("topk", k=3)["score"] == pytest.approx((0.9 + 0.8 + 0.2) / 3)
    assert score("topk", k=3)["label"] == "tumor" and score("topk", k=5)["label"] == "normal"
    mean = (0.9 + 0.4 + 0.1 + 0.2 + 0.025) / 4
    assert score("mean")["probabilities"]["tumor"] == pytest.approx(mean)
    assert score("mean")["label"] == "normal" and score("mean")["score"] == pytest.approx(1 - mean)
    assert score("area", area=0.0)["label"] == "normal"
    assert score("area", area=0.12)["score"] == 0.12 and score("area", area=0.12)["label"] == "tumor"
    assert resolve_aggregation("auto", 1, 5) == "topk" and resolve_aggregation("auto", None, 5) == "mean"
    with pytest.raises(ValueError, match="needs a positive class"):
        resolve_aggregation("max", None, 5)


# ------------------------------------------------------------------ report
def test_the_report_shows_predicted_slides(predicted, tmp_path) -> None:
    from histocam.report import build_report

    _, folder = predicted
    page = build_report([], tmp_path / "r.html", slides=[folder.parent.parent]).read_text()
    summary = json.loads((folder / "h.json").read_text())
    assert '<h2 id="slides">Slides</h2>' in page and "<h3>h.tif</h3>" in page
    assert f"<td class=\"text\">{summary['label']}</td>" in page and summary["rule"] in page
    assert page.count('src="data:image/jpeg') == 2  # thumbnail and overlay
    assert f"{summary['region']['area_mm2']:.3f}" in page
    with pytest.raises(DataError, match="holds no predicted slide"):
        build_report([], tmp_path / "r2.html", slides=[tmp_path])


def test_resampling_between_grids() -> None:
    from scipy import ndimage

    from histocam.wsi.maps import resample_values

    v = np.random.default_rng(0).random((13, 17)).astype(np.float32)
    got = resample_values(v, 8.0, (50, 70), 2.0)  # 4 output pixels per input pixel
    rr, cc = np.meshgrid((np.arange(50) + 0.5) / 4 - 0.5, (np.arange(70) + 0.5) / 4 - 0.5,
                         indexing="ij")
    np.testing.assert_allclose(got, ndimage.map_coordinates(v, [rr, cc], order=1, mode="nearest"),
                               atol=1e-6)
    mask = np.zeros((4, 5), bool)
    mask[1, 2] = True
    fine = resample_mask(mask, 8.0, (10, 12), 4.0)  # pixel centres 2, 6, 10, ... level 0
    assert fine[2:4, 4:6].all() and fine.sum() == 4
    assert resample_mask(mask, 8.0, (3, 12), 4.0, row0=2).tolist() == fine[2:5].tolist()
    assert resample_mask(mask, 8.0, (20, 20), 4.0).shape == (20, 20)  # past the edge: nearest
