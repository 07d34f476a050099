"""``histocam data synth-slide``: the pyramidal TIFF it writes (both slide backends, MPP), its
known tumour mask, and its GeoJSON (valid polygons by shapely, level-0 coordinates, exactly the
mask); the RGB pyramid writer; the GeoJSON of predict's region tracer checked with shapely too."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from histocam.cli import app
from histocam.wsi.annotations import read_annotations, regions_mask
from histocam.wsi.geojson import region_features
from histocam.wsi.pyramid import halve, write_pyramid
from histocam.wsi.reader import SlideReader
from histocam.wsi.synth_slide import GLASS, design_slide, write_synth_slide
from histocam.wsi.tissue import optical_density

shapely_geometry = pytest.importorskip("shapely.geometry")
from shapely.ops import unary_union  # noqa: E402

W, H, TILE = 704, 576, 64  # not multiples of the 256-pixel TIFF tiles


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return write_synth_slide(out, width=W, height=H, tile=TILE, tumours=3, seed=4, mpp=0.25,
                             mask_downsample=16, name="s")


def level0_mask(made) -> np.ndarray:
    with tifffile.TiffFile(made.mask_tif) as tif:
        return tif.pages[0].asarray() > 0


def test_halve_matches_a_loop_on_odd_shapes() -> None:
    rng = np.random.default_rng(0)
    for shape in [(3, 5), (7, 11), (5, 7, 3), (1, 1)]:
        src = rng.random(shape).astype(np.float32)
        h2, w2 = math.ceil(shape[0] / 2), math.ceil(shape[1] / 2)
        dst = np.empty((h2, w2, *shape[2:]), np.float32)
        halve(src, dst, band=2)  # several bands
        expect = np.empty_like(dst)
        for r in range(h2):
            for c in range(w2):
                expect[r, c] = src[2 * r:2 * r + 2, 2 * c:2 * c + 2].reshape(-1, *shape[2:]).mean(0)
        np.testing.assert_allclose(dst, expect, atol=1e-6)


def test_rgb_pyramid_pages_values_and_resolution(tmp_path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (300, 520, 3), dtype=np.uint8)
    path = write_pyramid(rgb, tmp_path / "p.tif", mpp=0.5, scratch=tmp_path / "w")
    with tifffile.TiffFile(path) as tif:
        assert [p.shape for p in tif.pages] == [(300, 520, 3), (150, 260, 3), (75, 130, 3)]
        assert all(p.is_tiled and p.photometric == 2 for p in tif.pages)  # RGB
        num, den = tif.pages[2].tags["XResolution"].value
        assert num / den == pytest.approx(1e4 / (0.5 * 4), rel=1e-6)
        np.testing.assert_array_equal(tif.pages[0].asarray(), rgb)
        level1 = tif.pages[1].asarray().astype(float)
    expect = rgb.reshape(150, 2, 260, 2, 3).mean(axis=(1, 3))
    assert np.abs(level1 - expect).max() <= 0.5
    with pytest.raises(ValueError, match="H×W or H×W×3"):
        write_pyramid(np.zeros((4, 4, 2), np.uint8), tmp_path / "bad.tif", mpp=None,
                      scratch=tmp_path / "w")


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_slide_opens_with_both_backends_with_its_mpp(slide, backend) -> None:
    pytest.importorskip(backend)
    reader = SlideReader(slide.slide, backend)
    assert reader.dimensions == (W, H)
    assert reader.mpp == pytest.approx(0.25)
    assert reader.level_dimensions == [(W, H), (352, 288), (176, 144)]
    with tifffile.TiffFile(slide.slide) as tif:
        level0 = tif.pages[0].asarray()
    np.testing.assert_array_equal(reader.read(130, 70, 200, 150), level0[70:220, 130:330])
    reader.close()


def test_known_mask_is_tumour_inside_tissue_and_the_png_is_its_block_fraction(slide) -> None:
    truth = level0_mask(slide)
    design = design_slide(W, H, 3, 4)
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    tissue = design.tissue.contains(xx, yy)
    wanted = np.zeros((H, W), bool)
    for blob in design.tumours:
        wanted |= blob.contains(xx, yy)
    assert truth.sum() == slide.tumour_pixels > 0.02 * H * W
    assert not (truth & ~(tissue & wanted)).any()  # tumour only where designed, in tissue
    assert (truth == (tissue & wanted)).mean() > 0.999  # and (nearly) all of the design
    with tifffile.TiffFile(slide.slide) as tif:
        rgb = tif.pages[0].asarray()
    od = optical_density(rgb, tuple(GLASS))  # absorbance above the glass colour
    assert np.percentile(od[~tissue], 99.9) < 0.03  # glass around the tissue: noise only
    assert od[tissue].mean() > 0.2
    png = np.asarray(Image.open(slide.mask_png)) > 0
    assert png.shape == (math.ceil(H / 16), math.ceil(W / 16))
    fraction = truth.reshape(H // 16, 16, W // 16, 16).mean(axis=(1, 3))
    np.testing.assert_array_equal(png, fraction >= 0.5)
    meta = json.loads(slide.summary.read_text())
    assert meta["tumour_pixels"] == truth.sum() and meta["mpp"] == 0.25


def test_geojson_is_valid_level0_polygons_of_exactly_the_mask(slide) -> None:
    truth = level0_mask(slide)
    collection = json.loads(slide.geojson.read_text())
    assert collection["type"] == "FeatureCollection" and collection["features"]
    shapes = []
    for feature in collection["features"]:
        assert feature["properties"]["classification"]["name"] == "Tumor"
        geometry = shapely_geometry.shape(feature["geometry"])
        assert geometry.is_valid, feature["id"]
        xmin, ymin, xmax, ymax = geometry.bounds
        assert 0 <= xmin and 0 <= ymin and xmax <= W and ymax <= H
        shapes.append(geometry)
    union = unary_union(shapes)
    assert union.area == pytest.approx(truth.sum())  # level-0 pixels, one unit each
    regions = read_annotations(slide.geojson)
    np.testing.assert_array_equal(regions_mask(regions, 0, 0, W, H), truth)


def test_region_tracer_gives_valid_polygons_with_holes_and_diagonal_contacts() -> None:
    """predict's regions at τ* use the same tracer: checked with shapely on a hard mask."""
    rng = np.random.default_rng(3)
    mask = rng.random((23, 31)) < 0.55
    mask[5:15, 5:15] = True
    mask[8:11, 8:11] = False  # a hole
    mask[0, 0] = mask[1, 1] = True
    mask[0, 1] = mask[1, 0] = False  # a diagonal contact
    collection = region_features(mask, mask.astype(float), name="tumor", color=(255, 0, 0),
                                 scale=4.0, origin=(100.0, 50.0))
    geometries = [shapely_geometry.shape(f["geometry"]) for f in collection["features"]]
    assert all(g.is_valid for g in geometries)
    assert sum(g.area for g in geometries) == pytest.approx(mask.sum() * 16)
    assert unary_union(geometries).area == pytest.approx(mask.sum() * 16)  # no overlaps
    regions = read_annotations_from(collection)
    back = regions_mask(regions, 100, 50, 31 * 4, 23 * 4)[::4, ::4]
    np.testing.assert_array_equal(back, mask)


def read_annotations_from(collection: dict):
    from histocam.wsi.annotations import Region

    return [Region([np.asarray(r, float) for r in f["geometry"]["coordinates"]], "tumor", False)
            for f in collection["features"]]


def test_normal_slide_and_cli(tmp_path) -> None:
    result = CliRunner().invoke(app, ["data", "synth-slide", "--out", str(tmp_path), "--size",
                                      "320x256", "--tile", "64", "--tumours", "0", "--name", "n"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "n.geojson").read_text())["features"] == []
    with tifffile.TiffFile(tmp_path / "truth" / "n.mask.tif") as tif:
        assert tif.pages[0].shape == (256, 320) and not tif.pages[0].asarray().any()
    assert not list(tmp_path.glob(".*work"))  # the scratch folder is gone
    for args, words in [(["--size", "12x"], "--size '12x'"),
                        (["--size", "100"], "smaller than one tile")]:
        bad = CliRunner().invoke(app, ["data", "synth-slide", "--out", str(tmp_path / "b"), *args])
        assert bad.exit_code == 2 and words in bad.output and bad.output.count("error:") == 1
    bad = CliRunner().invoke(app, ["data", "synth-slide", "--out", str(tmp_path / "b"),
                                   "--tile", "32"])  # the option's range: a usage error
    assert bad.exit_code == 2 and "'--tile'" in bad.output and "64" in bad.output
