"""Why are weakly supervised maps at chance on synthetic-colon? The measurements of docs/results.md.

1. Resolution ceiling: test masks average-pooled to the CAM grid (optionally blurred first), then
   the protocol's normalisation and upsampling -> PxAP.
2. Global statistics: 5-fold cross-validated logistic regression on 9 tile-global colour statistics
   (train split), and on the dark-pixel fractions alone.
3. Frozen ImageNet features: a logistic-regression GAP classifier per encoder stage (train split);
   test accuracy and the PxAP of its CAM (class-1 map = w·f, class-0 map = −w·f), overall and per
   class; plus a hand-made map (pixel darkness box-blurred over 9 px) per class.

Usage: python benchmarks/probes/colon_diagnosis.py [key=value overrides of benchmarks/configs/colon.yaml]
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from histocam.data.open import open_source
from histocam.data.transforms import JointTransform
from histocam.maps.normalize import normalize_cam
from histocam.metrics import Batch, PxAP
from histocam.models.backbones import create_encoder
from histocam.train.loader import make_loader
from histocam.train.run_config import load_run_config


def logistic(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardised-input logistic regression by L-BFGS; returns (w, b) in the input's units."""
    mean, std = x.mean(0), x.std(0).clamp_min(1e-8)
    z = (x - mean) / std
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ w + b, y.float()) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w_in = (w / std).detach()
    return w_in, (b - (mean * w_in).sum()).detach()


def accuracy(w, b, x, y) -> float:
    return float((((x @ w + b) > 0).long() == y).float().mean())


def cross_validated(x: torch.Tensor, y: torch.Tensor, folds: int = 5) -> float:
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    scores = []
    for k in range(folds):
        test = order[k::folds]
        train = order[torch.isin(order, test, invert=True)]
        w, b = logistic(x[train], y[train])
        scores.append(accuracy(w, b, x[test], y[test]))
    return 100 * sum(scores) / folds


def pxap(maps: torch.Tensor, masks: torch.Tensor) -> float:
    metric = PxAP()
    metric.update(Batch(maps=maps.contiguous(), masks=masks > 0.5))
    return metric.compute()


def load(source, config, split):
    loader = make_loader(source.dataset(split), JointTransform.from_config(config.data, False), 1000,
                         shuffle=False, num_workers=0)
    batch = next(iter(loader))
    return batch["image"], batch["image"], batch["label"], batch["mask"]


def main() -> None:
    torch.manual_seed(0)
    config = load_run_config("benchmarks/configs/colon.yaml", sys.argv[1:])
    source = open_source(config.data)
    size = (config.data.eval_size,) * 2
    x_tr, rgb_tr, y_tr, _ = load(source, config, "train")
    x_te, rgb_te, y_te, m_te = load(source, config, "test")
    print(f"test: {len(y_te)} tiles, foreground fraction {float(m_te.mean()):.3f}")

    print("\n1. resolution ceiling (masks pooled to the grid)")
    def pooled(masks: torch.Tensor, grid: int) -> float:
        low = F.adaptive_avg_pool2d(masks[:, None], grid)[:, 0]
        return pxap(normalize_cam(low, size, relu=True), m_te)

    for grid in (6, 11):
        print(f"   grid {grid}: PxAP {pooled(m_te, grid):.1f}")
    for sigma in (16, 32):
        blurred = TF.gaussian_blur(m_te[:, None], 6 * sigma + 1, sigma)[:, 0]
        print(f"   grid 6 after blur sigma {sigma} px: PxAP {pooled(blurred, 6):.1f}")

    print("\n2. global statistics -> class (train split, 5-fold CV)")
    gray = rgb_tr.mean(1)
    stats = torch.stack([*rgb_tr.mean((2, 3)).T, *rgb_tr.std((2, 3)).T, (gray > 0.85).float().mean((1, 2)),
                         (gray < 0.45).float().mean((1, 2)), (gray < 0.55).float().mean((1, 2))], 1)
    print(f"   9 statistics: {cross_validated(stats, y_tr):.1f}%   dark fractions only: "
          f"{cross_validated(stats[:, 7:], y_tr):.1f}%")

    print("\n3. frozen ImageNet encoder, logistic-regression GAP classifier per stage")
    encoder = create_encoder(config.method.backbone).eval()
    with torch.no_grad():
        f_tr = [torch.cat(parts) for parts in zip(*(encoder(c) for c in x_tr.split(40)))]
        f_te = [torch.cat(parts) for parts in zip(*(encoder(c) for c in x_te.split(40)))]
    for stage, (a, b_) in enumerate(zip(f_tr, f_te)):
        w, b = logistic(a.mean((2, 3)), y_tr)
        cam = torch.einsum("d,bdhw->bhw", w, b_)
        cam = torch.where(y_te[:, None, None] == 1, cam, -cam)
        maps = normalize_cam(cam, size, relu=True)
        per_class = "  ".join(f"class {c}: {pxap(maps[y_te == c], m_te[y_te == c]):.1f} "
                              f"(fg {float(m_te[y_te == c].mean()):.2f})" for c in (0, 1))
        print(f"   stage {stage} grid {tuple(b_.shape[-2:])}: test acc "
              f"{100 * accuracy(w, b, b_.mean((2, 3)), y_te):.1f}%  CAM PxAP {pxap(maps, m_te):.1f}  "
              f"[{per_class}]")
    dark = F.avg_pool2d(1 - rgb_te.mean(1, keepdim=True), 9, 1, 4, count_include_pad=False)[:, 0]
    print("   darkness blurred over 9 px: " + "  ".join(
        f"class {c}: {pxap(dark[y_te == c], m_te[y_te == c]):.1f}" for c in (0, 1)))


if __name__ == "__main__":
    main()
