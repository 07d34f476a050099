"""What a linear pixel head can learn on a teacher's frozen encoder: PixelCAM's objective at its optimum.

For each teacher run it takes the encoder's last feature map (the features PixelCAM's head reads, from
the B-CL checkpoint PixelCAM starts from) on the train and test images at the evaluation size, and
fits a linear foreground/background head on them to convergence (L-BFGS, standardised features,
an L2 penalty) in two ways:
- **PB seeds** — the expectation of PixelCAM's seed loss (eq. 3) under the ``pb`` sampler: a cell p
  of image i is a foreground seed with probability ∝ C_i(p) and a background seed ∝ 1 − C_i(p), so
  the expected loss is Σ_i Σ_p [C_i(p)/Σ_q C_i(q) · H(1, f(F_p)) + (1 − C_i(p))/Σ_q (1 − C_i(q)) ·
  H(0, f(F_p))], with C the teacher's stored B-LOC training map averaged onto the feature grid. This
  is the head the stochastic training aims at, with no sampling noise and no drift of the encoder
  (PixelCAM itself trains on this expectation with ``method.seeds: expected``).
- **oracle** — the same loss with the true masks in place of C: how far a linear head on these
  features can go at all.
Both maps are scored on the held-out test part with the protocol's PxAP (the head's probability,
bilinear to the evaluation size, without min–max, like PixelCAM's map), next to the teacher's own
B-LOC map and the chance level. A teacher with ``method.map_tta`` (``flips``, ``d8``) is scored with
its views, and so is the head: its map is the mean over the same views of the head's map of each
view's features, turned back into the image's frame (``histocam.maps.views``), as a PixelCAM student
with the same ``map_tta`` would make it; ``--views`` scores both with another set of views instead
(the seeds stay the stored maps'). The head is fitted on the images' own features.

Usage:
  python benchmarks/probes/pixel_head_probe.py runs/exp/glas/cam-s0 runs/exp/glas/cam-s1 ...
  [--l2 0.1 0.01] [--views d8]
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

import torch
import torch.nn.functional as F

from histocam.data.open import open_source
from histocam.data.transforms import JointTransform, resize_maps
from histocam.maps.store import load_cams
from histocam.maps.views import VIEWS, from_view, to_view
from histocam.metrics import Batch, PxAP
from histocam.runs import Run
from histocam.train.loader import make_loader


def features_and_masks(run: Run, split: str, views: str = "none"):
    """(features V×N×d×h×w from B-CL, one per view, test maps of B-LOC or None, masks, ignore, ids)
    of ``split``."""
    classifier, _ = run.method("best-cl")
    teacher, _ = run.method("best-loc") if split == "test" else (None, None)
    if teacher is not None:
        teacher.config = teacher.config.model_copy(update={"map_tta": views})
    data = run.config.data
    dataset = open_source(data).dataset(split)
    loader = make_loader(dataset, JointTransform.from_config(data, train=False), 8, shuffle=False,
                         num_workers=0)
    feats, maps, masks, ignore, ids = [], [], [], [], []
    with torch.no_grad():  # top-down maps re-enable gradients where they need them
        for batch in loader:
            feats.append(torch.stack([classifier(to_view(batch["image"], v)).features[-1]
                                      for v in VIEWS[views]]))
            if teacher is not None:
                _, m = teacher.localize_with_logits(batch["image"], batch["label"])
                maps.append(m.detach())
            masks.append(batch["mask"].bool())
            ignore.append(batch["ignore"].bool())
            ids += list(batch["id"])
    return (torch.cat(feats, 1), torch.cat(maps) if maps else None, torch.cat(masks),
            torch.cat(ignore), ids)


def pxap(maps: torch.Tensor, masks: torch.Tensor, ignore: torch.Tensor) -> float:
    metric = PxAP()
    metric.update(Batch(maps=resize_maps(maps[:, None], tuple(masks.shape[-2:]))[:, 0].clamp(0, 1),
                        masks=masks, ignore=ignore & ~masks))
    return metric.compute()


def region_weights(cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cell probabilities of being a PB foreground / background seed (N×P each, rows sum to 1)."""
    fg, bg = cells, 1.0 - cells
    return (fg / fg.sum(1, keepdim=True).clamp_min(1e-12),
            bg / bg.sum(1, keepdim=True).clamp_min(1e-12))


def fit_head(x: torch.Tensor, w_fg: torch.Tensor, w_bg: torch.Tensor, l2: float):
    """argmin_w,b Σ w_fg·H(1, σ(xw + b)) + w_bg·H(0, σ(xw + b)) (normalised) + l2·|w|²."""
    w = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros(1, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")
    total = (w_fg + w_bg).sum()

    def closure():
        opt.zero_grad()
        z = x @ w + b
        loss = (w_fg * F.softplus(-z) + w_bg * F.softplus(z)).sum() / total + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def probe(run: Run, l2s: list[float], views: str | None = None) -> dict[str, float]:
    views_name = views or run.config.method.map_tta  # the teacher's own views by default
    (f_tr,), _, m_tr, _, ids_tr = features_and_masks(run, "train")
    f_te, teacher_te, m_te, ig_te, _ = features_and_masks(run, "test", views_name)
    views = VIEWS[views_name]
    grid = tuple(f_tr.shape[-2:])
    npz = run.dir.stored_maps("best-loc", "train")
    if not npz.is_file():
        run.export_cams("best-loc", "train", device="cpu")
    stored = load_cams(npz, run.config.data, "train", ids_tr)  # the maps PixelCAM samples from
    cams = torch.stack([stored[i] for i in ids_tr])
    cells = F.adaptive_avg_pool2d(cams[:, None].clamp(0, 1), grid)[:, 0].flatten(1).double()
    truth = F.adaptive_avg_pool2d(m_tr[:, None].float(), grid)[:, 0].flatten(1).double()
    d = f_tr.shape[1]
    x_tr = f_tr.permute(0, 2, 3, 1).reshape(-1, d).double()
    x_te = f_te.permute(0, 1, 3, 4, 2).reshape(len(views), -1, d).double()
    mean, std = x_tr.mean(0), x_tr.std(0).clamp_min(1e-6)
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    n_test, grid_te = f_te.shape[1], tuple(f_te.shape[-2:])
    row = {"views": len(views), "chance": pxap(torch.ones_like(teacher_te), m_te, ig_te),
           "teacher": pxap(teacher_te, m_te, ig_te)}
    for name, target in (("pb", cells), ("oracle", truth)):
        w_fg, w_bg = (t.reshape(-1) for t in region_weights(target))
        for l2 in l2s:
            w, b = fit_head(x_tr, w_fg, w_bg, l2)
            head = torch.stack([from_view(torch.sigmoid(x @ w + b).float().reshape(n_test, *grid_te), v)
                                for x, v in zip(x_te, views)]).mean(0)
            row[f"{name} l2={l2:g}"] = pxap(head, m_te, ig_te)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", help="trained teacher runs with stored B-LOC train maps")
    parser.add_argument("--l2", nargs="+", type=float, default=[0.1, 0.01])
    parser.add_argument("--views", choices=list(VIEWS), default=None,
                        help="score the teacher and the head with these views (default: the run's "
                        "method.map_tta)")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = {}
    for path in args.runs:
        rows[path] = probe(Run(path), args.l2, args.views)
        print(path, {k: round(v, 1) for k, v in rows[path].items()}, flush=True)
    columns = list(next(iter(rows.values())))
    print("\nTest PxAP of a converged linear pixel head on the frozen teacher encoder "
          "(benchmarks/probes/pixel_head_probe.py)")
    print("| run | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for path, row in rows.items():
        print(f"| {path} | " + " | ".join(f"{row[c]:.1f}" if isinstance(row[c], float) else str(row[c])
                                          for c in columns) + " |")
    groups = defaultdict(list)  # mean ± std over the seeds of one teacher (…-s0, -s1, …)
    for path, row in rows.items():
        groups[Run(path).config.method.name].append(row)
    for method, group in groups.items():
        if len(group) > 1:
            cells = [f"{statistics.mean(r[c] for r in group):.1f} ± "
                     f"{statistics.stdev(r[c] for r in group):.1f}"
                     if isinstance(group[0][c], float) else str(group[0][c]) for c in columns]
            print(f"| **{method}** ({len(group)} runs) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
