"""The typed results of an evaluation, read and written as JSON and CSV (docs/protocol.md, "Metrics").

``EvaluationResult`` is what ``histocam evaluate`` (``histocam.runs.evaluation.evaluate_run``)
returns and writes (``RunDir.evaluation``): the classification (CL), the
localisation (PxAP and its chance level, the area rates TP*/FN*/FP*/TN* of survey eqs. 21–24,
operating points at 0.5, at τ* chosen on valpx and at the test set's own oracle τ, per-class PxAP,
per-image means) and, when asked, the separability J (PixelCAM App. D). Every reader (trainer,
predictor, experiments, report, benchmarks) reads them by attribute. Its rows per image
(``PerImageRow``) are the per-image CSV beside it.

Keys that are not Python names keep their written spelling as aliases (``TP*``, ``at_0.5``). A
field listed in ``omitted_when_none`` is left out of the file when it is None, so a file says only
what its evaluation measured (no ``tau_star_valpx`` without valpx foreground).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer

from histocam.core.atomic import write_text_atomic


class ResultError(ValueError):
    """A result file that cannot be read as the result it should hold."""


class Result(BaseModel):
    """A frozen result: unknown keys are an error; written with its aliases."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True,
                              validate_by_alias=True, serialize_by_alias=True)
    omitted_when_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler) -> dict[str, Any]:
        data = handler(self)
        for name in self.omitted_when_none:
            if getattr(self, name) is None:
                data.pop(type(self).model_fields[name].alias or name, None)
                data.pop(name, None)
        return data

    def to_json(self) -> str:
        """Indented JSON (NaN written as ``NaN``, as ``json.dumps`` does)."""
        return json.dumps(self.model_dump(), indent=2)

    def write(self, path: str | Path) -> Path:
        """Write ``to_json()`` to ``path`` atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(path, self.to_json())

    @classmethod
    def read(cls, path: str | Path):
        """The result stored at ``path``, or None when there is no such file."""
        path = Path(path)
        if not path.is_file():
            return None
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except (json.JSONDecodeError, ValidationError) as exc:
            first = " ".join(str(exc).split())[:200]
            raise ResultError(f"{path}: not a valid {cls.__name__} ({first}); compute it again "
                              "with this histocam") from None


#: A classifier within this many accuracy points of its chance level is "near chance".
NEAR_CHANCE_POINTS = 10.0

#: How a method's maps are scaled (``WSOLMethod.probability_maps``), as results record it.
MAP_SCALES = {True: "probability", False: "min-max per image"}


class Classification(Result):
    """CL: top-1 accuracy × 100, per class, and the confusion matrix (rows = true class)."""

    accuracy: float
    per_class: list[float]
    confusion_matrix: list[list[int]]
    n_images: int

    @property
    def chance(self) -> float:
        """The CL of always answering the most frequent true class: the chance level of CL on
        these images."""
        rows = [sum(r) for r in self.confusion_matrix]
        return 100.0 * max(rows) / sum(rows) if sum(rows) else float("nan")

    @property
    def near_chance(self) -> bool:
        """Within ``NEAR_CHANCE_POINTS`` of its chance level: its decisions, and the class
        evidence a CAM shows, carry little information."""
        return bool(self.accuracy < self.chance + NEAR_CHANCE_POINTS)


class OperatingPoint(Result):
    """Pixel rates (percent; survey eqs. 17–20) and IoU/Dice at one threshold."""

    TP: float
    FN: float
    FP: float
    TN: float
    miou: float
    iou_fg: float
    iou_bg: float
    dice_fg: float
    dice_bg: float
    threshold: float


class _Note(Result):
    note: str


class OracleOperatingPoint(OperatingPoint, _Note):
    """The operating point at the threshold chosen on the evaluated set itself (an oracle)."""


class PerImageMeans(Result):
    """Means over the images where each per-image score is defined."""

    ap: float
    dice_fg: float
    dice_bg: float
    iou_fg: float
    iou_bg: float


class ClassLocalization(Result):
    """PxAP on one class's images, its chance level, and the per-image means beside it."""

    pxap: float
    chance: float
    n_images: int
    mean_image_ap: float | None
    mean_fg_fraction: float | None


class Localization(Result):
    """The protocol's localisation metrics of one evaluated set (docs/protocol.md, "Metrics")."""

    omitted_when_none = ("tau_star_valpx", "at_tau_star_valpx", "tau_star_source",
                         "per_image_mean_at_tau_star", "per_image_mean_at_half", "per_class",
                         "evaluated_at")

    pxap: float
    chance: float
    n_images: int
    n_fg_pixels: int
    n_bg_pixels: int
    tp_area: float = Field(alias="TP*")
    fn_area: float = Field(alias="FN*")
    fp_area: float = Field(alias="FP*")
    tn_area: float = Field(alias="TN*")
    at_half: OperatingPoint = Field(alias="at_0.5")
    tau_star_valpx: float | None = None
    at_tau_star_valpx: OperatingPoint | None = None
    oracle_test_tau: OracleOperatingPoint
    tau_star_source: str | None = None
    per_image_mean_at_tau_star: PerImageMeans | None = None
    per_image_mean_at_half: PerImageMeans | None = Field(None, alias="per_image_mean_at_0.5")
    per_class: dict[str, ClassLocalization] | None = None
    evaluated_at: str | None = None

    @property
    def area_rates(self) -> dict[str, float]:
        """TP*, FN*, FP*, TN* under their protocol names, in that order."""
        return {"TP*": self.tp_area, "FN*": self.fn_area, "FP*": self.fp_area,
                "TN*": self.tn_area}

    @property
    def per_image_mean(self) -> PerImageMeans | None:
        """The per-image means: at τ* when valpx chose one, else at 0.5."""
        return self.per_image_mean_at_tau_star or self.per_image_mean_at_half


class Histogram(Result):
    counts: list[int]
    edges: list[float]


class Separability(Result):
    """FG/BG separability J of the encoder's pixel features (PixelCAM App. D, eqs. 4–6)."""

    definition: str
    mean: float | None
    per_class: dict[str, float | None]
    n_images: int
    n_skipped_single_class: int
    histogram: Histogram


class ClassMapping(Result):
    """On other data: the run's classes, the data's, and how they are matched."""

    run: list[str]
    data: list[str]
    mapping: str = "by index"


class PairedTest(Result):
    """A paired two-sided Student t-test of b − a (PixelCAM Table 2)."""

    test: str
    t: float
    p: float
    n: int
    mean_difference: float


SCORE_FIELDS = ("ap", "dice_fg", "dice_bg", "iou_fg", "iou_bg", "fg_fraction")


class PerImageRow(Result):
    """One test image: its label, the prediction, and its localisation scores at τ* (None for an
    image without a mask; NaN where a score is undefined, e.g. AP without foreground)."""

    id: str
    label: int
    prediction: int
    confidence: float
    ap: float | None = None
    dice_fg: float | None = None
    dice_bg: float | None = None
    iou_fg: float | None = None
    iou_bg: float | None = None
    fg_fraction: float | None = None

    def score(self, key: str) -> float:
        """The score ``key`` (one of ``SCORE_FIELDS``), NaN when absent."""
        if key not in SCORE_FIELDS:
            raise KeyError(f"{key!r} is not a per-image score ({', '.join(SCORE_FIELDS)})")
        value = getattr(self, key)
        return float("nan") if value is None else value


PER_IMAGE_FIELDS = list(PerImageRow.model_fields)


class EvaluationResult(Result):
    """One checkpoint of one run evaluated on one split."""

    omitted_when_none = ("maps", "class_names", "localization", "separability")

    run: str
    checkpoint: str
    split: str
    method: str
    data: str
    #: how the maps are scaled: ``probability`` or ``min-max per image`` (``MAP_SCALES``)
    maps: str | None = None
    classification: Classification
    class_names: ClassMapping | None = None
    localization: Localization | None = None
    separability: Separability | None = None
    #: one row per image, written as the per-image CSV beside the result (not in its JSON)
    per_image: list[PerImageRow] = Field(default_factory=list, exclude=True)

    @property
    def accuracy(self) -> float:
        return self.classification.accuracy

    @property
    def pxap(self) -> float | None:
        return self.localization.pxap if self.localization is not None else None

    @property
    def tau_star(self) -> float | None:
        """τ* chosen on the run's valpx, or None (no valpx foreground, no localisation)."""
        return self.localization.tau_star_valpx if self.localization is not None else None

    def image_ap(self) -> dict[str, float]:
        """image id -> AP of the images where it is defined (a mask with foreground)."""
        return {r.id: r.ap for r in self.per_image if r.ap is not None and not math.isnan(r.ap)}


def write_per_image(path: str | Path, rows: list[PerImageRow]) -> Path:
    """The per-image CSV: one row per image, empty cells for an image without scores."""
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(PER_IMAGE_FIELDS)
    for row in rows:
        writer.writerow(["" if getattr(row, k) is None else getattr(row, k)
                         for k in PER_IMAGE_FIELDS])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, text.getvalue())


def read_per_image(path: str | Path) -> list[PerImageRow]:
    """The rows of a per-image CSV; [] when there is no such file."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        try:
            return [PerImageRow.model_validate({k: (v if v != "" else None) for k, v in row.items()})
                    for row in csv.DictReader(fh)]
        except ValidationError as exc:
            raise ResultError(f"{path}: not a per-image CSV ({' '.join(str(exc).split())[:200]})"
                              ) from None
