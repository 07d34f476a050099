"""One test per bad-input case: the error or warning names the file and the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import write_mask, write_rgb
from PIL import Image
from typer.testing import CliRunner

from histocam.cli import app
from histocam.data import DataConfig, DataError, open_source
from histocam.data.check import check_source
from histocam.data.io import read_image, read_mask


def _manifest(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "set.csv"
    path.write_text("image,label,mask,split\n" + "\n".join(rows) + "\n")
    return path


def _check(csv: Path, classes=None):
    return check_source(open_source(str(csv), classes=classes))


def _only(problems, severity):
    return [p for p in problems if p.severity.value == severity]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothere\.png: file not found"):
        read_image(tmp_path / "nothere.png")
    report = _check(_manifest(tmp_path, ["nothere.png,0,,train"]))
    assert any("nothere.png" in p.path and "not found" in p.message for p in report.errors)


def test_truncated_image(tmp_path: Path) -> None:
    write_rgb(tmp_path / "t.png", 40, 40, 0)
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.png: unreadable or truncated"):
        read_image(tmp_path / "t.png")
    report = _check(_manifest(tmp_path, ["t.png,0,,train"]))
    assert [p.path.endswith("t.png") for p in report.errors][0]


def test_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_text("hello")
    with pytest.raises(DataError, match=r"x\.png: unreadable"):
        read_image(tmp_path / "x.png")


def test_mask_size_mismatch(tmp_path: Path) -> None:
    write_rgb(tmp_path / "a.png", 7, 11, 0)
    write_mask(tmp_path / "a_m.png", np.ones((7, 10), np.uint8))
    with pytest.raises(DataError, match=r"a_m\.png: mask size 10x7 .* image size 11x7"):
        read_mask(tmp_path / "a_m.png", (7, 11))
    report = _check(_manifest(tmp_path, ["a.png,0,a_m.png,train"]))
    assert any(p.path.endswith("a_m.png") and "does not match" in p.message for p in report.errors)


def test_label_outside_encoding(tmp_path: Path) -> None:
    write_rgb(tmp_path / "a.png", 5, 5, 0)
    with pytest.raises(DataError, match=r"set\.csv:2.*label 3 is outside"):
        _check(_manifest(tmp_path, ["a.png,3,,train"]), classes=["a", "b"])


def test_duplicate_ids(tmp_path: Path) -> None:
    write_rgb(tmp_path / "a.png", 5, 5, 0)
    with pytest.raises(DataError, match=r"set\.csv:3.*duplicate image 'a\.png'"):
        _check(_manifest(tmp_path, ["a.png,0,,train", "a.png,1,,test"]))


@pytest.mark.parametrize(
    "mode,array,expected",
    [
        ("L", np.full((5, 7), 100, np.uint8), "grayscale image converted"),
        ("RGBA", np.full((5, 7, 4), 100, np.uint8), "alpha channel dropped"),
        ("I;16", np.full((5, 7), 40000, np.uint16), "uint16 image"),
    ],
)
def test_converted_images_warn(tmp_path: Path, mode, array, expected) -> None:
    Image.fromarray(array).save(tmp_path / "c.png")
    image, warnings = read_image(tmp_path / "c.png")
    assert image.shape == (5, 7, 3) and image.dtype == np.uint8
    assert any(expected in w for w in warnings)
    report = _check(_manifest(tmp_path, ["c.png,0,,train"]))
    assert report.errors == []
    assert any(p.path.endswith("c.png") and expected in p.message for p in report.warnings)


def test_sixteen_bit_scaled_not_clipped(tmp_path: Path) -> None:
    a = np.array([[0, 65535]], np.uint16)
    Image.fromarray(a).save(tmp_path / "s.png")
    image, _ = read_image(tmp_path / "s.png")
    assert image[0, 0, 0] == 0 and image[0, 1, 0] == 255


def test_lossy_mask_warns(tmp_path: Path) -> None:
    write_rgb(tmp_path / "a.png", 20, 20, 0)
    m = np.zeros((20, 20), np.uint8)
    m[5:15, 5:15] = 255
    m[5, 5:15] = 254  # antialiased/JPEG-like edge values
    m[14, 5:15] = 3
    write_mask(tmp_path / "m.png", m)
    report = _check(_manifest(tmp_path, ["a.png,0,m.png,train"]))
    assert any(p.path.endswith("m.png") and "neither binary nor an instance map" in p.message
               for p in report.warnings)


def test_colour_mask_is_error(tmp_path: Path) -> None:
    write_rgb(tmp_path / "a.png", 6, 6, 0)
    write_rgb(tmp_path / "m.png", 6, 6, 1)
    with pytest.raises(DataError, match=r"m\.png: mask is a colour image"):
        read_mask(tmp_path / "m.png")
    report = _check(_manifest(tmp_path, ["a.png,0,m.png,train"]))
    assert any(p.path.endswith("m.png") and "colour" in p.message for p in report.errors)


def test_instance_mask_is_fine(tmp_path: Path) -> None:
    write_rgb(tmp_path / "a.png", 6, 6, 0)
    m = np.zeros((6, 6), np.uint8)
    m[0:2, 0:2], m[3:5, 3:5], m[0:2, 4:6] = 1, 2, 3
    write_mask(tmp_path / "m.png", m)
    report = _check(_manifest(tmp_path, ["a.png,0,m.png,train"]))
    assert report.problems == []
    assert read_mask(tmp_path / "m.png").sum() == 12


def test_cli_check_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    write_rgb(tmp_path / "a.png", 5, 5, 0)
    good = _manifest(tmp_path, ["a.png,0,,train"])
    result = runner.invoke(app, ["data", "check", str(good)])
    assert result.exit_code == 0, result.output
    assert "1 readable images" in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("image,label,mask,split\na.png,0,,train\nmissing.png,0,,train\n")
    result = runner.invoke(app, ["data", "check", str(bad)])
    assert result.exit_code == 1
    assert "missing.png" in result.output and "not found" in result.output


@pytest.mark.parametrize("first,second", [("img01.png", "./img01.png"), ("a/b.png", "a//b.png"),
                                          ("a/b.png", "a/../a/b.png"), ("./a/b.png", "a/./b.png")])
def test_one_image_spelt_two_ways_is_one_id(tmp_path: Path, first: str, second: str) -> None:
    """Two spellings of one file are one image: listed in train and test it is a duplicate
    naming both lines, never two images on both sides of the split."""
    write_rgb(tmp_path / first, 5, 5, 0)
    with pytest.raises(DataError, match=r"set\.csv:3: duplicate image .*: line 2 lists it"):
        open_source(str(_manifest(tmp_path, [f"{first},0,,train", f"{second},0,,test"])))


def test_csv_ids_are_the_normalised_paths(tmp_path: Path) -> None:
    write_rgb(tmp_path / "x.png", 5, 5, 0)
    write_rgb(tmp_path / "sub" / "y.png", 5, 5, 1)
    write_mask(tmp_path / "sub" / "m.png", np.ones((5, 5), np.uint8))
    source = open_source(str(_manifest(tmp_path, ["./x.png,0,,train",
                                                  "sub//y.png,1,sub/../sub/m.png,train"])))
    train = source.dataset("train")
    assert train.ids == ["x.png", "sub/y.png"]
    assert train[1].mask.all() and train[0].path == tmp_path / "x.png"


@pytest.mark.parametrize("column,cell", [("image", "../out.png"), ("image", "ABS"),
                                         ("mask", "../m.png"), ("image", "sub/../../out.png")])
def test_paths_outside_the_manifest_folder(tmp_path: Path, column: str, cell: str) -> None:
    folder = tmp_path / "set"
    write_rgb(tmp_path / "out.png", 5, 5, 0)
    write_mask(tmp_path / "m.png", np.ones((5, 5), np.uint8))
    write_rgb(folder / "in.png", 5, 5, 1)
    cell = str(tmp_path / "out.png") if cell == "ABS" else cell
    row = f"{cell},0,,train" if column == "image" else f"in.png,0,{cell},train"
    csv = _manifest(folder, [row])
    with pytest.raises(DataError, match=rf"set\.csv:2: {column} '.*' is outside the manifest's "
                                        "folder; set data.allow_outside_root: true"):
        open_source(str(csv))
    train = open_source(str(csv), allow_outside_root=True).dataset("train")
    sample = train[0]  # read from outside the folder, as allowed
    assert sample.image.shape == (5, 5, 3)
    if column == "image":
        assert sample.path.resolve() == (tmp_path / "out.png").resolve()
        assert train.ids == [cell if cell.startswith("/") else "../out.png"]
    else:
        assert sample.mask.all()


def test_allow_outside_root_is_a_key_of_csv_manifests_only() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="allow_outside_root is read only for a CSV"):
        DataConfig(dataset="synthetic-colon", allow_outside_root=True)
    assert DataConfig(dataset="x.csv", allow_outside_root=True).allow_outside_root
