"""The teacher checks of benchmarks/quality: the permuted-maps control's store, whose maps are moved
to other images (each map used once, none left on its own image), the darkness-maps control's map
on a grid, and the precision of the seeds a teacher's maps give, by hand; and how the GlaS study
finds the config a lever changes, tests a map against its teacher and the darkness map, picks an
epoch by each selection rule from a run's traced curves, and scores the mean map of several
runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from histocam.core.experiment_results import CrossvalResult
from histocam.maps.store import NpzWriter, npz_key
from histocam.train.run_config import flat_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "quality"))
from glas_crossval import floor_rows, student_rows  # noqa: E402
from glas_levers import base_of, changes  # noqa: E402
from glas_map_scales import mean_maps, paired, score  # noqa: E402
from glas_selection import best_epoch, rule_table, smoothed  # noqa: E402
from seed_precision import precisions, seed_counts  # noqa: E402
from teacher_controls import darkness_on_grid, derangement, permuted_store  # noqa: E402

IDS = ["a/x.png", "b.png", "c%d.png", "d.png", "e.png", "f.png", "g.png"]


@pytest.mark.parametrize("n", [2, 3, 7, 50])
def test_derangement_moves_every_item(n: int) -> None:
    for seed in range(20):
        order = derangement(n, np.random.default_rng(seed))
        assert sorted(order.tolist()) == list(range(n))
        assert not np.any(order == np.arange(n))
    assert derangement(2, np.random.default_rng(0)).tolist() == [1, 0]


def test_derangement_of_one_item_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1, np.random.default_rng(0))


def test_permuted_store_gives_each_image_another_images_map(tmp_path: Path) -> None:
    store = tmp_path / "cams" / "best-loc-train.npz"
    with NpzWriter(store) as writer:
        for k, image_id in enumerate(IDS):
            writer.add(image_id, np.full((3, 4), k, np.float16))
    store.with_suffix(".json").write_text(json.dumps({"split": "train", "ids": IDS}))

    out = permuted_store(store, tmp_path / "control" / "permuted-maps.npz", seed=3)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["split"] == "train" and meta["ids"] == IDS
    with np.load(out) as permuted:
        got = {image_id: int(permuted[npz_key(image_id)][0, 0]) for image_id in IDS}
        assert all(permuted[npz_key(i)].shape == (3, 4) for i in IDS)
    assert sorted(got.values()) == list(range(len(IDS)))  # every map used once
    assert all(got[image_id] != k for k, image_id in enumerate(IDS))  # none on its own image
    names = {f"{npz_key(i)}.npy": k for k, i in enumerate(IDS)}
    assert {a: names[b] for a, b in meta["replaced"]["map_of"].items()} == {
        f"{npz_key(i)}.npy": got[i] for i in IDS}
    again = permuted_store(store, tmp_path / "again.npz", seed=3)
    assert json.loads(again.with_suffix(".json").read_text())["replaced"]["map_of"] == \
        meta["replaced"]["map_of"]


def test_seed_precision_by_hand() -> None:
    # a region with at most n pixels is drawn whole: foreground seeds on the two cells of map 1,
    # background seeds on the two of map 0; one of each on a gland
    cam = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    counts = seed_counts(cam, mask, torch.ones_like(mask), n=5)
    assert counts.tolist() == [1.0, 2.0, 1.0, 2.0, 2.0, 4.0]
    assert precisions(counts) == {"fg": 50.0, "fg_chance": 50.0, "bg": 50.0, "bg_chance": 50.0}
    # the map is the mask: every seed is right
    exact = precisions(seed_counts(mask, mask, torch.ones_like(mask), n=5))
    assert (exact["fg"], exact["bg"]) == (100.0, 100.0)
    # cells that do not count carry no seed and no pixel
    valid = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    counts = seed_counts(cam, mask * valid, valid, n=5)
    assert counts.tolist() == [1.0, 1.0, 1.0, 2.0, 2.0, 3.0]


def test_seed_precision_of_many_seeds_is_the_map_weighted_share() -> None:
    # n seeds in a region of many pixels: each pixel drawn with probability n·w/Σw (at most 1),
    # and the foreground and background draws exclude each other
    rng = np.random.default_rng(0)
    cam = torch.from_numpy(rng.random((1, 40, 40)).astype(np.float32))
    mask = torch.from_numpy((rng.random((1, 40, 40)) < 0.3).astype(np.float32))
    fg_hit, fg, bg_hit, bg, gland, cells = seed_counts(cam, mask, torch.ones_like(mask), n=5)
    p_fg, p_bg = 5 * cam / cam.sum(), 5 * (1 - cam) / (1 - cam).sum()
    want_fg, want_bg = p_fg * (1 - p_bg), p_bg * (1 - p_fg)
    assert fg == pytest.approx(float(want_fg.sum()), rel=1e-5)
    assert fg_hit == pytest.approx(float((want_fg * mask).sum()), rel=1e-5)
    assert bg_hit == pytest.approx(float((want_bg * (1 - mask)).sum()), rel=1e-5)
    assert (gland, cells) == (float(mask.sum()), 1600.0)


def test_darkness_on_grid_by_hand() -> None:
    # black left half, white right half, a grey cell: darkness 1, 0 and 0.5 averaged onto 2×2
    image = torch.zeros(3, 4, 4)
    image[:, :, 2:] = 1.0
    image[:, :2, 2:] = 0.5  # the top right cell grey
    got = darkness_on_grid({"image": image}, (2, 2))
    assert got.shape == (1, 2, 2)
    assert torch.allclose(got[0], torch.tensor([[1.0, 0.5], [1.0, 0.0]]))


def test_flat_and_changes_by_hand() -> None:
    base = {"name": "a", "out_dir": "x", "data": {"resize": 448, "crop": 224},
            "train": {"lr": 0.001, "head_lr_multiplier": 0.1}}
    lever = {"name": "b", "out_dir": "y", "data": {"resize": 448, "crop": 224, "stain": "macenko"},
             "train": {"lr": 0.001, "head_lr_multiplier": 1.0}}
    assert flat_config(base) == {"name": "a", "out_dir": "x", "data.resize": 448,
                                 "data.crop": 224, "train.lr": 0.001,
                                 "train.head_lr_multiplier": 0.1}
    assert changes(base, lever) == ['data.stain: (absent) -> "macenko"',
                                    "train.head_lr_multiplier: 0.1 -> 1.0"]
    assert changes(base, base) == []


def study(config: dict, teacher: str | None = None) -> CrossvalResult:
    run = {"fold": 0, "seed": 0}
    if teacher:
        run["methods"] = {"teacher": teacher, "student": "pixelcam"}
    return CrossvalResult.model_validate({"config": config, "folds": 3, "seeds": [0],
                                          "pipeline": teacher is not None, "floors": {},
                                          "runs": [run]})


def test_a_lever_is_compared_with_the_closest_config_of_its_methods() -> None:
    cam = {"method": {"name": "cam"}, "train": {"lr": 0.001, "epochs": 30}}
    studies = {
        "cam": study(cam),
        "cam-long": study({"method": {"name": "cam"}, "train": {"lr": 0.01, "epochs": 60}}),
        "layercam": study({"method": {"name": "layercam"}, "train": {"lr": 0.001, "epochs": 30}}),
        "pixelcam-cam": study({"student": {"train": {"head_lr_multiplier": 0.1}}}, "cam"),
        "pixelcam-layercam": study({"student": {"train": {"head_lr_multiplier": 0.1}}},
                                   "layercam"),
    }
    lever = study({"method": {"name": "cam"}, "train": {"lr": 0.01, "epochs": 30}})
    assert base_of(lever, studies) == "cam"  # one setting changed, against two for cam-long
    head = study({"student": {"train": {"head_lr_multiplier": 1.0}}}, "cam")
    assert base_of(head, studies) == "pixelcam-cam"  # its teacher's, not LayerCAM's
    assert base_of(study({"method": {"name": "deepmil"}}), studies) is None
    # another lever is a base when it is closer; on a tie the top-level folder wins
    studies["levers/head1.0"] = head
    drawn = study({"student": {"train": {"head_lr_multiplier": 1.0}, "method": {"seeds": "drawn"}}},
                  "cam")
    assert base_of(drawn, studies) == "levers/head1.0"
    studies["levers/head10.0"] = study({"student": {"train": {"head_lr_multiplier": 10.0}}}, "cam")
    assert base_of(head, {k: v for k, v in studies.items() if k != "levers/head1.0"}) == \
        "pixelcam-cam"


def checkpoint(pxap: float, per_image: dict[str, float]) -> dict:
    return {"pxap": pxap, "chance": 50.0, "accuracy": 90.0, "per_class": {},
            "per_image_ap": per_image}


def two_fold_pipeline() -> CrossvalResult:
    teacher = [{"a": 40.0, "b": 60.0}, {"c": 50.0, "d": 70.0}]
    student = [{"a": 50.0, "b": 70.0}, {"c": 56.0, "d": 60.0}]
    runs = [{"fold": f, "seed": 0, "methods": {"teacher": "cam", "student": "pixelcam"},
             "teacher": {c: checkpoint(px, teacher[f]) for c in ("best-loc", "best-cl")},
             "student": {c: checkpoint(px + d, student[f]) for c in ("best-loc", "best-cl")}}
            for f, px, d in ((0, 50.0, 10.0), (1, 70.0, -5.0))]
    return CrossvalResult.model_validate({"config": {}, "folds": 2, "seeds": [0],
                                          "pipeline": True, "floors": {}, "runs": runs})


def t_and_p(differences: list[float]) -> tuple[float, float]:
    from scipy.stats import t as student_t

    d = np.asarray(differences)
    t = d.mean() / (d.std(ddof=1) / np.sqrt(len(d)))
    return t, 2 * student_t.sf(abs(t), len(d) - 1)


def test_student_rows_by_hand() -> None:
    rows = student_rows("histocam + lever", "head1.0", two_fold_pipeline())
    # folds: +10 and -5 (mean 2.5, sample std 10.6); per image +10, +10, +6, -10 (mean +4.0)
    _, p = t_and_p([10, 10, 6, -10])
    assert rows == [f"| histocam + lever | head1.0 | {label} | 2.5 ± 10.6 | 1 of 2 | "
                    f"+4.0, {p:.2g} (4) |" for label in ("B-LOC", "B-CL")]


def test_floor_rows_by_hand() -> None:
    darkness = {"a": 45.0, "b": 62.0, "c": 51.0, "d": 64.0, "unseen": 99.0}
    rows = floor_rows("histocam", "pixelcam on cam", two_fold_pipeline(), "student", darkness)
    # student − darkness on the shared images: +5, +8, +5, -4 (mean +3.5), above on 3 of 4
    _, p = t_and_p([5, 8, 5, -4])
    assert rows[0] == f"| histocam | pixelcam on cam | B-LOC | +3.5, {p:.2g} (4) | 3 of 4 |"
    teacher = floor_rows("histocam", "cam", two_fold_pipeline(), "teacher", darkness)
    _, p = t_and_p([-5, -2, -1, 6])  # below on 3 of 4
    assert teacher[1] == f"| histocam | cam | B-CL | -0.5, {p:.2g} (4) | 1 of 4 |"


def test_selection_rules_by_hand() -> None:
    assert best_epoch([1.0, 3.0, 2.0, 3.0]) == 3  # the later epoch on ties, as the trainer
    assert smoothed([0.0, 6.0, 0.0, 3.0]) == [3.0, 2.0, 3.0, 1.5]
    # smoothed valpx: 60, 60, 65.3, 63.3, 65 -> epoch 2
    one = {"valpx_pxap": [50.0, 70.0, 60.0, 66.0, 64.0],  # B-LOC: epoch 1
           "valcl_pxap": [50.0, 60.0, 61.0, 63.0, 62.0],  # epoch 3
           "valcl_accuracy": [40.0, 80.0, 90.0, 90.0, 85.0],  # B-CL: epoch 3 (tie, later)
           "test_pxap_trace": [50.0, 55.0, 65.0, 62.0, 60.0]}  # last: epoch 4; best: 2
    other = {**one, "valpx_pxap": [50.0, 60.0, 61.0, 62.0, 70.0],  # B-LOC 4; smoothed 4
             "test_pxap_trace": [50.0, 58.0, 59.0, 60.0, 61.0]}
    rows = rule_table({(0, 0): one, (1, 0): other})[2:]
    cells = [[c.strip() for c in row.split("|")[1:-1]] for row in rows]
    # B-LOC: 55 and 61 (fold means, std 4.2); the best test epochs: 65 and 61
    assert cells[0][1:] == ["58.0 ± 4.2", "1, 4", "0 / 0 of 2", "+0.0", "5.0"]
    # every valcl image: epochs 3, 3 -> 62 and 60: above B-LOC once, below once
    assert cells[1][1:] == ["61.0 ± 1.4", "3, 3", "1 / 1 of 2", "+3.0", "2.0"]
    assert cells[2][2] == "2, 4" and cells[3][2] == "3, 3" and cells[4][2] == "4, 4"
    assert cells[5][1:] == ["63.0 ± 2.8", "2, 4", "0 / 1 of 2", "+5.0", "0.0"]


def test_mean_map_of_runs_and_its_scores_by_hand() -> None:
    """Two runs' maps of two 1×4 images: their mean, its per-image AP and PxAP by hand, and the
    paired difference against a reference."""
    masks = {"a": torch.tensor([[True, True, False, False]]),
             "b": torch.tensor([[True, False, False, False]])}
    one = {"a": (torch.tensor([[1.0, 0.2, 0.6, 0.0]]), masks["a"]),
           "b": (torch.tensor([[0.9, 0.1, 0.0, 0.3]]), masks["b"])}
    two = {"a": (torch.tensor([[0.6, 1.0, 0.0, 0.2]]), masks["a"]),
           "b": (torch.tensor([[0.1, 0.5, 0.3, 0.1]]), masks["b"])}
    mean = mean_maps([one, two])
    assert torch.allclose(mean["a"][0], torch.tensor([[0.8, 0.6, 0.3, 0.1]]))
    assert torch.equal(mean["a"][1], masks["a"])
    # the mean of image a ranks its two foreground pixels first, and so does image b's
    # [0.5, 0.3, 0.15, 0.2] its one: AP 100 each
    scored = score(mean)
    assert scored["image_ap"] == pytest.approx({"a": 100.0, "b": 100.0})
    # pooled over both images: foreground 0.8, 0.6, 0.5; background 0.3, 0.3, 0.2, 0.15, 0.1:
    # every foreground pixel above every background pixel
    assert scored["pxap"] == pytest.approx(100.0)
    # run one alone: image a's background 0.6 outranks its foreground 0.2 -> AP (1 + 2/3) / 2
    assert score(one)["image_ap"]["a"] == pytest.approx(100 * (1 + 2 / 3) / 2)
    folds = [{"ensemble": {"test": {"image_ap": {"a": 100.0, "b": 100.0}}}}]
    reference = [{"a": 100 * (1 + 2 / 3) / 2, "b": 100.0}]
    text, above, total = paired(folds, reference, ["ensemble"])
    assert text.startswith(f"{100 * (1 - (1 + 2 / 3) / 2) / 2:+.1f},") and text.endswith("(2)")
    assert (above, total) == (1, 2)
