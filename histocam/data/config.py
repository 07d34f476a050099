"""The data section of a run config (pydantic, unknown keys rejected)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from histocam.core.configs import StrictModel

#: Registered names of the generated datasets and their domain (``histocam.data.synthetic.DOMAINS``).
SYNTHETIC_DATASETS = {"synthetic-colon": "colon", "synthetic-node": "node"}

#: Keys that only datasets drawing their own splits read (GlaS release, CSV without a split column).
SPLIT_KEYS = ("split_seed", "valcl_fraction", "test_fraction", "valpx_per_class", "folds", "fold")

#: What to do instead of setting each file-dataset key, for the synthetic datasets.
_SYNTHETIC_INSTEAD = {
    "root": "remove it: synthetic data is generated, not read from a folder (to use files, write "
            "them with `histocam data synth --out DIR` and set data.dataset to DIR)",
    "classes": "remove it: the class names of {name} are fixed ({classes})",
    "split_seed": "set data.synthetic.seed instead (it draws every split's labels and images)",
    "valcl_fraction": "set data.synthetic.n_valcl instead (valcl has its own images)",
    "test_fraction": "set data.synthetic.n_test instead (test has its own images)",
    "valpx_per_class": "set data.synthetic.valpx_per_class instead",
    "folds": "remove it: every synthetic split is drawn independently (there are no patients to "
             "keep apart); cross-validation folds are for datasets read from files",
    "fold": "remove it: cross-validation folds are for datasets read from files",
}
_SYNTHETIC_CLASSES = {"synthetic-colon": "benign, malignant", "synthetic-node": "normal, tumor"}


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
    """Which dataset, how to split it, and the pre-processing sizes (docs/protocol.md,
    "Preprocessing")."""

    dataset: str = Field(
        "synthetic-colon",
        description="registered dataset name, or a path: GlaS release folder, WSOL list folder, "
        "or CSV manifest",
    )
    root: Path | None = Field(None, description="image root of WSOL split lists; the release folder "
                              "for dataset 'glas'")
    classes: list[str] | None = Field(None, description="class names, index = position (WSOL "
                                      "lists, CSV manifests)")
    split_seed: int = Field(0, description="datasets whose splits are drawn (GlaS, CSV without "
                            "a split column)")
    valcl_fraction: float | None = Field(None, ge=0, lt=1, description="default: per format")
    test_fraction: float = Field(0.2, ge=0, lt=1, description="used only without a test split")
    valpx_per_class: int | None = Field(None, ge=1, description="B-LOC set size per class")
    folds: int | None = Field(None, ge=2, description="group-disjoint cross-validation: cut the "
                              "pool into this many folds by patient (GlaS: Grade.csv's patient ID; "
                              "CSV: the group column); test = fold `fold`, valcl = other patients")
    fold: int | None = Field(None, ge=0, description="which fold is the test split (0..folds-1)")
    resize: int = Field(256, ge=8, description="train: resize to this square size, then crop")
    crop: int = Field(224, ge=8, description="train crop size")
    eval_size: int = Field(224, ge=8, description="evaluation resize (no crop)")
    mpp: float | None = Field(None, gt=0, le=1000, description="microns per pixel of the images "
                              "as stored, the scale `histocam predict` tiles slides at; default: "
                              "the dataset's own when known (histocam.data.mpp)")
    allow_outside_root: bool = Field(False, description="CSV manifests: read paths outside the "
                                     "CSV's folder (../x.png, absolute paths)")
    color_jitter: bool = True
    stain_augment: float = Field(0.0, ge=0, le=1, description="HED stain augmentation strength")
    stain_normalize: Literal["none", "macenko"] = Field(
        "none", description="macenko: every image's H&E stains mapped to a reference's before "
        "the model sees it (training, evaluation and prediction alike)")
    negative_class: str = Field(
        "auto", description="the class whose images have no foreground (fully negative: every "
        "pixel background); auto: the dataset's own (synthetic-node and CAMELYON16: normal; "
        "others: none); none: no such class")
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig,
                                       description="used by the synthetic-* datasets")

    @property
    def is_synthetic(self) -> bool:
        """True when ``dataset`` is a registered synthetic name (a path never is, even if its
        folder is called ``synthetic-colon``: spell it ``./synthetic-colon``)."""
        return self.dataset in SYNTHETIC_DATASETS

    def changed_keys(self) -> set[str]:
        """Keys set explicitly to something other than their default.

        A key set to its default value changes nothing, so a saved config (which writes every
        key) validates like the file it was made from.
        """
        changed = set()
        for name in self.model_fields_set:
            field = type(self).model_fields[name]
            default = field.get_default(call_default_factory=True)
            value = getattr(self, name)
            if isinstance(value, BaseModel):
                value, default = value.model_dump(), default.model_dump()
            if value != default:
                changed.add(name)
        return changed

    @model_validator(mode="after")
    def _reject_unused_keys(self) -> DataConfig:
        """A key the chosen dataset would not read is an error, never silently ignored.

        Decided from the config alone: the synthetic datasets read only ``data.synthetic`` (and
        the pre-processing sizes); file datasets never read ``data.synthetic``; a CSV manifest
        never reads ``root``. What depends on the files (WSOL split lists fix their splits, GlaS
        fixes its classes) is checked when the dataset is opened (``open_source``).
        """
        changed = self.changed_keys()
        problems = []
        if (self.folds is None) != (self.fold is None):
            problems.append("data.folds and data.fold go together: set both (fold in "
                            "0..folds-1) for cross-validation, or neither")
        elif self.folds is not None and self.fold >= self.folds:
            problems.append(f"data.fold {self.fold} is not one of the {self.folds} folds "
                            f"(0..{self.folds - 1})")
        if self.is_synthetic:
            for key, instead in _SYNTHETIC_INSTEAD.items():
                if key in changed:
                    instead = instead.format(name=self.dataset,
                                             classes=_SYNTHETIC_CLASSES[self.dataset])
                    problems.append(f"data.{key} is not used by the generated dataset "
                                    f"{self.dataset!r}: {instead}")
        else:
            if "synthetic" in changed:
                problems.append(
                    f"data.synthetic is used only by {' and '.join(SYNTHETIC_DATASETS)}, and "
                    f"data.dataset {self.dataset!r} is read from files: remove the data.synthetic "
                    "section")
            if "root" in changed and Path(self.dataset).suffix.lower() == ".csv":
                problems.append("data.root is not used by a CSV manifest: its paths are relative "
                                "to the CSV's folder; remove data.root")
        if "allow_outside_root" in changed and Path(self.dataset).suffix.lower() != ".csv":
            problems.append("data.allow_outside_root is read only for a CSV manifest (the paths "
                            f"of {self.dataset!r} are not checked against a folder): remove it")
        if problems:
            raise ValueError("; ".join(problems))
        return self
