"""Shared fixtures: tiny datasets written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared"
GLAS_SHARED = SHARED / "data" / "glas-train"


def write_rgb(path: Path, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return image


def write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8)).save(path)


@pytest.fixture
def glas_dir(tmp_path: Path) -> Path:
    """A GlaS-like release: 5 benign + 7 malignant train images, 2 test images, CR-only Grade.csv."""
    release = tmp_path / "Warwick QU Dataset (Released 2016_07_08)"
    rows = ["name,patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)"]
    names = [(f"train_{i}", "benign" if i < 5 else "malignant") for i in range(12)]
    names += [("testA_1", "benign"), ("testB_1", "malignant")]
    for k, (name, grade) in enumerate(names):
        write_rgb(release / f"{name}.bmp", 9, 13, seed=k)
        instance = np.zeros((9, 13), np.uint8)
        instance[1:4, 2:6] = 1
        instance[5:8, 7:12] = 2  # an instance map: two glands
        write_mask(release / f"{name}_anno.bmp", instance)
        rows.append(f"{name},{k}, {grade}, whatever")
    (release / "Grade.csv").write_bytes("\r".join(rows).encode() + b"\r")
    return tmp_path
