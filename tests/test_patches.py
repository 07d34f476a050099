"""``histocam data patches``: the survey's Appendix B benchmark cut from annotated slides, checked on
synthetic slides against their known masks; annotation reading (GeoJSON, ASAP XML) and the
rasteriser against a slow point-in-polygon loop; slide-level splits; one clear error per bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from histocam.cli import app
from histocam.data.errors import DataError
from histocam.data.open import open_source
from histocam.wsi.annotations import Region, rasterize_rings, read_annotations, regions_mask
from histocam.wsi.patches import PatchProtocol, SlideEntry, assign_splits, build_patch_benchmark
from histocam.wsi.reader import SlideReader
from histocam.wsi.synth_slide import write_synth_slide
from histocam.wsi.tissue import TissueOptions, glass_colour, tissue_pixels

pytest.importorskip("tiffslide")
SIZE = 64
SPLIT_OF = {"t1": "train", "n1": "train", "t2": "valcl", "n2": "valcl", "t3": "test", "n3": "test"}


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> Path:
    """Three tumour and three normal synthetic slides (64-pixel tiles) in one folder."""
    folder = tmp_path_factory.mktemp("slides")
    for k, name in enumerate(SPLIT_OF):
        write_synth_slide(folder, width=576, height=448, tile=64, tumours=3 if name[0] == "t" else 0,
                          seed=10 + k, name=name)
    return folder


@pytest.fixture(scope="module")
def bench(slides, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench") / "b"
    split_file = out.parent / "splits.csv"
    split_file.write_text("slide,split\n" + "".join(f"{k},{v}\n" for k, v in SPLIT_OF.items()))
    normals = [slides / f"n{i}.tif" for i in (1, 2, 3)]
    build_patch_benchmark([slides / f"t{i}.tif" for i in (1, 2, 3)] + normals, [slides], out,
                          PatchProtocol(size=SIZE, p_n=0.5, valpx_per_class=2),
                          split_file=split_file)
    return out


def truth(slides: Path, name: str) -> np.ndarray:
    with tifffile.TiffFile(slides / "truth" / f"{name}.mask.tif") as tif:
        return tif.pages[0].asarray() > 0


def rows(bench: Path) -> list[dict]:
    with (bench / "patches.csv").open() as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ annotations
def inside_slow(ring: np.ndarray, x: float, y: float) -> bool:
    """Ray casting to +x, one edge at a time."""
    inside = False
    for (xa, ya), (xb, yb) in zip(ring, np.roll(ring, -1, axis=0)):
        if (ya <= y) != (yb <= y) and x < xa + (y - ya) * (xb - xa) / (yb - ya):
            inside = not inside
    return inside


@pytest.mark.parametrize("x0,y0,w,h", [(0, 0, 11, 7), (-2.0, 1.0, 5, 3), (3, -4, 13, 9)])
def test_rasterizer_equals_a_point_in_polygon_loop(x0, y0, w, h) -> None:
    rng = np.random.default_rng(w * h)
    rings = [np.array([[1.3, 0.2], [9.7, 2.1], [4.4, 6.9]]),  # a triangle
             np.array([[0, 0], [8, 0], [8, 6], [0, 6]], float),  # a square ...
             np.array([[2, 2], [2, 4], [5, 4], [5, 2]], float),  # ... with a hole
             np.column_stack([rng.uniform(-3, 14, 9), rng.uniform(-3, 10, 9)])]  # self-crossing
    for group in ([rings[0]], rings[1:3], [rings[3]]):
        got = rasterize_rings(group, x0, y0, w, h)
        expect = np.zeros((h, w), bool)
        for r in range(h):
            for c in range(w):
                cx, cy = x0 + c + 0.5, y0 + r + 0.5
                expect[r, c] = sum(inside_slow(g, cx, cy) for g in group) % 2 == 1
        np.testing.assert_array_equal(got, expect)


def test_square_with_hole_and_an_exclusion_by_hand() -> None:
    square = Region([np.array([[0, 0], [6, 0], [6, 5], [0, 5]], float),
                     np.array([[1, 1], [1, 3], [3, 3], [3, 1]], float)], "Tumor", False)
    island = Region([np.array([[4, 2], [5, 2], [5, 4], [4, 4]], float)], "_2", True)
    mask = regions_mask([square, island], 0, 0, 7, 6)
    expect = np.zeros((6, 7), bool)
    expect[0:5, 0:6] = True
    expect[1:3, 1:3] = False  # the hole
    expect[2:4, 4] = False  # the exclusion
    np.testing.assert_array_equal(mask, expect)


def test_asap_xml_and_geojson_give_the_same_mask(slides, tmp_path) -> None:
    regions = read_annotations(slides / "t1.geojson")
    coords = []
    for i, region in enumerate(regions):
        ring = region.rings[0]
        coords.append(f'<Annotation Name="A{i}" Type="Polygon" PartOfGroup="_0"><Coordinates>'
                      + "".join(f'<Coordinate Order="{k}" X="{x}" Y="{y}"/>'
                                for k, (x, y) in enumerate(ring)) + "</Coordinates></Annotation>")
    coords.append('<Annotation Name="E" Type="Polygon" PartOfGroup="_2"><Coordinates>'
                  '<Coordinate Order="0" X="0" Y="0"/><Coordinate Order="1" X="300" Y="0"/>'
                  '<Coordinate Order="2" X="300" Y="448"/><Coordinate Order="3" X="0" Y="448"/>'
                  "</Coordinates></Annotation>")
    xml = tmp_path / "t1.xml"
    xml.write_text("<ASAP_Annotations><Annotations>" + "".join(coords)
                   + "</Annotations></ASAP_Annotations>")
    outer_only = [Region(r.rings[:1], r.name, False) for r in regions]
    expect = regions_mask(outer_only, 0, 0, 576, 448)
    expect[:, :300] = False
    np.testing.assert_array_equal(regions_mask(read_annotations(xml), 0, 0, 576, 448), expect)


@pytest.mark.parametrize("name,content,words", [
    ("a.geojson", "{not json", "not a readable GeoJSON"),
    ("a.geojson", '{"type": "FeatureCollection", "features": [{"geometry": {"type": "Polygon", '
                  '"coordinates": [[[0, 0], [1, 1]]]}}]}', "at least 3"),
    ("a.xml", "<ASAP_Annotations><Annotations><Annotation><Coordinates><Coordinate X='a' Y='1'/>"
              "</Coordinates></Annotation></Annotations></ASAP_Annotations>", "numeric X and Y"),
    ("a.txt", "", "unknown annotation format")])
def test_bad_annotation_files_name_the_file(tmp_path, name, content, words) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=words) as info:
        read_annotations(path)
    assert info.value.path == path


# ------------------------------------------------------------------ the benchmark
def test_tumour_patch_masks_are_the_known_mask_and_pass_the_protocol(slides, bench) -> None:
    tumour = [r for r in rows(bench) if r["label"] == "tumor"]
    assert {r["slide"] for r in tumour} == {"t1", "t2", "t3"}
    for r in tumour:
        x, y, name = int(r["x"]), int(r["y"]), r["slide"]
        crop = truth(slides, name)[y:y + SIZE, x:x + SIZE]
        stem = f"{name}/{name}_x{x}_y{y}.png"
        mask = np.asarray(Image.open(bench / "masks" / stem)) > 0
        np.testing.assert_array_equal(mask, crop)
        assert crop.mean() == pytest.approx(float(r["tumour_fraction"]), abs=1e-4)
        assert crop.mean() >= 0.2 and int(r["category"]) == (1 if crop.mean() <= 0.5 else 2)
        assert float(r["tissue_low"]) >= 0.1 and float(r["tissue_level0"]) >= 0.1
    for name in ("t1", "t2", "t3"):  # calibration: round(n1 · p_n) category-2 patches per slide
        n1 = sum(r["slide"] == name and r["category"] == "1" for r in tumour)
        n2 = sum(r["slide"] == name and r["category"] == "2" for r in tumour)
        assert n1 > 0 and n2 == round(n1 * 0.5)


def test_every_category_1_patch_of_the_grid_is_taken(slides, bench) -> None:
    """Independent count: grid patches whose known tumour fraction is in [p0, p1] (they lie in
    tumour, which is inside tissue, so they pass the tissue tests)."""
    taken = {(r["slide"], int(r["x"]), int(r["y"])) for r in rows(bench) if r["category"] == "1"}
    for name in ("t1", "t2", "t3"):
        mask = truth(slides, name)
        h, w = mask.shape
        fractions = mask[:h // SIZE * SIZE, :w // SIZE * SIZE].reshape(
            h // SIZE, SIZE, w // SIZE, SIZE).mean(axis=(1, 3))
        expect = {(name, int(c) * SIZE, int(r) * SIZE)
                  for r, c in zip(*np.nonzero((fractions >= 0.2) & (fractions <= 0.5)))}
        assert {t for t in taken if t[0] == name} == expect


def test_normal_patches_balance_no_tumour_no_overlap_and_pixels(slides, bench) -> None:
    table = rows(bench)
    readers = {}
    for split in ("train", "valcl", "test"):
        members = [r for r in table if r["split"] == split]
        n_t = sum(r["label"] == "tumor" for r in members)
        assert n_t > 0 and sum(r["label"] == "normal" for r in members) == n_t  # balance
        assert {r["slide"] for r in members} <= {k for k, v in SPLIT_OF.items() if v == split}
    seen = set()
    for r in table:
        x, y, name = int(r["x"]), int(r["y"]), r["slide"]
        assert x % SIZE == 0 and y % SIZE == 0 and (name, x, y) not in seen  # grid: no overlap
        seen.add((name, x, y))
        reader = readers.setdefault(name, SlideReader(slides / f"{name}.tif", "tiffslide"))
        image = np.asarray(Image.open(bench / "images" / name / f"{name}_x{x}_y{y}.png"))
        np.testing.assert_array_equal(image, reader.read(x, y, SIZE, SIZE))
        if r["label"] == "normal":
            assert name.startswith("n") and not truth(slides, name).any()
            assert not (bench / "masks" / name / f"{name}_x{x}_y{y}.png").exists()
            glass, _ = glass_colour(reader.thumbnail(8))  # the level-0 tissue test of App. B
            assert tissue_pixels(image, glass, TissueOptions().threshold).mean() >= 0.1


def test_lists_load_with_the_reader_and_check_passes(bench) -> None:
    source = open_source(str(bench))
    assert source.class_names == ["normal", "tumor"]
    table = rows(bench)
    for split in ("train", "valcl", "test"):
        ds = source.dataset(split)
        assert len(ds) == sum(r["split"] == split for r in table)
        for i in range(len(ds)):
            sample = ds[i]
            assert sample.image.shape == (SIZE, SIZE, 3)
            assert sample.mask.any() == (sample.label == 1)
    valpx, valcl = source.dataset("valpx"), source.dataset("valcl")
    assert set(valpx.ids) <= set(valcl.ids)
    for c in (0, 1):  # the first valpx_per_class = 2 of each class of valcl
        assert valpx.labels.count(c) == min(2, valcl.labels.count(c)) > 0
    result = CliRunner().invoke(app, ["data", "check", str(bench), "--root", str(bench)])
    assert result.exit_code == 0, result.output
    summary = json.loads((bench / "summary.json").read_text())
    assert summary["slides"]["t2"] == {"path": summary["slides"]["t2"]["path"], "split": "valcl",
                                       "annotation": summary["slides"]["t2"]["annotation"],
                                       "class": "tumor"}


def test_seeded_slide_splits_per_class() -> None:
    entries = [SlideEntry(Path(f"t{i}.tif"), f"t{i}", Path("a")) for i in range(10)]
    entries += [SlideEntry(Path(f"n{i}.tif"), f"n{i}", None) for i in range(5)]
    assign_splits(entries, PatchProtocol(seed=3))
    first = [e.split for e in entries]
    for prefix, n_test, n_valcl in (("t", 2, 2), ("n", 1, 1)):
        splits = [e.split for e in entries if e.stem.startswith(prefix)]
        assert splits.count("test") == n_test and splits.count("valcl") == n_valcl
    assign_splits(entries, PatchProtocol(seed=3))
    assert [e.split for e in entries] == first  # seeded


def test_cli_and_bad_inputs(slides, tmp_path) -> None:
    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["data", "patches", str(slides / "t1.tif"), str(slides / "n1.tif"),
                                      "--annotations", str(slides / "t1.geojson"), "--out", str(out),
                                      "--size", "64", "--pn", "0.5"])
    assert result.exit_code == 0, result.output
    assert "train:" in result.output and (out / "train" / "image_ids.txt").is_file()
    cases = [
        (["--annotations", str(slides / "t1.geojson"), "--out", str(out)], "already holds split"),
        (["--annotations", str(slides / "t2.geojson"), "--out", str(tmp_path / "p")],
         "no slide named 't2'"),
        (["--annotations", str(tmp_path), "--out", str(tmp_path / "q")],
         "no slide has an annotated tumour region"),
        (["--annotations", str(slides / "t1.geojson"), "--out", str(tmp_path / "r"), "--p0", "0.7"],
         "--p0 0.7 is above --p1 0.5"),
    ]
    for args, words in cases:
        bad = CliRunner().invoke(app, ["data", "patches", str(slides / "t1.tif"),
                                       str(slides / "n1.tif"), *args])
        assert bad.exit_code == 2 and words in bad.output and bad.output.count("error:") == 1, \
            bad.output
