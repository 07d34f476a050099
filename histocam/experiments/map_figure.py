"""Figures of the pipelines: test images with their mask and the maps of two models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from histocam.core.devices import resolve_device
from histocam.core.rundir import LABEL
from histocam.data.open import open_source
from histocam.data.transforms import JointTransform
from histocam.runs.run import Run

#: How each kind of map is scaled, said under the figure.
MAP_KINDS = {
    False: "min–max normalised per image: every map reaches 1 somewhere, on normal tiles too",
    True: "a probability of foreground: comparable across images, low where nothing is found",
}


def _outline(ax, mask: np.ndarray) -> None:
    """The mask's boundary as a magenta line on a black one (visible on tissue and on every
    colour of the maps; an all-foreground mask: the image's border)."""
    padded = np.pad(mask.astype(float), 1)  # a region touching the border closes along it
    grid = np.arange(-1, mask.shape[1] + 1), np.arange(-1, mask.shape[0] + 1)
    for colour, width in (("black", 2.4), ("magenta", 1.2)):
        ax.contour(*grid, padded, levels=[0.5], colors=colour, linewidths=width)
    ax.set_xlim(-0.5, mask.shape[1] - 0.5)
    ax.set_ylim(mask.shape[0] - 0.5, -0.5)


def save_map_figure(teacher: Run, student: Run, path: Path, device: str = "auto", n: int = 6,
                    checkpoint: str = "best-loc") -> Path:
    """Rows of image | teacher map | student map for ``n`` test images, alternating classes, the
    mask outlined on each panel (ground-truth class; ``checkpoint`` of both).

    Column titles name each run, its checkpoint and epoch; a colour bar under each map column
    and a line per column say how its values are scaled (min–max per image or probability)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dev = resolve_device(device)
    config = teacher.config
    models, titles, kinds = [], [], []
    for run in (teacher, student):
        method, names = run.method(checkpoint, str(dev))
        epoch = run.state(checkpoint)["epoch"]
        models.append(method)
        role = "teacher" if run is teacher else "student"
        titles.append(f"{role}: {run.config.method.name}\n{LABEL[checkpoint]} = epoch {epoch} "
                      f"({run.dir.name})")
        kinds.append(method.probability_maps)
    dataset = open_source(config.data).dataset("test")
    transform = JointTransform.from_config(config.data, train=False)
    picks = _alternating(dataset, len(names), n)
    fig, axes = plt.subplots(len(picks) + 1, 3, figsize=(7.5, 2.3 * len(picks) + 1.2),
                             squeeze=False,
                             gridspec_kw={"height_ratios": [1] * len(picks) + [0.08]})
    shown = []
    for row, i in zip(axes, picks):
        item = transform(dataset[i])
        x = item["image"][None].to(dev)
        y = item["label"][None].to(dev)
        with torch.no_grad():  # top-down maps re-enable the gradients they need
            maps = [m.localize(x, y)[0].cpu().numpy() for m in models]
        mask = item["mask"].numpy() > 0.5
        row[0].imshow(item["image"].permute(1, 2, 0).numpy())
        row[0].set_ylabel(f"{names[int(y)]}\n{dataset.ids[i]}", fontsize=8)
        for ax, m in zip(row[1:], maps):
            shown.append(ax.imshow(m, cmap="jet", vmin=0, vmax=1))
        for ax in row:
            _outline(ax, mask)
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], ["image (mask: magenta outline)", *titles]):
        ax.set_title(title, fontsize=8)
    axes[-1][0].axis("off")
    for ax, kind in zip(axes[-1][1:], kinds):
        bar = fig.colorbar(shown[0], cax=ax, orientation="horizontal")
        bar.ax.tick_params(labelsize=7)
        bar.set_label("probability" if kind else "min–max per image", fontsize=8)
    notes = [f"{t.split(chr(10))[0]}: {MAP_KINDS[k]}" for t, k in zip(titles, kinds)]
    fig.tight_layout(rect=(0, 0.035, 1, 1))
    fig.text(0.02, 0.005, "\n".join(notes), fontsize=7.5, va="bottom")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _alternating(dataset, n_classes: int, n: int) -> list[int]:
    """``n`` annotated test images, alternating classes; within a class, images with foreground
    first (a class without any, such as normal lymph-node tiles, still shows its images: a good
    map is low everywhere there)."""
    labels = dataset.labels
    by_class = [[i for i in range(len(dataset)) if labels[i] == c and dataset.has_mask[i]]
                for c in range(n_classes)]
    for members in by_class:
        members.sort(key=lambda i: not dataset[i].mask.any())
    picks: list[int] = []
    for rank in range(len(dataset)):
        for members in by_class:
            if rank < len(members) and len(picks) < n:
                picks.append(members[rank])
        if len(picks) >= n:
            break
    return picks
