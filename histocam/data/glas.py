"""GlaS official release layout (Sirinukunwattana et al., MedIA 2017).

``Warwick QU Dataset (Released 2016_07_08)/`` holds ``train_*.bmp``, ``testA_*.bmp``,
``testB_*.bmp``, their ``*_anno.bmp`` instance masks (any label > 0 = gland = foreground, in both
classes) and ``Grade.csv`` (lines end in CR only; column 3 is the GlaS grade, benign/malignant).
Encoding benign 0 / malignant 1 (docs/protocol.md, "Data and splits"). Train images are split into
train/valcl by seed with valpx = 3 per class from valcl; testA + testB form the test split.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from histocam.data.dataset import Layout, Record, layout_from_pool
from histocam.data.errors import DataError

GLAS_CLASSES = ["benign", "malignant"]
RELEASE_FOLDER = "Warwick QU Dataset (Released 2016_07_08)"


def find_release(root: str | Path) -> Path:
    """The folder holding ``Grade.csv``: ``root`` itself or its release sub-folder."""
    root = Path(root)
    if (root / "Grade.csv").is_file():
        return root
    for child in sorted(root.iterdir()) if root.is_dir() else []:
        if child.is_dir() and child.name.replace("_", " ").lower().startswith("warwick qu dataset"):
            if (child / "Grade.csv").is_file():
                return child
    raise DataError(root, f"not a GlaS release: no Grade.csv here or in {RELEASE_FOLDER!r}/")


def read_grades(grade_csv: Path) -> dict[str, tuple[int, str]]:
    """Parse ``Grade.csv`` (CR, LF or CRLF line endings) into {image name: (class index, patient
    ID)}."""
    text = grade_csv.read_bytes().decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text.replace("\r\n", "\n").replace("\r", "\n"))))
    if not rows or rows[0][0].strip().lower() != "name":
        raise DataError(grade_csv, "expected a header row starting with 'name'")
    grades: dict[str, tuple[int, str]] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        if len(row) < 3:
            raise DataError(grade_csv, f"line {line_no}: expected name, patient ID, grade")
        grade = row[2].strip().lower()
        if grade not in GLAS_CLASSES:
            raise DataError(grade_csv, f"line {line_no}: unknown grade {row[2].strip()!r} "
                            f"(expected one of {GLAS_CLASSES})")
        grades[row[0].strip()] = GLAS_CLASSES.index(grade), row[1].strip()
    return grades


def read_glas(
    root: str | Path,
    *,
    seed: int = 0,
    valcl_fraction: float = 18 / 85,
    test_fraction: float = 0.2,
    valpx_per_class: int = 3,
    folds: int | None = None,
    fold: int | None = None,
) -> Layout:
    """Read the official GlaS layout. ``test_fraction`` applies only if no test images exist.

    With ``folds`` the train images are cut into patient-disjoint cross-validation folds
    (``layout_from_pool``): the patient of each image is Grade.csv's second column."""
    release = find_release(root)
    grade_csv = release / "Grade.csv"
    grades = read_grades(grade_csv)
    pool: list[Record] = []
    test: list[Record] = []
    for name, (label, patient) in sorted(grades.items()):
        image = release / f"{name}.bmp"
        if not image.exists():
            continue  # Grade.csv lists all 165 images; partial copies are common
        rec = Record(name, image, label, release / f"{name}_anno.bmp", True, source=str(grade_csv),
                     group=f"patient {patient}")
        (test if name.startswith("test") else pool).append(rec)
    if not pool:
        raise DataError(release, "no train_*.bmp image listed in Grade.csv exists in this folder")
    notes = [f"{len(pool) + len(test)} of {len(grades)} images listed in Grade.csv are present"]
    layout = layout_from_pool(
        "glas", GLAS_CLASSES, pool, test, seed=seed, valcl_fraction=valcl_fraction,
        test_fraction=test_fraction, valpx_per_class=valpx_per_class, notes=notes,
        folds=folds, fold=fold,
    )
    layout.unused["classes"] = (f"GlaS's encoding is fixed by Grade.csv: "
                                f"{', '.join(f'{n} {i}' for i, n in enumerate(GLAS_CLASSES))}")
    return layout
