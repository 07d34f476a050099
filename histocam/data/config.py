"""The data section of a run config (pydantic, unknown keys rejected)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Base of every histocam config: unknown keys are an error, values are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
