"""PixelCAM: samplers, partial CE, parameter count, CAM store, the pipeline end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from helpers import tiny_pipeline

from histocam.methods import MethodOutput, create_method
from histocam.methods.sampling import (
    IGNORE,
    expected_seeds,
    one_hot_seeds,
    otsu_threshold,
    sample_pseudo_labels,
)


def test_pb_sampler_counts_without_replacement() -> None:
    g = torch.Generator().manual_seed(0)
    # binary maps: the foreground and background draws cannot meet, so every image gets exactly
    # n of each (a draw with replacement would give fewer distinct pixels)
    cams = (torch.rand(3, 7, 11, generator=g) > 0.5).float().repeat(20, 1, 1)  # 20 draws each
    labels = sample_pseudo_labels(cams, 5, "pb", generator=g)
    assert labels.shape == (60, 7, 11)
    assert ((labels == 1).sum((1, 2)) == 5).all() and ((labels == 0).sum((1, 2)) == 5).all()
    assert bool((cams[labels == 1] == 1).all()) and bool((cams[labels == 0] == 0).all())


def test_each_image_draws_its_own_number_of_seeds() -> None:
    """A sparse map limits its own image only (the count was once the minimum over the batch)."""
    cams = torch.zeros(3, 5, 7)
    cams[0, 0, :2] = 1.0  # two foreground pixels only
    cams[1:, :, :4] = 1.0
    for sampler in ("pb", "th"):
        labels = sample_pseudo_labels(cams, 4, sampler, generator=torch.Generator().manual_seed(0))
        assert (labels == 1).sum((1, 2)).tolist() == [2, 4, 4], sampler
        assert (labels == 0).sum((1, 2)).tolist() == [4, 4, 4], sampler


def test_pb_foreground_draws_follow_the_map() -> None:
    cams = torch.full((1, 10, 10), 0.01)
    cams[0, :5, :5] = 1.0  # 25 pixels hold 25 / (25 + 0.75) = 97% of the foreground mass
    g = torch.Generator().manual_seed(1)
    labels = sample_pseudo_labels(cams.repeat(400, 1, 1), 3, "pb", generator=g)  # 400 draws
    hits, bg_hits = (labels == 1).sum(0), (labels == 0).sum(0)
    share = float(hits[:5, :5].sum() / hits.sum())
    assert share > 0.9
    # background ∝ 1 − CAM: the quadrant (1 − CAM = 0) is never drawn as background
    assert bg_hits[:5, :5].sum() == 0


def test_conflicting_draws_are_ignored() -> None:
    cams = torch.full((1, 1, 2), 0.5)  # two pixels, n = 2: both drawn as FG and as BG
    labels = sample_pseudo_labels(cams, 2, "pb")
    assert torch.equal(labels, torch.full((1, 1, 2), IGNORE))


def test_otsu_and_threshold_sampler() -> None:
    cams = torch.zeros(2, 8, 8)
    cams[:, :, :3] = 0.9
    cams[:, :, 3:] = 0.1
    t = otsu_threshold(cams)
    assert bool(((t > 0.1) & (t <= 0.9)).all())
    labels = sample_pseudo_labels(cams, 4, "th", generator=torch.Generator().manual_seed(0))
    assert bool((labels[:, :, 3:] != 1).all()) and bool((labels[:, :, :3] != 0).all())
    assert int((labels == 1).sum()) == 8 and int((labels == 0).sum()) == 8


def test_static_sampler_takes_top_and_bottom() -> None:
    cams = torch.arange(12.0).view(1, 3, 4) / 11
    labels = sample_pseudo_labels(cams, 2, "static")
    assert labels[0].flatten()[-2:].tolist() == [1, 1]
    assert labels[0].flatten()[:2].tolist() == [0, 0]
    assert int((labels == IGNORE).sum()) == 8


def test_fully_negative_images_get_background_only() -> None:
    cams = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(3))
    negative = torch.tensor([True, False])
    labels = sample_pseudo_labels(cams, 4, "pb", negative=negative)
    assert int((labels[0] == 1).sum()) == 0 and int((labels[0] == 0).sum()) == 4
    everything = sample_pseudo_labels(cams, 4, "pb", negative=negative,
                                      negative_all_background=True)
    assert bool((everything[0] == 0).all())


@pytest.mark.parametrize("sampler", ["pb", "th"])
def test_expected_seeds_are_the_frequencies_of_the_drawn_ones(sampler: str) -> None:
    """``expected_seeds`` against 3000 draws of ``sample_pseudo_labels`` on 7×11 maps (n = 1 and
    2; exact at n = 1, within sampling error at n = 2), and per image about n seeds per region.
    The draws are one batch of 3000 copies of the 3 maps (each row draws on its own)."""
    g = torch.Generator().manual_seed(0)
    cams = torch.rand(3, 7, 11, generator=g)
    for n in (1, 2):
        drawn = sample_pseudo_labels(cams.repeat(3000, 1, 1), n, sampler, generator=g)
        counts = one_hot_seeds(drawn).view(3000, 3, 2, 7, 11).sum(0)
        expected = expected_seeds(cams, n, sampler)
        assert expected.shape == (3, 2, 7, 11)
        assert float((counts / 3000 - expected).abs().max()) < 0.03, (sampler, n)
        per_region = expected.sum((2, 3))
        assert bool(((per_region > 0.95 * n) & (per_region <= n)).all()), per_region


def test_expected_seeds_by_hand() -> None:
    # a 1×4 map, n = 1: π_fg = w / Σw = (0, ⅙, ⅓, ½), π_bg = (1 − w) / Σ(1 − w) = (½, ⅓, ⅙, 0)
    cams = torch.tensor([[[0.0, 1 / 3, 2 / 3, 1.0]]])
    seeds = expected_seeds(cams, 1, "pb")[0, :, 0]
    fg, bg = torch.tensor([0, 1 / 6, 1 / 3, 1 / 2]), torch.tensor([1 / 2, 1 / 3, 1 / 6, 0])
    assert torch.allclose(seeds[1], fg * (1 - bg)) and torch.allclose(seeds[0], bg * (1 - fg))
    # a region with at most n pixels is drawn whole: three foreground pixels, n = 4
    binary = torch.tensor([[[0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]])
    seeds = expected_seeds(binary, 4, "pb")[0, :, 0]
    assert seeds[1].tolist() == [0, 1, 1, 1, 0, 0, 0, 0, 0]
    assert torch.allclose(seeds[0], torch.tensor([2 / 3, 0, 0, 0, 2 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3]))
    # static draws nothing at random: its expected seeds are its labels
    cams = torch.arange(12.0).view(1, 3, 4) / 11
    assert torch.equal(expected_seeds(cams, 2, "static"),
                       one_hot_seeds(sample_pseudo_labels(cams, 2, "static")))


def test_expected_seeds_of_fully_negative_images() -> None:
    cams = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(3))
    negative = torch.tensor([True, False])
    seeds = expected_seeds(cams, 4, "pb", negative=negative)
    assert float(seeds[0, 1].abs().sum()) == 0.0
    assert torch.allclose(seeds[0, 0], torch.full((6, 6), 4 / 36))
    everything = expected_seeds(cams, 4, "pb", negative=negative, negative_all_background=True)
    assert bool((everything[0, 0] == 1).all()) and torch.equal(everything[1], seeds[1])


def _tiled(out: MethodOutput, k: int) -> MethodOutput:
    """``out`` for a batch of ``k`` copies of its images, one after the other."""
    def tile(t):
        return t.repeat(k, *[1] * (t.dim() - 1)) if torch.is_tensor(t) else t

    return MethodOutput(tile(out.logits), [tile(f) for f in out.features], tile(out.maps),
                        {key: tile(v) for key, v in out.extras.items()})


def test_the_expected_seed_loss_is_the_mean_of_the_drawn_ones() -> None:
    """PixelCAM with ``seeds: expected`` on a fixed output: its pixel loss equals the average over
    many steps of the drawn seeds' loss (n = 1: the inclusion probabilities are exact). 4000 steps
    are 40 batches of 100 copies of the step's 3 images (each copy draws its own seeds): a
    batch's loss is the mean of 100 steps' losses."""
    torch.manual_seed(0)
    cfg = {"name": "pixelcam", "n": 1, "loss_resolution": "low", "backbone": {"name": "test_resnet"}}
    drawn = create_method(cfg, 2)
    expected = create_method({**cfg, "seeds": "expected"}, 2)
    torch.nn.init.normal_(drawn.head.weight, std=0.05)
    expected.load_state_dict(drawn.state_dict())
    x = torch.randn(3, 3, 40, 72)
    with torch.no_grad():
        out = drawn(x)
        h, w = out.extras["pixel_logits"].shape[-2:]
        batch = {"label": torch.tensor([0, 1, 1]), "cam": torch.rand(3, h, w)}
        exact, parts = expected.loss(batch, out)
        copies = {"label": batch["label"].repeat(100), "cam": batch["cam"].repeat(100, 1, 1)}
        chunks = torch.tensor([drawn.loss(copies, _tiled(out, 100))[1]["pixel"]
                               for _ in range(40)])
        one_step = drawn.loss(batch, out)[1]["pixel"]
    # the standard error of the mean of 4000 steps: std of a 100-step mean / √40
    assert parts["pixel"] == pytest.approx(float(chunks.mean()),
                                           abs=4 * float(chunks.std()) / math.sqrt(40))
    assert parts["pixel"] != pytest.approx(one_step, rel=1e-3)  # drawn ones do vary


def test_linear_head_adds_exactly_two_times_d_plus_one_parameters() -> None:
    teacher = create_method({"name": "deepmil", "backbone": {"name": "test_resnet"}}, 2)
    pix = create_method({"name": "pixelcam", "classifier": {"name": "deepmil"},
                         "backbone": {"name": "test_resnet"}}, 2)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    d = teacher.encoder.out_channels
    assert count(pix) - count(teacher) == 2 * (d + 1)
    deep = create_method({"name": "pixelcam", "head": "mlp3", "backbone": {"name": "test_resnet"}},
                         2)
    assert count(deep) - count(create_method({"name": "cam", "backbone": {"name": "test_resnet"}},
                                             2)) > 2 * (d + 1)


def test_partial_ce_has_zero_gradient_on_unlabelled_pixels() -> None:
    torch.manual_seed(0)
    pix = create_method({"name": "pixelcam", "loss_resolution": "low", "n": 2,
                         "backbone": {"name": "test_resnet"}}, 2)
    x = torch.randn(3, 3, 64, 96)
    out = pix(x)
    logits = out.extras["pixel_logits"]
    logits.retain_grad()
    h, w = logits.shape[-2:]
    batch = {"label": torch.tensor([0, 1, 1]), "cam": torch.rand(3, h, w)}
    torch.manual_seed(5)
    loss, parts = pix.loss(batch, out)
    loss.backward()
    torch.manual_seed(5)
    labels = pix.pseudo_labels(batch, (h, w))
    grad = logits.grad.abs().sum(1)
    assert bool((grad[labels == IGNORE] == 0).all())
    assert bool((grad[labels != IGNORE] > 0).all())
    assert parts["pixel"] > 0


def test_pixelcam_map_is_a_probability_without_minmax() -> None:
    pix = create_method({"name": "pixelcam", "backbone": {"name": "test_resnet"}}, 2).eval()
    torch.nn.init.normal_(pix.head.weight, std=0.1)  # a trained head is not all zeros
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        logits, maps = pix.localize_with_logits(x, torch.tensor([0, 1]))
        low = torch.softmax(pix(x).extras["pixel_logits"], 1)[:, 1]
        lowres = pix.localize_with_logits(x, torch.tensor([0, 1]), upsample=False)[1]
    assert torch.allclose(lowres, low)
    assert maps.shape == (2, 64, 64) and float(maps.max()) < 1 and float(maps.min()) > 0
    assert float(maps.max() - maps.min()) < 1  # no min–max stretching


def _tiny_pipeline(tmp_path: Path, **extra) -> dict:
    from histocam.experiments.pipeline import PipelineConfig

    return PipelineConfig.model_validate(tiny_pipeline(
        tmp_path, teacher={"method": {"name": "gradcampp"}}, **extra))


@pytest.mark.slow
def test_pipeline_end_to_end_and_cam_store(tmp_path: Path, monkeypatch) -> None:
    from histocam.experiments.pipeline import run_pipeline
    from histocam.maps.store import CAMStoreError, load_cams, store_is_current
    from histocam.methods.pixelcam import PixelCAMConfig

    validated = []  # every validation of the student's config, from a dict or by its constructor
    validate, init = PixelCAMConfig.model_validate.__func__, PixelCAMConfig.__init__
    monkeypatch.setattr(PixelCAMConfig, "model_validate", classmethod(
        lambda cls, *a, **k: validated.append("model_validate") or validate(cls, *a, **k)))
    monkeypatch.setattr(PixelCAMConfig, "__init__",
                        lambda self, **k: validated.append("__init__") or init(self, **k))
    p = _tiny_pipeline(tmp_path)
    results = run_pipeline(p, progress=False)
    assert validated == ["model_validate"]  # where the pipeline config is built, and only there
    assert p.student.method.n == 5
    for role in ("teacher", "student"):
        for ckpt in ("best-loc", "best-cl"):
            assert 0 <= getattr(results, role).at(ckpt).pxap <= 100
            assert getattr(results, role).at(ckpt).separability > 0
    table = (p.root / "comparison.md").read_text()
    assert "PixelCAM" in table and "| J |" in table and "tr(S_B)/tr(S_W)" in table
    row = next(line for line in table.splitlines() if line.startswith("| gradcampp | B-LOC"))
    assert row.split("|")[10].strip() == f"{results.teacher.best_loc.separability:.3f}"
    # chance = PxAP of an all-ones map = foreground fraction of the test pixels, next to PxAP
    chance = results.teacher.best_loc.chance
    assert row.split("|")[4].strip() == f"{chance:.1f}"
    assert chance == results.student.best_cl.chance  # same images, same chance
    assert (p.root / "figures" / "maps.png").is_file()
    saved = json.loads((p.root / "comparison.json").read_text())
    assert saved["teacher_method"] == "gradcampp"
    # the CAM store: provenance, round trip, and refusal for another dataset
    store = p.root / "teacher-gradcampp" / "cams" / "best-loc-train.npz"
    meta = json.loads(store.with_suffix(".json").read_text())
    assert meta["method"] == "gradcampp" and meta["checkpoint"] == "best-loc"
    assert len(meta["ids"]) == 8
    cams = load_cams(store, p.data, "train")
    assert len(cams) == 8 and all(0 <= float(c.min()) and float(c.max()) <= 1 for c in cams.values())
    other = p.data.model_copy(update={"synthetic": p.data.synthetic.model_copy(update={"seed": 9})})
    with pytest.raises(CAMStoreError, match="another dataset"):
        load_cams(store, other, "train")
    with pytest.raises(CAMStoreError, match="split 'train', needed 'test'"):
        load_cams(store, p.data, "test")
    with pytest.raises(CAMStoreError, match="no CAM for 1 image"):
        load_cams(store, p.data, "train", ids=meta["ids"] + ["colon-train-99999"])
    import histocam.data.synthetic as synthetic  # maps of an older renderer are refused too

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(synthetic.GENERATOR_VERSIONS, "colon", synthetic.GENERATOR_VERSIONS["colon"] + 1)
        with pytest.raises(CAMStoreError, match="another dataset"):
            load_cams(store, p.data, "train")
        assert not store_is_current(store, p.data, "train")
        exported = store.stat().st_mtime_ns
        run_pipeline(p, progress=False)  # trained runs are reused, the stale store is exported again
        assert store.stat().st_mtime_ns > exported and store_is_current(store, p.data, "train")
    # PixelCAM started from the teacher's B-CL weights
    pix_cfg = json.loads(json.dumps(__import__("yaml").safe_load(
        (p.root / "pixelcam-gradcampp" / "config.yaml").read_text())))
    assert pix_cfg["init"].endswith("teacher-gradcampp/checkpoints/best-cl.pt")
    assert pix_cfg["method"]["classifier"]["name"] == "cam"  # the top-down teacher's classifier


def test_pixelcam_without_cams_is_a_clear_error(tmp_path: Path) -> None:
    from histocam.train import RunConfig

    tree = {"name": "x", "out_dir": str(tmp_path),
            "data": {"dataset": "synthetic-colon", "synthetic": {"size": 64, "n_train": 4}},
            "method": {"name": "pixelcam", "backbone": {"name": "test_resnet"}}}
    with pytest.raises(ValueError, match="learns from a teacher's stored maps: set cams"):
        RunConfig.model_validate(tree)
    with pytest.raises(ValueError, match="does not use stored maps"):
        RunConfig.model_validate({**tree, "method": {"name": "cam"}, "cams": "x.npz"})


def test_pixel_loss_is_the_sum_over_seeds_averaged_over_images() -> None:
    """PixelCAM eq. 3: λ multiplies Σ over an image's seeds of H(y', f(F_p)); mean over images."""
    from histocam.methods.student import partial_cross_entropy

    logits = torch.zeros(2, 2, 1, 3)
    logits[0, 1, 0, 0] = math.log(3.0)  # p(fg) = 3/4 at image 0, pixel 0
    labels = torch.tensor([[[1, 0, IGNORE]], [[IGNORE, IGNORE, 1]]])
    expected = (-math.log(0.75) - math.log(0.5) - math.log(0.5)) / 2  # image 0: 2 seeds, 1: one
    assert float(partial_cross_entropy(logits, one_hot_seeds(labels))) == pytest.approx(expected,
                                                                                        abs=1e-6)
    unlabelled = one_hot_seeds(torch.full_like(labels, IGNORE))
    assert float(partial_cross_entropy(logits, unlabelled)) == 0.0
    # weights: ¼ of a background seed and ½ of a foreground one at image 0, pixel 0
    soft = torch.zeros(2, 2, 1, 3)
    soft[0, 0, 0, 0], soft[0, 1, 0, 0] = 0.25, 0.5
    assert float(partial_cross_entropy(logits, soft)) == pytest.approx(
        (-0.25 * math.log(0.25) - 0.5 * math.log(0.75)) / 2, abs=1e-6)


def test_dataset_identity_ignores_how_the_path_is_spelled(tmp_path: Path, monkeypatch) -> None:
    from histocam.data.config import DataConfig
    from histocam.maps.store import dataset_identity

    (tmp_path / "a" / "data").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    relative = dataset_identity(DataConfig(dataset="data"))
    assert relative == dataset_identity(DataConfig(dataset=str(tmp_path / "a" / "data")))
    assert relative == dataset_identity(DataConfig(dataset="../a/data"))
    assert relative != dataset_identity(DataConfig(dataset=str(tmp_path / "b")))
    assert relative != dataset_identity(DataConfig(dataset="data", split_seed=1))


def test_pipeline_stages_take_partial_method_overrides() -> None:
    from histocam.experiments.pipeline import load_pipeline_config

    p = load_pipeline_config(None, ["student.method.n=3", "teacher.method.kmax=0.2",
                                    "teacher.method.name=wildcat"])
    assert p.student.method.name == "pixelcam" and p.student.method.n == 3
    assert p.teacher.method.name == "wildcat" and p.teacher.method.kmax == 0.2
    with pytest.raises(ValueError, match="share the pipeline's backbone"):
        load_pipeline_config(None, ["teacher.method.backbone.name=resnet50"])
    with pytest.raises(ValueError, match="the student's classifier is the teacher's method"):
        load_pipeline_config(None, ["student.method.classifier.name=wildcat"])
    with pytest.raises(ValueError, match="teacher_run replaces the teacher stage"):
        load_pipeline_config(None, ["teacher_run=runs/x", "teacher.train.epochs=3"])


def test_pipeline_never_trains_a_given_teacher_run(tmp_path: Path) -> None:
    """teacher_run is used as it is: an untrained one is an error in the library, not only in
    the CLI, and nothing is trained in its place."""
    from histocam.experiments.pipeline import load_pipeline_config, run_pipeline
    from histocam.runs import RunError

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "config.yaml").write_text("name: t\n")
    p = load_pipeline_config(None, [f"teacher_run={tmp_path / 't'}", f"out_dir={tmp_path}"])
    with pytest.raises(RunError, match="no best-loc/best-cl checkpoints"):
        run_pipeline(p, progress=False)
    assert not (p.root / "teacher-cam").exists()


def test_uninformed_pixel_loss_is_ln2_per_seed_and_the_zero_heads_loss() -> None:
    from histocam.methods.student import uninformed_pixel_loss

    labels = torch.tensor([[[1, 0, IGNORE]], [[IGNORE, IGNORE, 1]]])  # 2 seeds, then 1
    assert float(uninformed_pixel_loss(one_hot_seeds(labels))) == pytest.approx(1.5 * math.log(2),
                                                                                abs=1e-6)
    torch.manual_seed(0)
    pix = create_method({"name": "pixelcam", "n": 3, "backbone": {"name": "test_resnet"}}, 2)
    x = torch.randn(3, 3, 40, 56)
    batch = {"label": torch.tensor([0, 1, 1]), "cam": torch.rand(3, 40, 56)}
    _, parts = pix.loss(batch, pix(x))  # the zero-initialised head says ½ everywhere
    assert parts["pixel"] == pytest.approx(parts["pixel_chance"], rel=1e-5)
    assert 5 * math.log(2) <= parts["pixel_chance"] <= 6 * math.log(2) + 1e-6  # ≤ 2n, few clash


def test_a_pixel_head_above_the_uninformed_loss_is_reported() -> None:
    pix = create_method({"name": "pixelcam", "backbone": {"name": "test_resnet"}}, 2)
    chance = 10 * math.log(2)
    assert pix.training_warnings({"train_pixel": 1.09 * chance, "train_pixel_chance": chance}) == []
    assert pix.training_warnings({"train_loss": 3.0}) == []  # a method without a pixel loss
    (message,) = pix.training_warnings({"train_pixel": 1.3 * chance, "train_pixel_chance": chance})
    assert "1.30×" in message and "head_lr_multiplier" in message


@pytest.mark.slow
def test_a_diverging_pixel_head_is_logged_once(tmp_path: Path, caplog) -> None:
    from histocam.experiments.pipeline import run_pipeline

    diverging = {"epochs": 2, "batch_size": 4, "num_workers": 0, "head_lr_multiplier": 1e4}
    p = _tiny_pipeline(tmp_path, student={"train": diverging})
    with caplog.at_level("WARNING", logger="histocam"):
        run_pipeline(p, progress=False)
    with (p.root / "pixelcam-gradcampp" / "log.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["train_pixel"]]
    assert len(rows) == 2 and all(float(r["train_pixel"]) > 1.1 * float(r["train_pixel_chance"])
                                  for r in rows)
    warned = [r.message for r in caplog.records if "pixel head's loss" in r.message]
    assert len(warned) == 1 and "epoch 1" in warned[0]
