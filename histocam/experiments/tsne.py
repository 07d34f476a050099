"""t-SNE of foreground/background pixel features (PixelCAM Figs. 19–24) and the separability J
(PixelCAM App. D, ``histocam.metrics.separability``).

For up to ``n_images`` test images of each class that have both regions, the encoder's last feature
map (the features PixelCAM's pixel classifier reads) gives one d-dimensional vector per feature-grid
cell, labelled FG when at least half of its pixels are FG (the labelling of J); each image's cells
are embedded in 2-D by t-SNE (van der Maaten & Hinton, JMLR 2008; scikit-learn's exact solver,
perplexity min(30, (N − 1)/3) for N cells, PCA initialisation, fixed seed). J is computed per image
and averaged over all test images with both regions. A teacher and its PixelCAM are two runs, one
figure each in the report. The ``TsneResult`` is stored with the run (``RunDir.experiment``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from histocam.core.devices import resolve_device
from histocam.core.experiment_results import TsneImage, TsneResult
from histocam.core.progress import task as progress_task
from histocam.data.open import open_source
from histocam.data.transforms import JointTransform
from histocam.metrics.protocol import Batch
from histocam.metrics.separability import SeparabilityIndex, separability_index
from histocam.runs.run import Run
from histocam.train.loader import make_loader
from histocam.train.memory import fit_batch

MIN_CELLS = 6
TSNE_DEFINITION = ("each point is one cell of the encoder's last feature grid of one test image, red = "
                   "FG (≥ half of its pixels FG), blue = BG; t-SNE per image (exact, perplexity "
                   "min(30, (N − 1)/3), PCA init, fixed seed); J per image in the titles")


def cell_labels(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """B×H×W masks -> B×h×w FG labels of the feature-grid cells (≥ half of their pixels FG)."""
    return F.adaptive_avg_pool2d(masks.float()[:, None], grid)[:, 0] >= 0.5


def embed(points: np.ndarray, seed: int = 0) -> np.ndarray:
    """N×d -> N×2 t-SNE embedding."""
    from sklearn.manifold import TSNE

    n = len(points)
    if n < MIN_CELLS:
        raise ValueError(f"t-SNE needs at least {MIN_CELLS} points, got {n}")
    perplexity = float(min(30.0, (n - 1) / 3.0))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                method="exact").fit_transform(points.astype(np.float64))


def run_tsne(run_dir: str | Path, *, checkpoint: str = "best-loc", n_images: int = 3,
             split: str = "test", seed: int = 0, device: str = "auto") -> Path:
    """Store the t-SNE of ``checkpoint``'s pixel features with the run; returns the path written."""
    run = Run(run_dir).require_trained()
    with run.writing("t-SNE", device):  # the run's lock, until the result is written
        return _tsne(run, checkpoint, n_images, split, seed, device)


def _tsne(run: Run, checkpoint: str, n_images: int, split: str, seed: int, device: str) -> Path:
    dev = resolve_device(device)
    method, class_names = run.method(checkpoint, str(dev))
    data = run.config.data
    dataset = open_source(data).dataset(split)
    batch = fit_batch(method, data.eval_size, dev, limit=run.config.train.eval_batch_size,
                      localize=False)
    loader = make_loader(dataset, JointTransform.from_config(data, train=False), batch,
                         shuffle=False, num_workers=0)
    overall = SeparabilityIndex(class_names)
    chosen: dict[int, int] = {}
    images, skipped = [], 0
    with torch.no_grad(), progress_task(f"{run.dir.name} {checkpoint}: features and t-SNE",
                                        len(dataset), unit="images") as bar:
        for batch in loader:
            bar.advance(len(batch["id"]))
            has = batch["has_mask"]
            if not bool(has.any()):
                continue
            features = method(batch["image"][has].to(dev)).features[-1].float()
            masks, labels = batch["mask"][has].to(dev), batch["label"][has]
            ids = [i for i, h in zip(batch["id"], has.tolist()) if h]
            overall.update(Batch(ids=ids, labels=labels, masks=masks, features=features))
            j = separability_index(features, masks).cpu().numpy()
            fg = cell_labels(masks, tuple(features.shape[-2:])).cpu().numpy()
            for k, (image_id, y) in enumerate(zip(ids, labels.tolist())):
                if chosen.get(y, 0) >= n_images or np.isnan(j[k]):
                    continue
                cells = features[k].flatten(1).T.cpu().numpy()  # (h·w)×d
                if len(cells) < MIN_CELLS:
                    skipped += 1
                    continue
                chosen[y] = chosen.get(y, 0) + 1
                images.append(TsneImage(id=image_id, label=int(y), class_name=class_names[y],
                                        j=float(j[k]), points=embed(cells, seed).round(4).tolist(),
                                        fg=fg[k].reshape(-1).astype(int).tolist()))
    result = TsneResult(definition=TSNE_DEFINITION, checkpoint=checkpoint, split=split, seed=seed,
                        images=images, skipped_small_grid=skipped, separability=overall.compute())
    return result.write(run.dir.experiment("tsne"))
