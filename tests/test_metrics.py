"""Metrics against a deliberately simple reference and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from histocam.metrics import (
    THRESHOLDS,
    Batch,
    ClassificationAccuracy,
    MapError,
    PerImageScores,
    PixelHistogram,
    PxAP,
    area_rates,
    at_threshold,
    best_threshold,
    bin_index,
    paired_ttest,
    separability_index,
)
from histocam.metrics.histogram import EDGES, histogram_counts

# thresholds of the reference evaluator, plus the two extra edges (1.0 and 2.0) it also visits
REF_TAUS = np.concatenate([THRESHOLDS, [1.0, 2.0]])


def reference_pxap(maps: list[np.ndarray], masks: list[np.ndarray]) -> float:
    """Slow reference: per-threshold pixel counting in a Python loop (float64 comparisons)."""
    scores = np.concatenate([m.astype(np.float64).ravel() for m in maps])
    truth = np.concatenate([t.ravel().astype(bool) for t in masks])
    n_fg = truth.sum()
    precision, recall = [], []
    for tau in REF_TAUS[::-1]:  # decreasing threshold = increasing recall
        predicted = scores >= tau
        tp = np.sum(predicted & truth)
        fp = np.sum(predicted & ~truth)
        precision.append(tp / (tp + fp) if tp + fp > 0 else 0.0)
        recall.append(tp / n_fg)
    ap = 0.0
    for i in range(1, len(recall)):
        ap += precision[i] * (recall[i] - recall[i - 1])
    return 100 * ap


def reference_histogram(maps, masks):
    fg = sum(np.histogram(m.astype(np.float64)[t], bins=EDGES)[0] for m, t in zip(maps, masks))
    bg = sum(np.histogram(m.astype(np.float64)[~t], bins=EDGES)[0] for m, t in zip(maps, masks))
    return fg, bg


def _random_set(seed: int, n: int = 5, h: int = 7, w: int = 11, dtype=np.float32):
    rng = np.random.default_rng(seed)
    maps = rng.random((n, h, w)).astype(dtype)
    maps[0] = np.round(maps[0] * 1000) / 1000  # ties exactly at bin edges
    maps[1, 0, :3] = [0.0, 1.0, 0.999]
    masks = rng.random((n, h, w)) < 0.4
    masks[2] = False  # an all-background image
    masks[3] = True  # an all-foreground image
    maps[4] = 0.0  # a constant-zero map
    return maps, masks


def test_bin_index_equals_numpy_histogram_including_edges() -> None:
    values64 = np.concatenate([THRESHOLDS, [0.0, 1.0, 0.5, 0.3, 0.7, 0.999],
                               np.nextafter(THRESHOLDS[1:], 0), np.nextafter(THRESHOLDS, 1),
                               np.random.default_rng(0).random(5000)])
    for dtype, tdtype in ((np.float64, torch.float64), (np.float32, torch.float32)):
        values = values64.astype(dtype)
        expected = np.searchsorted(EDGES, values.astype(np.float64), side="right") - 1
        got = bin_index(torch.from_numpy(values).to(tdtype)).numpy()
        assert np.array_equal(got, expected), dtype
        # and the counts equal np.histogram's
        assert np.array_equal(np.bincount(got, minlength=1002),
                              np.histogram(values.astype(np.float64), bins=EDGES)[0])


def test_float32_fast_path_is_exact_around_every_edge() -> None:
    """The fast path bins float32 s at floor(1000 s) (exact product in float64); the reference at
    the last EDGES[k] <= s. Both are step functions whose k-th steps are < 1e-16 apart, so checking
    the 16 float32 values on each side of every edge covers every float32 where they could differ."""
    e32 = torch.from_numpy(EDGES[:1001].astype(np.float32))
    values, down, up = [e32], e32.clone(), e32.clone()
    for _ in range(16):
        down = torch.nextafter(down, torch.tensor(-1.0)).clamp(min=0)
        up = torch.nextafter(up, torch.tensor(2.0)).clamp(max=1)
        values += [down, up]
    values = torch.cat(values)
    fast = torch.floor(values.double() * 1000).long()
    assert torch.equal(fast, bin_index(values.double()))  # the binning the fast path computes
    fg = torch.arange(values.numel()) % 3 == 0
    counts = histogram_counts(values, fg).numpy()
    v = values.double().numpy()
    assert np.array_equal(counts[:1002], np.histogram(v[~fg.numpy()], bins=EDGES)[0])
    assert np.array_equal(counts[1002:], np.histogram(v[fg.numpy()], bins=EDGES)[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pxap_equals_slow_reference(seed: int, dtype) -> None:
    maps, masks = _random_set(seed, dtype=dtype)
    acc = PxAP()
    acc.update(Batch(maps=torch.from_numpy(maps[:3]), masks=torch.from_numpy(masks[:3])))
    acc.update(Batch(maps=torch.from_numpy(maps[3:]), masks=torch.from_numpy(masks[3:])))
    assert acc.n_images == 5
    fg, bg = reference_histogram(list(maps), list(masks))
    assert np.array_equal(acc.fg.numpy(), fg) and np.array_equal(acc.bg.numpy(), bg)
    assert acc.compute() == pytest.approx(reference_pxap(list(maps), list(masks)), abs=1e-6)


def test_merge_equals_single_accumulator() -> None:
    maps, masks = _random_set(3, n=6, h=5, w=3)
    whole, a, b = PxAP(), PxAP(), PxAP()
    whole.update(Batch(maps=torch.from_numpy(maps), masks=torch.from_numpy(masks)))
    a.update(Batch(maps=torch.from_numpy(maps[:2]), masks=torch.from_numpy(masks[:2])))
    b.update(Batch(maps=torch.from_numpy(maps[2:]), masks=torch.from_numpy(masks[2:])))
    a.merge(b)
    assert torch.equal(a.fg, whole.fg) and torch.equal(a.bg, whole.bg) and a.n_images == 6
    assert a.compute() == whole.compute()
    a.reset()
    assert a.fg.sum() == 0 and a.n_images == 0


def test_pxap_hand_cases() -> None:
    perfect = PxAP()
    perfect.update(Batch(maps=torch.tensor([[[0.9, 0.1], [0.6, 0.3]]]),
                         masks=torch.tensor([[[1, 0], [1, 0]]])))
    assert perfect.compute() == pytest.approx(100.0)
    inverted = PxAP()  # fg scored 0.2, bg 0.8: recall reaches 1 only at precision 1/2
    inverted.update(Batch(maps=torch.tensor([[[0.2, 0.8]]]), masks=torch.tensor([[[1, 0]]])))
    assert inverted.compute() == pytest.approx(50.0)
    empty = PxAP()
    empty.update(Batch(maps=torch.zeros(1, 2, 2), masks=torch.zeros(1, 2, 2)))
    with pytest.raises(ValueError, match="without foreground"):
        empty.compute()


def test_area_rates_hand_case() -> None:
    hist = PixelHistogram()
    mask = torch.tensor([[[1, 1, 0, 0]]])
    hist.update(Batch(maps=torch.full((1, 1, 4), 0.5), masks=mask))
    rates = area_rates(hist)
    # score 0.5 >= τ for τ in {0, …, 0.5}: 501 of 1000 thresholds
    assert rates["TP*"] == pytest.approx(50.1) and rates["FP*"] == pytest.approx(50.1)
    assert rates["FN*"] == pytest.approx(49.9) and rates["TN*"] == pytest.approx(49.9)


def test_at_threshold_hand_case() -> None:
    hist = PixelHistogram()
    hist.update(Batch(maps=torch.tensor([[[0.9, 0.1], [0.6, 0.3]]]), masks=torch.tensor([[[1, 0], [0, 1]]])))
    r = at_threshold(hist, 0.5)  # predicted fg {0.9, 0.6}: tp 1, fp 1, fn 1, tn 1
    assert r["dice_fg"] == pytest.approx(50.0) and r["dice_bg"] == pytest.approx(50.0)
    assert r["iou_fg"] == pytest.approx(100 / 3) and r["miou"] == pytest.approx(100 / 3)
    assert r["TP"] == pytest.approx(50.0) and r["FP"] == pytest.approx(50.0)
    # mIoU is maximal (7/12) both for τ ∈ (0.1, 0.3] (prediction {0.9, 0.6, 0.3}: IoU_fg 2/3,
    # IoU_bg 1/2) and for τ ∈ (0.6, 0.9] (prediction {0.9}: 1/2 and 2/3): ties -> lowest τ, 0.101
    assert best_threshold(hist) == pytest.approx(0.101)


def test_confusion_curves_equal_loop_reference() -> None:
    maps, masks = _random_set(7)
    hist = PixelHistogram()
    hist.update(Batch(maps=torch.from_numpy(maps), masks=torch.from_numpy(masks)))
    s = maps.astype(np.float64).ravel()
    t = masks.ravel()
    tp_ref = np.array([np.mean(s[t] >= tau) for tau in THRESHOLDS])
    fp_ref = np.array([np.mean(s[~t] >= tau) for tau in THRESHOLDS])
    rates = area_rates(hist)
    assert rates["TP*"] == pytest.approx(100 * tp_ref.mean(), abs=1e-9)
    assert rates["FP*"] == pytest.approx(100 * fp_ref.mean(), abs=1e-9)
    assert rates["TN*"] == pytest.approx(100 - 100 * fp_ref.mean(), abs=1e-9)
    iou_fg = [np.sum((s >= x) & t) / np.sum((s >= x) | t) for x in THRESHOLDS]
    iou_bg = [np.sum((s < x) & ~t) / np.sum((s < x) | ~t) for x in THRESHOLDS]
    miou = 0.5 * (np.array(iou_fg) + np.array(iou_bg))
    assert best_threshold(hist) == pytest.approx(THRESHOLDS[int(np.argmax(miou))])


def test_per_image_scores() -> None:
    maps, masks = _random_set(4)
    per = PerImageScores(tau=0.5)
    per.update(Batch(maps=torch.from_numpy(maps), masks=torch.from_numpy(masks),
                     ids=[f"im{i}" for i in range(5)]))
    for i in range(5):
        row = per.rows[i]
        assert row["id"] == f"im{i}"
        if masks[i].any():
            single = PxAP()
            single.update(Batch(maps=torch.from_numpy(maps[i : i + 1]),
                                masks=torch.from_numpy(masks[i : i + 1])))
            assert row["ap"] == pytest.approx(single.compute(), abs=1e-9)
        else:
            assert np.isnan(row["ap"])
        pred, t = maps[i].astype(np.float64) >= 0.5, masks[i]
        denom = pred.sum() + t.sum()
        if denom:
            assert row["dice_fg"] == pytest.approx(100 * 2 * np.sum(pred & t) / denom)


def test_map_validation_names_the_image() -> None:
    hist = PixelHistogram()
    maps = torch.rand(3, 5, 7)
    maps[1, 2, 3] = float("nan")
    with pytest.raises(MapError, match="'b'.*non-finite"):
        hist.update(Batch(maps=maps, masks=torch.zeros(3, 5, 7), ids=["a", "b", "c"]))
    maps = torch.rand(3, 5, 7)
    maps[2, 0, 0] = 1.0001
    with pytest.raises(MapError, match="'c'.*outside \\[0, 1\\]"):
        hist.update(Batch(maps=maps, masks=torch.zeros(3, 5, 7), ids=["a", "b", "c"]))
    with pytest.raises(MapError, match="shape"):
        hist.update(Batch(maps=torch.rand(3, 5, 7), masks=torch.zeros(3, 5, 6)))
    with pytest.raises(MapError, match="B×H×W"):
        hist.update(Batch(maps=torch.rand(5, 7), masks=torch.zeros(5, 7)))
    assert hist.n_images == 0  # nothing was half-added


def test_classification_accuracy_hand_case() -> None:
    acc = ClassificationAccuracy(3)
    acc.update(Batch(logits=torch.tensor([0, 1, 1, 2, 0]), labels=torch.tensor([0, 1, 2, 2, 1])))
    logits = torch.tensor([[0.1, 0.9, 0.0]])
    acc.update(Batch(logits=logits, labels=torch.tensor([1])))
    out = acc.compute()
    assert out.accuracy == pytest.approx(100 * 4 / 6)
    assert out.per_class == pytest.approx([100.0, 100 * 2 / 3, 50.0])
    assert out.confusion_matrix == [[1, 0, 0], [1, 2, 0], [0, 1, 1]] and out.n_images == 6


def test_separability_equals_scatter_matrix_definition() -> None:
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 5, 7, 11, generator=g, dtype=torch.float64)
    masks = torch.zeros(3, 14, 22)
    masks[0, :, :10] = 1
    masks[1, 4:12, 6:20] = 1
    # image 2 has no foreground: skipped
    j = separability_index(feats, masks)
    assert torch.isnan(j[2])
    for b in range(2):
        grid = torch.nn.functional.avg_pool2d(masks[b][None, None], 2)[0, 0].numpy() >= 0.5
        x = feats[b].reshape(5, -1).T.numpy()
        lab = grid.ravel()
        m = x.mean(0)
        sw = np.zeros((5, 5))
        sb = np.zeros((5, 5))
        for c in (True, False):
            xc = x[lab == c]
            mc = xc.mean(0)
            sw += (xc - mc).T @ (xc - mc)
            sb += len(xc) * np.outer(mc - m, mc - m)
        assert float(j[b]) == pytest.approx(np.trace(sb) / np.trace(sw), rel=1e-10)


def test_paired_ttest_matches_scipy_and_drops_nan() -> None:
    a = np.array([1.0, 2.0, 3.0, np.nan, 5.0])
    b = np.array([1.5, 2.1, 3.9, 4.0, 5.2])
    out = paired_ttest(a, b)
    ref = stats.ttest_rel(b[[0, 1, 2, 4]], a[[0, 1, 2, 4]])
    assert out.t == pytest.approx(ref.statistic) and out.p == pytest.approx(ref.pvalue)
    assert out.n == 4 and "paired" in out.test


@pytest.mark.parametrize("shape", [(3, 7, 11), (5, 4, 9)])
def test_chance_is_the_pxap_of_an_all_ones_map_and_the_fg_fraction(shape) -> None:
    from histocam.metrics.pxap import chance_pxap

    g = torch.Generator().manual_seed(shape[0])
    masks = torch.rand(shape, generator=g) < 0.3
    hist = PixelHistogram()
    hist.update(Batch(maps=torch.rand(shape, generator=g), masks=masks))
    ones = PxAP()
    ones.update(Batch(maps=torch.ones(shape), masks=masks))
    chance = chance_pxap(hist.fg.numpy(), hist.bg.numpy())
    assert chance == pytest.approx(ones.compute(), abs=1e-12)
    assert chance == pytest.approx(100 * float(masks.double().mean()), abs=1e-9)


def test_ignored_pixels_hand_case() -> None:
    """fg scores {0.9, 0.5}, bg {0.7, 0.2}. Ranked: 0.9 fg (P 1, R ½), 0.7 bg (P ½, R ½), 0.5 fg
    (P ⅔, R 1): PxAP = 100·(1·½ + ⅔·½) = 83.3. Ignoring the 0.7 background pixel (an ignore region of
    localization.txt) leaves a perfect ranking: PxAP 100, one background pixel fewer."""
    maps = torch.tensor([[[0.9, 0.7], [0.5, 0.2]]])
    masks = torch.tensor([[[True, False], [True, False]]])
    ignore = torch.tensor([[[False, True], [False, False]]])
    full, ignored = PxAP(), PxAP()
    full.update(Batch(maps=maps, masks=masks))
    ignored.update(Batch(maps=maps, masks=masks, ignore=ignore))
    assert full.compute() == pytest.approx(100 * (0.5 + 2 / 3 * 0.5))
    assert ignored.compute() == pytest.approx(100.0)
    assert (int(ignored.fg.sum()), int(ignored.bg.sum()), ignored.n_images) == (2, 1, 1)
    per = PerImageScores(tau=0.5)
    per.update(Batch(maps=maps, masks=masks, ids=["x"]))
    per.update(Batch(maps=maps, masks=masks, ids=["x-ignored"], ignore=ignore))
    # τ = 0.5: prediction {0.9, 0.7, 0.5}: tp 2, fp 1 -> Dice⁺ 4/5; without 0.7: tp 2, fp 0
    assert per.rows[0]["dice_fg"] == pytest.approx(80.0) and per.rows[0]["fg_fraction"] == 0.5
    assert per.rows[1]["ap"] == pytest.approx(100.0) and per.rows[1]["dice_fg"] == pytest.approx(100.0)
    assert per.rows[1]["dice_bg"] == pytest.approx(100.0)
    assert per.rows[1]["fg_fraction"] == pytest.approx(2 / 3)


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 7, 11)])
def test_ignored_pixels_equal_scoring_without_them(shape) -> None:
    """Every ignored pixel changes nothing: the same counts and scores as the image's other pixels
    alone (given as a 1×1×N "image"); ignore=None and an all-False ignore change nothing either."""
    g = torch.Generator().manual_seed(shape[1])
    maps = torch.rand(shape, generator=g)
    masks = torch.rand(shape, generator=g) < 0.4
    ignore = torch.rand(shape, generator=g) < 0.3
    ignore[0] = False  # nothing ignored
    ignore[-1, :, : shape[2] // 2] = True  # a block
    ids = [f"im{i}" for i in range(shape[0])]
    hist = PixelHistogram()
    hist.update(Batch(maps=maps, masks=masks, ids=ids, ignore=ignore))
    kept = PixelHistogram()
    kept.update(Batch(maps=maps[~ignore][None, None], masks=masks[~ignore][None, None]))
    assert torch.equal(hist.fg, kept.fg) and torch.equal(hist.bg, kept.bg)
    assert hist.n_images == shape[0]
    plain, none_ignored = PixelHistogram(), PixelHistogram()
    plain.update(Batch(maps=maps, masks=masks))
    none_ignored.update(Batch(maps=maps, masks=masks, ignore=torch.zeros(shape, dtype=torch.uint8)))
    assert torch.equal(plain.fg, none_ignored.fg) and torch.equal(plain.bg, none_ignored.bg)
    per = PerImageScores(tau=0.4)
    per.update(Batch(maps=maps, masks=masks, ids=ids, ignore=ignore))
    for i in range(shape[0]):
        alone = PerImageScores(tau=0.4)
        keep = ~ignore[i]
        alone.update(Batch(maps=maps[i][keep][None, None], masks=masks[i][keep][None, None], ids=[ids[i]]))
        for key, value in alone.rows[0].items():
            got = per.rows[i][key]
            assert got == value or (np.isnan(value) and np.isnan(got)), (ids[i], key)


def test_bad_ignore_mask_is_an_error_and_adds_nothing() -> None:
    hist, per = PixelHistogram(), PerImageScores()
    maps, masks = torch.rand(2, 5, 7), torch.zeros(2, 5, 7)
    with pytest.raises(MapError, match="ignore mask shape"):
        hist.update(Batch(maps=maps, masks=masks, ignore=torch.zeros(2, 7, 5, dtype=torch.bool)))
    with pytest.raises(MapError, match="bool or \\{0, 1\\}"):
        per.update(Batch(maps=maps, masks=masks, ids=["a", "b"], ignore=torch.full((2, 5, 7), 2)))
    with pytest.raises(MapError, match="bool or \\{0, 1\\}"):
        hist.update(Batch(maps=maps, masks=masks, ignore=torch.zeros(2, 5, 7)))  # float: ambiguous, refused
    assert hist.n_images == 0 and int(hist.fg.sum() + hist.bg.sum()) == 0 and per.rows == []
