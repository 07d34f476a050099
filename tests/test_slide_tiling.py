"""Tiled slide prediction: blending windows, seamless stitching, GeoJSON polygons, pyramids, tile
grids, and the two slide readers on real slides (split from test_predict.py)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import tifffile
import torch
from helpers import SHARED, tissue_rgb, write_slide

from histocam.predict import Predictor, SlideOptions, predict_slide
from histocam.predict.export import write_heatmap
from histocam.wsi.geojson import mask_polygons, region_features, signed_area
from histocam.wsi.grid import axis_starts, tile_grid
from histocam.wsi.pyramid import level_shapes
from histocam.wsi.reader import SlideReader
from histocam.wsi.stitch import Stitcher, ramp_window, tile_window
from histocam.wsi.tissue import detect_tissue

SLIDES = SHARED / "data" / "slides"


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


@pytest.mark.parametrize("n,overlap", [(8, 2), (7, 2), (8, 0), (12, 6)])
def test_one_value_per_tile_is_interpolated_bilinearly_between_tile_centres(n, overlap) -> None:
    """Triangles one stride apart sum to one, so values taken from a linear field at the tiles'
    centres give back that field everywhere between the first and the last centre."""
    stride = n - overlap
    starts = axis_starts(60, n, stride)
    s = Stitcher((60, 60), n, overlap, values=True)
    field = lambda y, x: 0.2 + 0.01 * y + 0.004 * x  # noqa: E731
    for r in starts:
        for c in starts:
            s.add(int(r), int(c), field(r + n / 2, c + n / 2))
    out = s.write(np.empty((60, 60)))
    first, last = int(np.ceil(n / 2)), int(starts[-1] + n / 2)
    yy, xx = np.mgrid[first:last, first:last] + 0.5
    np.testing.assert_allclose(out[first:last, first:last], field(yy, xx), atol=1e-5)
    assert (np.asarray(s.den) > 0).all()  # every tile pixel covered, edges included


@pytest.mark.parametrize("tile,overlap,d", [(64, 16, 8), (48, 0, 8), (40, 16, 4)])
def test_slide_map_equals_the_map_computed_on_the_whole_slide(tmp_path, tile, overlap, d) -> None:
    rgb = tissue_rgb(203, 157, seed=tile)  # not a multiple of any tile size
    slide = write_slide(tmp_path / "s.tif", rgb)
    opts = SlideOptions(tile=tile, overlap=overlap, map_downsample=d, batch_size=7, num_workers=0,
                        weight_by_probability=False, regions=False, slide_map="map")
    summary = predict_slide(pixel_predictor(tile), slide, tmp_path / "out", "s", opts,
                            default_tile=tile, run_mpp=(0.5, "test"), positive=None)
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
    path = write_heatmap(values, tmp_path / "h.tif", downsample=8, mpp=0.5, scratch=tmp_path / "w")
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
    found = detect_tissue(thumb, 2.0 * 4).mask  # read as 2 µm/px: the rectangle is 16 800 µm²
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

