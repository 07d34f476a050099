"""A contact sheet of samples with their mask outlines (docs/ gallery, sanity checks by eye)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from histocam.core.visual import outline


def save_gallery(dataset, path: str | Path, n: int = 16, columns: int = 8, title: str = "") -> Path:
    """Save the first ``n`` samples per class (alternating classes), mask outlines in green."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = np.asarray(dataset.labels)
    per_class = [np.flatnonzero(labels == c)[: n // 2] for c in range(len(dataset.class_names))]
    order = [i for pair in zip(*per_class) for i in pair][:n]
    rows = int(np.ceil(len(order) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order):
        sample = dataset[int(i)]
        shown = outline(sample.image, sample.mask) if sample.mask is not None else sample.image
        ax.imshow(shown)
        fg = f", fg {sample.mask.mean():.0%}" if sample.mask is not None else ""
        ax.set_title(f"{dataset.class_names[sample.label]}{fg}", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
