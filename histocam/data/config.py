"""The data section of a run config (pydantic, unknown keys rejected)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Base of every histocam config: unknown keys are an error, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticConfig(StrictModel):
    """Sizes, counts and difficulty knobs of the synthetic benchmark."""

    seed: int = 0
    size: int = Field(256, ge=64, description="stored tile size (train crops 224 from it)")
    n_train: int = Field(240, ge=2)
    n_valcl: int = Field(40, ge=2)
    n_test: int = Field(120, ge=2)
    valpx_per_class: int | None = Field(None, ge=1, description="default: colon 3, node 5")
    positive_fraction: float = Field(0.5, gt=0, lt=1, description="share of class 1")
    contrast: float = Field(0.5, ge=0, le=1, description="foreground vs background colour gap")
    nuclear_size_gap: float = Field(0.5, ge=0, le=1, description="nuclear size gap of classes")
    stain_variation: float = Field(1.0, ge=0, le=3, description="per-image stain perturbation")
    stain_shift: float = Field(0.0, ge=0, le=3, description="0 = source stain; higher = further")
    cache_dir: Path | None = Field(None, description="optional on-disk cache of rendered samples")


class DataConfig(StrictModel):
    """Which dataset, how to split it, and the PROTOCOL.md pre-processing sizes."""

    dataset: str = Field(
        "synthetic-colon",
        description="registered dataset name, or a path: GlaS release folder, WSOL list folder, "
        "or CSV manifest",
    )
    root: Path | None = Field(None, description="image root for WSOL split lists / GlaS")
    classes: list[str] | None = Field(None, description="class names, index = position")
    split_seed: int = 0
    valcl_fraction: float | None = Field(None, ge=0, lt=1, description="default: per format")
    test_fraction: float = Field(0.2, ge=0, lt=1, description="used only without a test split")
    valpx_per_class: int | None = Field(None, ge=1, description="B-LOC set size per class")
    resize: int = Field(256, ge=8, description="train: resize to this square size, then crop")
    crop: int = Field(224, ge=8, description="train crop size")
    eval_size: int = Field(224, ge=8, description="evaluation resize (no crop)")
    color_jitter: bool = True
    stain_augment: float = Field(0.0, ge=0, le=1, description="HED stain augmentation strength")
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig,
                                       description="used by the synthetic-* datasets")
