"""Shared fixtures: tiny datasets written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
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


def tissue_rgb(h: int, w: int, seed: int = 0, tissue: np.ndarray | None = None) -> np.ndarray:
    """White glass with pink, textured tissue where ``tissue`` (default: everywhere)."""
    rng = np.random.default_rng(seed)
    pink = np.stack([rng.integers(150, 230, (h, w)), rng.integers(40, 140, (h, w)),
                     rng.integers(110, 200, (h, w))], axis=2).astype(np.uint8)
    if tissue is None:
        return pink
    return np.where(tissue[..., None], pink, np.uint8(245))


def write_slide(path: Path, rgb: np.ndarray, mpp: float = 0.5) -> Path:
    """A tiled pyramidal TIFF (level 0 and a 4× level as successive pages, as OpenSlide reads
    generic TIFF)."""
    per_cm = 1e4 / mpp
    with tifffile.TiffWriter(path) as tw:
        tw.write(rgb, tile=(64, 64), photometric="rgb", compression="zlib",
                 resolution=(per_cm, per_cm), resolutionunit="CENTIMETER")
        tw.write(rgb[::4, ::4], tile=(64, 64), photometric="rgb", compression="zlib",
                 subfiletype=1, resolution=(per_cm / 4, per_cm / 4), resolutionunit="CENTIMETER")
    return path
