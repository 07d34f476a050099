"""Each reader on fixtures written here; GlaS on the shared copy when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import GLAS_SHARED, write_mask, write_rgb

from histocam.data import DataConfig, DataError, open_dataset, open_source
from histocam.data.check import check_source
from histocam.data.dataset import resolve_path
from histocam.data.glas import read_grades


def test_glas_reader_cr_only_grades_and_instance_masks(glas_dir: Path) -> None:
    source = open_source(str(glas_dir))
    assert source.class_names == ["benign", "malignant"]
    test = source.dataset("test")
    assert sorted(test.ids) == ["testA_1", "testB_1"]
    assert sorted(test.labels) == [0, 1]
    everything = {i for s in ("train", "valcl", "test") for i in source.dataset(s).ids}
    assert len(everything) == 14
    sample = test[test.ids.index("testA_1")]
    assert sample.image.shape == (9, 13, 3) and sample.image.dtype == np.uint8
    # instance labels 1 and 2 are both foreground
    assert sample.mask.sum() == 3 * 4 + 3 * 5
    assert sample.mask[1, 2] and sample.mask[7, 11] and not sample.mask[0, 0]


def test_grade_csv_line_endings(tmp_path: Path) -> None:
    rows = ["name,patient ID, grade (GlaS), x", "train_1,1, malignant, y", "train_2,2, benign, z"]
    for sep in ("\r", "\n", "\r\n"):
        path = tmp_path / "Grade.csv"
        path.write_text(sep.join(rows))
        assert read_grades(path) == {"train_1": 1, "train_2": 0}


def test_glas_unknown_grade_names_file_and_line(glas_dir: Path) -> None:
    grade = glas_dir / "Warwick QU Dataset (Released 2016_07_08)" / "Grade.csv"
    grade.write_bytes(grade.read_bytes().replace(b" benign", b" adenoma", 1))
    with pytest.raises(DataError, match=r"Grade\.csv.*line 2: unknown grade 'adenoma'"):
        open_source(str(glas_dir))


def _write_lists(list_dir: Path, split: str, rows: list[tuple[str, int, str]]) -> None:
    d = list_dir / split
    d.mkdir(parents=True)
    (d / "image_ids.txt").write_text("".join(f"{p}\n" for p, _, _ in rows))
    (d / "class_labels.txt").write_text("".join(f"{p},{y}\n" for p, y, _ in rows))
    (d / "image_sizes.txt").write_text("".join(f"{p},13,9\n" for p, _, _ in rows))
    (d / "localization.txt").write_text("".join(f"{p},{m},\n" for p, _, m in rows))


def test_wsol_lists_underscore_folder_and_empty_mask(tmp_path: Path) -> None:
    root = tmp_path / "data"
    folder = root / "Some Folder (v 2016_07_08)"
    write_rgb(folder / "a.png", 9, 13, 0)
    write_rgb(folder / "b.png", 9, 13, 1)
    m = np.zeros((9, 13), np.uint8)
    m[2:5, 3:4] = 255
    write_mask(folder / "a_mask.png", m)
    listed = "Some_Folder_(v_2016_07_08)"
    lists = tmp_path / "lists"
    _write_lists(lists, "test", [(f"{listed}/a.png", 1, f"{listed}/a_mask.png"),
                                 (f"{listed}/b.png", 0, "")])
    ds = open_dataset(str(lists), "test", root=root)
    assert ds.labels == [1, 0]
    a, b = ds[0], ds[1]
    assert a.mask.sum() == 3 and a.mask[2, 3]
    assert b.mask is not None and not b.mask.any()  # empty mask path = all background
    assert resolve_path(root, f"{listed}/a.png") == folder / "a.png"


def test_wsol_lists_missing_images_reported_by_name_and_count(tmp_path: Path) -> None:
    root = tmp_path / "data"
    write_rgb(root / "x" / "present.png", 9, 13, 0)
    lists = tmp_path / "lists"
    _write_lists(lists, "train", [("x/present.png", 0, ""), ("x/gone1.png", 1, ""),
                                  ("x/gone2.png", 1, "")])
    report = check_source(open_source(str(lists), root=root))
    messages = [str(p) for p in report.errors]
    assert any("gone1.png" in m and "not found" in m for m in messages)
    assert any("gone2.png" in m for m in messages)
    assert any("2 of 3 images missing" in m for m in messages)
    assert report.total.n == 1 and report.total.unreadable == 2


@pytest.mark.skipif(not GLAS_SHARED.is_dir(), reason="shared GlaS copy absent")
def test_shared_glas_counts() -> None:
    source = open_source(str(GLAS_SHARED))
    report = check_source(source)
    assert report.errors == []
    assert report.total.n == 85 and report.total.with_mask == 85
    assert report.total.per_class == {0: 37, 1: 48}


def test_csv_manifest_names_with_classes_file(tmp_path: Path) -> None:
    for i in range(10):
        write_rgb(tmp_path / "img" / f"{i}.png", 7, 11, i)
    write_mask(tmp_path / "m0.png", np.eye(7, 11, dtype=np.uint8))
    (tmp_path / "classes.txt").write_text("normal\ntumour\n")
    lines = ["image,label,mask"] + [
        f"img/{i}.png,{'tumour' if i % 2 else 'normal'},{'m0.png' if i == 1 else ''}"
        for i in range(10)
    ]
    lines[3] = "img/2.png,normal,background"
    (tmp_path / "set.csv").write_text("\n".join(lines) + "\n")
    source = open_source(str(tmp_path / "set.csv"), test_fraction=0.0, valpx_per_class=1)
    assert source.class_names == ["normal", "tumour"]
    all_ids = [i for s in ("train", "valcl") for i in source.dataset(s).ids]
    assert sorted(all_ids) == sorted(f"img/{i}.png" for i in range(10))
    ds = source.dataset("train") if "img/1.png" in source.dataset("train").ids else source.dataset("valcl")
    s1 = ds[ds.ids.index("img/1.png")]
    assert s1.label == 1 and s1.mask.sum() == 7
    # inline names override; unknown label names the line
    (tmp_path / "bad.csv").write_text("image,label\nimg/0.png,benign\n")
    with pytest.raises(DataError, match=r"bad\.csv:2.*unknown label 'benign'"):
        open_source(str(tmp_path / "bad.csv"), classes=["normal", "tumour"])


def test_csv_manifest_with_split_column_and_integer_labels(tmp_path: Path) -> None:
    for i in range(3):
        write_rgb(tmp_path / f"{i}.png", 5, 5, i)
    (tmp_path / "s.csv").write_text("image,label,split\n0.png,0,train\n1.png,2,test\n2.png,1,train\n")
    source = open_source(DataConfig(dataset=str(tmp_path / "s.csv")))
    assert source.class_names == ["0", "1", "2"]
    assert source.dataset("train").labels == [0, 1]
    assert source.dataset("test").ids == ["1.png"]


def test_unrecognised_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="unrecognised dataset"):
        open_source(str(tmp_path / "empty"))
