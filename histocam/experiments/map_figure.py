"""Figures of the pipelines: test images with their mask and the maps of two models."""

from __future__ import annotations

from pathlib import Path

import torch

from histocam.core.devices import resolve_device
from histocam.data.open import open_source
from histocam.data.transforms import JointTransform
from histocam.runs.run import Run


def save_map_figure(teacher: Run, pixelcam: Run, path: Path, device: str = "auto",
                    n: int = 6) -> Path:
    """Rows of image | mask | teacher map | PixelCAM map for ``n`` test images with foreground,
    alternating classes (B-LOC checkpoints, ground-truth class)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dev = resolve_device(device)
    config = teacher.config
    teacher, names = teacher.method("best-loc", str(dev))
    pixelcam, _ = pixelcam.method("best-loc", str(dev))
    dataset = open_source(config.data).dataset("test")
    transform = JointTransform.from_config(config.data, train=False)
    labels = dataset.labels
    by_class = [[i for i in range(len(dataset)) if labels[i] == c and dataset.has_mask[i]]
                for c in range(len(names))]
    # alternate classes; within a class, images with foreground first (a class without any, such as
    # normal lymph-node tiles, still shows its images: a good map is low everywhere there)
    for members in by_class:
        members.sort(key=lambda i: not dataset[i].mask.any())
    picks = []
    for rank in range(len(dataset)):
        for members in by_class:
            if rank < len(members) and len(picks) < n:
                picks.append(members[rank])
        if len(picks) >= n:
            break
    fig, axes = plt.subplots(len(picks), 4, figsize=(8, 2.1 * len(picks)), squeeze=False)
    for row, i in zip(axes, picks):
        item = transform(dataset[i])
        x = item["image"][None].to(dev)
        y = item["label"][None].to(dev)
        with torch.no_grad():
            maps = [m.localize(x, y)[0].cpu().numpy() for m in (teacher, pixelcam)]
        image = item["image"].permute(1, 2, 0).numpy()
        panels = [image, item["mask"].numpy(), *maps]
        titles = [f"{names[int(y)]}", "mask", f"teacher ({config.method.name})", "PixelCAM"]
        for ax, panel, title in zip(row, panels, titles):
            ax.imshow(panel, cmap=None if panel.ndim == 3 else "jet", vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
