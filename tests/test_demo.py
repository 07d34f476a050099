"""What ``histocam demo`` and ``histocam pipeline`` tell a reader: the two demo variants, the
comparison table's near-chance warnings, and the lines under the table (student − teacher)."""

from __future__ import annotations

from pathlib import Path

from histocam.core.experiment_results import PipelineComparison
from histocam.core.results import Classification
from histocam.core.studydirs import PipelineDir
from histocam.experiments.demo import demo_config, what_it_shows
from histocam.experiments.pipeline import comparison_table


def summary(accuracy: float, pxap: float, accuracy_chance: float | None = 50.0) -> dict:
    return {"pxap": pxap, "chance": 20.0, "accuracy": accuracy, "accuracy_chance": accuracy_chance,
            "TP*": 1.0, "FN*": 2.0, "FP*": 3.0, "TN*": 4.0, "separability": 0.5,
            "per_image_ap": {}}


def comparison(teacher_loc_cl: float, p: float = 0.01) -> PipelineComparison:
    cost = {"forward_ms": 1.0, "forward_and_map_ms": 2.0, "ratio": 2.0}
    return PipelineComparison.model_validate({
        "teacher": {"best-loc": summary(teacher_loc_cl, 30.0), "best-cl": summary(90.0, 28.0),
                    "cost": cost, "run": "runs/p/teacher-cam"},
        "student": {"best-loc": summary(88.0, 45.5), "best-cl": summary(89.0, 44.0),
                    "cost": cost, "run": "runs/p/pixelcam-cam"},
        "teacher_method": "cam", "student_method": "pixelcam",
        "paired_ttest_pxap_b_loc": {"test": "ttest_rel", "t": 3.1, "p": p, "n": 12,
                                    "mean_difference": 6.76}})


def test_the_quick_demo_is_smaller_than_the_default(tmp_path: Path) -> None:
    default, quick = demo_config(tmp_path), demo_config(tmp_path, quick=True)
    assert (default.name, quick.name) == ("demo", "demo-quick")  # two folders side by side
    assert default.data.synthetic.n_train == 240 and quick.data.synthetic.n_train == 120
    assert (quick.data.synthetic.size, quick.data.crop, quick.data.eval_size) == (160, 140, 140)
    assert (default.data.synthetic.size, default.data.crop) == (192, 168)
    assert default.teacher.train.epochs == 10 and quick.teacher.train.epochs == 6
    assert quick.student.train.epochs == 6 and quick.data.synthetic.n_test == 60
    # the teacher's encoder and head at one rate: a B-LOC epoch whose classifier is not at chance
    assert default.teacher.train.head_lr_multiplier == 1.0
    given = demo_config(tmp_path, quick=True, n_train=50, epochs=2)
    assert given.data.synthetic.n_train == 50 and given.teacher.train.epochs == 2


def test_a_teacher_near_chance_is_flagged_as_a_poor_source_of_seeds() -> None:
    text = comparison_table(comparison(teacher_loc_cl=52.5))
    row = next(line for line in text.splitlines() if line.startswith("| cam | B-LOC"))
    assert row.split(" | ")[4] == "52.5 ⚠"  # CL, marked
    assert ("warning: the teacher's B-LOC checkpoint classifies near chance (CL 52.5 on test; "
            "always answering the most frequent class gives 50.0): its maps are a poor source of "
            "seeds for PixelCAM") in text
    assert text.count("warning:") == 1  # B-CL (90 %) and the student classify
    quiet = comparison_table(comparison(teacher_loc_cl=60.0))  # 10 points above chance
    assert "warning" not in quiet and "⚠" not in quiet


def test_the_lines_under_the_table_say_student_minus_teacher(tmp_path: Path) -> None:
    folder = PipelineDir(tmp_path / "demo")
    lines = what_it_shows(comparison(teacher_loc_cl=80.0), folder)
    assert len(lines) == 3
    assert "classifies 80.0% of the test tiles" in lines[0] and "PxAP 30.0" in lines[0]
    assert "scores 20.0 (chance)" in lines[0]
    assert "PxAP 45.5 at B-LOC, 15.5 above its teacher" in lines[1]
    assert "student − teacher AP +6.8 (paired t-test p = 0.01, n = 12)" in lines[1]
    assert "not significant" not in lines[1]
    assert "min–max normalised per image" in lines[2]
    lines = what_it_shows(comparison(teacher_loc_cl=80.0, p=0.3), folder)
    assert "not significant tile by tile" in lines[1]


def test_cl_chance_is_the_majority_class_share() -> None:
    cl = Classification(accuracy=65.0, per_class=[75.0, 66.7], confusion_matrix=[[3, 1], [2, 4]],
                        n_images=10)
    assert cl.chance == 60.0  # 6 of the 10 images are of class 1
    assert cl.near_chance  # 65 < 60 + 10
    assert not cl.model_copy(update={"accuracy": 70.0}).near_chance
