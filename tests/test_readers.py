"""Each reader on fixtures written here; GlaS on the shared copy when present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import GLAS_SHARED, SHARED, write_mask, write_rgb

from histocam.data import DataConfig, DataError, Sample, open_dataset, open_source
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
        assert read_grades(path) == {"train_1": (1, "1"), "train_2": (0, "2")}


def test_glas_unknown_grade_names_file_and_line(glas_dir: Path) -> None:
    grade = glas_dir / "Warwick QU Dataset (Released 2016_07_08)" / "Grade.csv"
    grade.write_bytes(grade.read_bytes().replace(b" benign", b" adenoma", 1))
    with pytest.raises(DataError, match=r"Grade\.csv.*line 2: unknown grade 'adenoma'"):
        open_source(str(glas_dir))


def _write_lists(list_dir: Path, split: str, rows: list[tuple[str, int, str]],
                 ignore: dict[str, str] | None = None) -> None:
    """One split folder; ``ignore`` maps an image path to its ignore-mask path."""
    ignore = ignore or {}
    d = list_dir / split
    d.mkdir(parents=True)
    (d / "image_ids.txt").write_text("".join(f"{p}\n" for p, _, _ in rows))
    (d / "class_labels.txt").write_text("".join(f"{p},{y}\n" for p, y, _ in rows))
    (d / "image_sizes.txt").write_text("".join(f"{p},13,9\n" for p, _, _ in rows))
    (d / "localization.txt").write_text(
        "".join(f"{p},{m},{ignore.get(p, '')}\n" for p, _, m in rows))


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
    ds = open_dataset(str(lists), "test", root=root, classes=["normal", "tumour"])
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
    (lists / "classes.txt").write_text("a\nb\n")
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


def _one_image_lists(list_dir: Path, root: Path) -> None:
    write_rgb(root / "a.png", 9, 13, 0)
    _write_lists(list_dir, "train", [("a.png", 1, "")])


@pytest.mark.parametrize("parents", ["home/douglas", "glas", "GLAS/old", "my-glas-data"])
def test_wsol_class_names_never_guessed_from_the_path(tmp_path: Path, parents: str) -> None:
    """A list folder under /home/douglas/ (or any path merely containing "glas") is not GlaS."""
    lists = tmp_path / parents / "lists"
    _one_image_lists(lists, tmp_path / "img")
    with pytest.raises(DataError, match=r"lists.*folder 'lists'.*data\.classes.*classes\.txt"):
        open_source(str(lists), root=tmp_path / "img")
    # the same under a fold-k folder whose parent is not exactly a benchmark name
    fold = tmp_path / parents / "douglas" / "fold-0"
    _one_image_lists(fold, tmp_path / "img")
    with pytest.raises(DataError, match="folder 'fold-0'"):
        open_source(str(fold), root=tmp_path / "img")


@pytest.mark.parametrize(("folder", "expected"), [
    ("GLAS/fold-3", ["benign", "malignant"]),
    ("x/glas", ["benign", "malignant"]),
    ("CAMELYON512/fold-0", ["normal", "tumor"]),
    ("camelyon16", ["normal", "tumor"]),
])
def test_wsol_class_names_of_released_benchmark_folders(tmp_path: Path, folder: str,
                                                        expected: list[str]) -> None:
    lists = tmp_path / "douglas" / folder
    _one_image_lists(lists, tmp_path / "img")
    assert open_source(str(lists), root=tmp_path / "img").class_names == expected


def test_wsol_class_names_from_config_then_classes_txt(tmp_path: Path) -> None:
    lists = tmp_path / "glas" / "fold-0"
    _one_image_lists(lists, tmp_path / "img")
    (lists / "classes.txt").write_text("grade1\ngrade2\n")
    assert open_source(str(lists), root=tmp_path / "img").class_names == ["grade1", "grade2"]
    named = open_source(str(lists), root=tmp_path / "img", classes=["x", "y", "z"])
    assert named.class_names == ["x", "y", "z"]


@pytest.mark.skipif(not (SHARED / "data" / "wsol-splits" / "GLAS").is_dir(),
                    reason="shared WSOL lists absent")
def test_shared_released_glas_lists_get_glas_names() -> None:
    lists = SHARED / "data" / "wsol-splits" / "GLAS" / "fold-0"
    source = open_source(str(lists), root=GLAS_SHARED)
    assert source.class_names == ["benign", "malignant"]
    assert sorted(source.dataset("valpx").labels) == [0, 0, 0, 1, 1, 1]


def _ignore_lists(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    """Three images: a (mask + ignore box overlapping it), b (all background + ignore), c (none)."""
    root = tmp_path / "data"
    for k, name in enumerate("abc"):
        write_rgb(root / f"{name}.png", 9, 13, k)
    fg = np.zeros((9, 13), bool)
    fg[2:5, 3:5] = True
    box = np.zeros((9, 13), bool)
    box[1:7, 1:9] = True
    write_mask(root / "a_mask.png", fg * 255)
    write_mask(root / "a_ignore.png", box * 255)
    write_mask(root / "b_ignore.png", box * 1)  # 0/1 values: any value > 0 is ignored
    lists = tmp_path / "lists"
    _write_lists(lists, "test", [("a.png", 1, "a_mask.png"), ("b.png", 0, ""), ("c.png", 0, "")],
                 ignore={"a.png": "a_ignore.png", "b.png": "b_ignore.png"})
    (lists / "classes.txt").write_text("normal\ntumour\n")
    return lists, root, fg, box


def _nearest(array: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize by index arithmetic (source index = floor(dst · in / out))."""
    rows = np.floor(np.arange(size) * array.shape[0] / size).astype(int)
    cols = np.floor(np.arange(size) * array.shape[1] / size).astype(int)
    return array[rows][:, cols]


def test_wsol_ignore_masks_reach_the_sample_and_the_batch(tmp_path: Path) -> None:
    from torch.utils.data import default_collate

    from histocam.data.transforms import JointTransform

    lists, root, fg, box = _ignore_lists(tmp_path)
    ds = open_dataset(str(lists), "test", root=root)
    a, b, c = ds[0], ds[1], ds[2]
    # as wsolevaluation: the ignore region minus the foreground
    assert np.array_equal(a.ignore, box & ~fg) and np.array_equal(a.mask, fg)
    assert np.array_equal(b.ignore, box) and not b.mask.any()
    assert c.ignore is None and not c.mask.any()

    size = 20  # eval resize: 9×13 -> 20×20, nearest
    transform = JointTransform(train=False, eval_size=size)
    # the training and evaluation loaders collate with default_collate (histocam.train.loader)
    batch = default_collate([transform(ds[i]) for i in range(3)])
    assert batch["ignore"].dtype == torch.bool and batch["ignore"].shape == (3, size, size)
    assert np.array_equal(batch["ignore"][0].numpy(), _nearest(box & ~fg, size))
    assert np.array_equal(batch["mask"][0].numpy() > 0.5, _nearest(fg, size))
    assert np.array_equal(batch["ignore"][1].numpy(), _nearest(box, size))
    assert not batch["ignore"][2].any()  # no ignore mask: nothing ignored
    assert not (batch["ignore"] & (batch["mask"] > 0.5)).any()


def test_ignore_mask_follows_train_crops_and_flips() -> None:
    from histocam.data.transforms import JointTransform

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    fg = np.zeros((16, 16), bool)
    fg[1:6, 2:12] = True
    fg[9:15, 3:5] = True
    ignore = ~fg
    ignore[12:, 10:] = False  # asymmetric: a crop or flip not shared with the mask shows
    sample = Sample(image, 1, fg, "s", ignore=ignore)
    # a stored CAM (same geometry, no resize at 16 -> 16) that encodes both masks
    cam = np.where(ignore, 0.25, np.where(fg, 1.0, 0.5)).astype(np.float32)
    t = JointTransform(train=True, resize=16, crop=11, color_jitter=False)
    flips = set()
    for seed in range(16):
        out = t(sample, cam, generator=torch.Generator().manual_seed(seed))
        assert out["ignore"].shape == (11, 11) and out["ignore"].dtype == torch.bool
        assert torch.equal(out["ignore"], out["cam"] == 0.25)
        assert torch.equal(out["mask"] > 0.5, out["cam"] == 1.0)
        flips.add(out["ignore"].numpy().tobytes())
    assert len(flips) > 4  # the geometry did vary


@pytest.mark.parametrize("corrupt", [False, True])
def test_missing_or_corrupt_ignore_mask_is_a_data_error(tmp_path: Path, corrupt: bool) -> None:
    lists, root, _, _ = _ignore_lists(tmp_path)
    if corrupt:
        (root / "a_ignore.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    else:
        (root / "a_ignore.png").unlink()
    ds = open_dataset(str(lists), "test", root=root)
    with pytest.raises(DataError, match=r"a_ignore\.png: ignore mask of a\.png"):
        ds[0]
    report = check_source(open_source(str(lists), root=root))
    assert any("a_ignore.png" in str(p) and "ignore mask" in str(p) for p in report.errors)


def test_evaluation_leaves_ignored_pixels_out(tmp_path: Path) -> None:
    """evaluate_split with a list folder's ignore masks = the same maps scored without those
    pixels (the reference evaluator's behaviour)."""
    from histocam.data.config import DataConfig
    from histocam.data.open import open_source
    from histocam.methods import create_method
    from histocam.metrics import Batch, PerImageScores, PixelHistogram
    from histocam.train.split_pass import evaluate_split

    lists, root, fg, box = _ignore_lists(tmp_path)
    data = DataConfig(dataset=str(lists), root=root, eval_size=16)
    torch.manual_seed(0)
    method = create_method({"name": "cam", "backbone": {"name": "test_resnet"}}, 2).eval()
    kept: dict = {}
    histogram = PixelHistogram()
    evaluate_split(method, open_source(data).dataset("test"), data, torch.device("cpu"),
                   {"pixels": histogram, "per_image": PerImageScores(0.5)},
                   map_sink=kept.__setitem__)
    maps = torch.stack([kept[i] for i in ("a.png", "b.png", "c.png")])
    masks = torch.from_numpy(np.stack([_nearest(fg, 16), np.zeros((16, 16), bool),
                                       np.zeros((16, 16), bool)]))
    ignore = torch.from_numpy(np.stack([_nearest(box & ~fg, 16), _nearest(box, 16),
                                        np.zeros((16, 16), bool)]))
    expected = PixelHistogram()
    for k in range(3):  # only the kept pixels, image by image (a 1×N "map" of them)
        keep = ~ignore[k]
        expected.update(Batch(maps=maps[k][keep][None, None], masks=masks[k][keep][None, None]))
    assert torch.equal(histogram.fg, expected.fg)
    assert torch.equal(histogram.bg, expected.bg)
    assert int(ignore.sum()) > 0 and int(histogram.fg.sum() + histogram.bg.sum()) \
        == 3 * 256 - int(ignore.sum())
