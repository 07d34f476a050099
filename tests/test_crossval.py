"""Patient-disjoint cross-validation: folds, the crossval command, its summary, the traced curves."""

from __future__ import annotations

import csv
import json
import os
import statistics
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_run, write_mask, write_rgb
from typer.testing import CliRunner

from histocam.cli import app
from histocam.core.experiment_results import CrossvalResult
from histocam.core.rundir import RunError
from histocam.data.open import open_source
from histocam.experiments.crossval import crossval_table, fold_tree, run_crossval
from histocam.runs import Run


def _patients_csv(root: Path, n_patients: int = 6, per_patient: int = 2) -> Path:
    """Images 24×24 of ``n_patients`` patients, each patient with both classes; a bright square
    is the foreground."""
    rows = ["image,label,mask,group"]
    k = 0
    for patient in range(n_patients):
        for j in range(per_patient):
            write_rgb(root / f"p{patient}_{j}.png", 24, 24, seed=k)
            mask = np.zeros((24, 24), np.uint8)
            mask[4 + j: 12 + j, 6:16] = 255
            write_mask(root / f"p{patient}_{j}_mask.png", mask)
            rows.append(f"p{patient}_{j}.png,{(patient + j) % 2},p{patient}_{j}_mask.png,"
                        f"patient{patient}")
            k += 1
    (root / "set.csv").write_text("\n".join(rows) + "\n")
    (root / "classes.txt").write_text("benign\nmalignant\n")
    return root / "set.csv"


def _tree(csv_path: Path, out: Path, **train) -> dict:
    tree = tiny_run(out, name="cv", deterministic=True, train={"lr": 0.05, **train})
    tree["data"] = {"dataset": str(csv_path), "resize": 36, "crop": 32, "eval_size": 32,
                    "valpx_per_class": 1, "valcl_fraction": 0.25}
    return tree


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> tuple[dict, dict, list[str]]:
    """(config, summary, progress lines) of a finished 2-fold cross-validation, seed 0."""
    tmp = tmp_path_factory.mktemp("crossval")
    tree = _tree(_patients_csv(tmp / "data"), tmp / "runs")
    lines: list[str] = []
    return tree, run_crossval(tree, folds=2, seeds=[0], say=lines.append), lines


@pytest.mark.slow
def test_crossval_trains_every_fold_and_reuses_finished_runs(done) -> None:
    tree, summary, lines = done
    assert [(r.fold, r.seed) for r in summary.runs] == [(0, 0), (1, 0)]
    assert lines[0].startswith("[1/2] fold 0, seed 0")
    root = Path(tree["out_dir"]) / "cv"
    tested = []
    for fold in range(2):
        run = Run(root / f"fold{fold}-s0")
        assert (run.config.data.folds, run.config.data.fold) == (2, fold)
        source = open_source(run.config.data)
        groups = {s: {r.group for r in source.splits[s]} for s in ("train", "valcl", "test")}
        assert not groups["test"] & (groups["train"] | groups["valcl"])
        assert not groups["train"] & groups["valcl"]
        tested += source.dataset("test").ids
        # each checkpoint's summary is the run's own metrics file
        stored = json.loads((run.dir.root / "metrics" / "best-loc-test.json").read_text())
        assert summary.runs[fold].model["best-loc"].pxap == stored["localization"]["pxap"]
        assert set(summary.floors[fold].model_dump()) == {"chance", "darkness"}
        assert summary.floors[fold].chance == pytest.approx(stored["localization"]["chance"])
    assert sorted(tested) == sorted(f"p{p}_{j}.png" for p in range(6) for j in range(2))
    stamps = {p: p.stat().st_mtime_ns for p in root.glob("fold*-s0/*/*.*")}
    again = run_crossval(tree, folds=2, seeds=[0], say=lambda _: None)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing trained or evaluated
    assert again.runs == summary.runs
    written = json.loads((root / "crossval.json").read_text())
    assert written == json.loads(summary.to_json()) and list(written) == [
        "config", "folds", "seeds", "pipeline", "floors", "runs"]
    assert list(written["runs"][0]["model"]["best-loc"]) == [
        "pxap", "chance", "accuracy", "per_class", "per_image_ap"]
    table = (root / "crossval.md").read_text()
    assert "colour floor" in table and "chance" in table


@pytest.mark.slow
def test_crossval_refuses_a_run_trained_with_other_settings(done) -> None:
    tree = json.loads(json.dumps(done[0]))
    tree["train"]["lr"] = 0.01
    with pytest.raises(ValueError, match="trained with another configuration"):
        run_crossval(tree, folds=2, seeds=[0], say=lambda _: None)


@pytest.mark.slow
def test_cli_crossval_prints_the_table(done, tmp_path: Path) -> None:
    import yaml

    config = tmp_path / "cv.yaml"
    config.write_text(yaml.safe_dump(done[0]))
    result = CliRunner().invoke(app, ["crossval", "-c", str(config), "--seeds", "0", "--folds",
                                      "2", "train.epochs=1"])  # finished: reused
    assert result.exit_code == 0, result.output
    assert "| model | B-LOC |" in result.output and "crossval.json" in result.output
    bad = CliRunner().invoke(app, ["crossval", "-c", str(config), "--seeds", "a,b"])
    assert bad.exit_code == 2 and "error: --seeds 'a,b'" in bad.output


def _summary(pxaps: dict[tuple[int, int], float], pipeline: bool = False) -> CrossvalResult:
    runs = []
    for (fold, seed), value in pxaps.items():
        result = {"pxap": value, "chance": 50.0, "accuracy": 80.0 + fold,
                  "per_class": {"a": {"pxap": value, "chance": 40.0, "mean_image_ap": value - 1,
                                      "mean_fg_fraction": 40.0}},
                  "per_image_ap": {f"f{fold}-{i}": value + i for i in range(3)}}
        entry = {"fold": fold, "seed": seed}
        if pipeline:
            better = {**result, "pxap": value + 2,
                      "per_image_ap": {k: v + 1 + 0.1 * i for i, (k, v)
                                       in enumerate(result["per_image_ap"].items())}}
            entry |= {"teacher": {"best-loc": result, "best-cl": result},
                      "student": {"best-loc": better, "best-cl": better},
                      "methods": {"teacher": "cam", "student": "pixelcam"}}
        else:
            entry["model"] = {"best-loc": result, "best-cl": result}
        runs.append(entry)
    seeds = sorted({s for _, s in pxaps})
    return CrossvalResult.model_validate({
        "config": {}, "folds": 2, "seeds": seeds, "pipeline": pipeline, "runs": runs,
        "floors": {"0": {"chance": 50.0, "darkness": 60.0},
                   "1": {"chance": 52.0, "darkness": 64.0}}})


def test_the_table_is_the_mean_over_seeds_per_fold_then_over_folds() -> None:
    # fold 0: seeds 60, 62 -> 61; fold 1: 70, 74 -> 72. Over folds 66.5 ± 7.8; over runs the
    # four values: 66.5 ± 6.4
    table = crossval_table(_summary({(0, 0): 60, (0, 1): 62, (1, 0): 70, (1, 1): 74}))
    row = next(line for line in table.splitlines() if line.startswith("| model | B-LOC"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    over_folds = f"{statistics.mean([61, 72]):.1f} ± {statistics.stdev([61, 72]):.1f}"
    over_runs = f"{statistics.mean([60, 62, 70, 74]):.1f} ± {statistics.stdev([60, 62, 70, 74]):.1f}"
    assert cells[2:] == [over_folds, "61.0, 72.0", f"{over_runs} (4)", "51.0", "62.0",
                         "80.5 ± 0.7"]


def test_pipeline_table_pairs_every_image_of_a_seed() -> None:
    table = crossval_table(_summary({(0, 0): 60, (1, 0): 70}, pipeline=True))
    row = next(line for line in table.splitlines() if line.startswith("| 0 |"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    # per-image differences 1.0, 1.1, 1.2 in each fold: mean 1.10 over n = 6 images
    assert cells[1] == "+2.0, +2.0" and cells[2] == "+1.10" and cells[-1] == "6"


def test_fold_tree_names_each_run_and_its_teacher() -> None:
    tree = {"name": "pix", "out_dir": "runs/cv", "data": {"dataset": "x.csv"}, "student": {}}
    one = fold_tree(tree, 2, 3, 1, Path("runs/cv/cam"))
    assert one["name"] == "fold2-s1" and one["out_dir"] == "runs/cv/pix" and one["seed"] == 1
    assert one["data"] == {"dataset": "x.csv", "folds": 3, "fold": 2}
    assert one["teacher_run"] == "runs/cv/cam/fold2-s1"
    student = "runs/cv/pix/fold{fold}-s{seed}/pixelcam-cam"  # a next round's teacher
    assert fold_tree(tree, 0, 3, 2, student)["teacher_run"] == "runs/cv/pix/fold0-s2/pixelcam-cam"
    assert tree["data"] == {"dataset": "x.csv"}  # the base config is left as it was


@pytest.mark.slow
def test_traced_curves_are_logged_and_never_select(tmp_path: Path) -> None:
    import torch

    from histocam.train import RunConfig, Trainer

    tree = fold_tree(_tree(_patients_csv(tmp_path / "data"), tmp_path / "runs", epochs=2,
                           log_valcl_pxap=True, trace_test_pxap=True), 0, 2, 0, None)
    config = RunConfig.model_validate(tree)
    Trainer(config).fit()
    with (config.run_dir.root / "log.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert all(r["valcl_pxap"] and r["test_pxap_trace"] for r in rows)
    last = Run(config.run_dir).evaluate("last", "test")
    assert float(rows[-1]["test_pxap_trace"]) == pytest.approx(last.localization.pxap, abs=1e-4)
    plain = RunConfig.model_validate({**tree, "name": "plain", "train": {
        **tree["train"], "log_valcl_pxap": False, "trace_test_pxap": False}})
    Trainer(plain).fit()
    for ckpt in ("best-loc", "best-cl", "last"):  # the same weights with or without the traces
        traced, untraced = Run(config.run_dir).state(ckpt), Run(plain.run_dir).state(ckpt)
        assert traced["epoch"] == untraced["epoch"]
        assert traced["model"].keys() == untraced["model"].keys()
        assert all(torch.equal(traced["model"][k], untraced["model"][k]) for k in traced["model"])
    # so a finished traced run is the run of the untraced config too: reused, not retrained
    done = config.run_dir.epochs_done()
    again = RunConfig.model_validate({**tree, "train": {**tree["train"], "trace_test_pxap": False}})
    assert Run.train(again).dir.root == config.run_dir.root
    assert config.run_dir.epochs_done() == done


def test_the_darkness_floor_by_hand_and_per_image() -> None:
    from histocam.data.config import DataConfig
    from histocam.data.sample import Sample
    from histocam.maps.colour import colour_map_pxap
    from histocam.metrics.per_image import PerImageScores

    mask = np.zeros((8, 8), bool)
    mask[:, :4] = True
    dark_glands = np.full((8, 8, 3), 220, np.uint8)
    dark_glands[mask] = 40  # foreground darker than its background: the darkness map is perfect
    pale_glands = 255 - dark_glands  # foreground paler: the darkness map ranks it last
    samples = [Sample(dark_glands, 1, mask, "dark"), Sample(pale_glands, 1, mask, "pale"),
               Sample(dark_glands, 0, None, "no-mask")]
    data = DataConfig.model_validate({"eval_size": 8, "resize": 8, "crop": 8})
    rows = {"darkness": PerImageScores()}
    found = colour_map_pxap(samples, data, per_image=rows)
    ap = {r["id"]: r["ap"] for r in rows["darkness"].rows}
    assert ap == {"dark": pytest.approx(100.0), "pale": pytest.approx(50.0)}  # AP of a worst
    # ranking is the foreground fraction; over both images each score holds half of each class
    assert found == {"chance": pytest.approx(50.0), "darkness": pytest.approx(50.0)}
    alone = colour_map_pxap(samples[:1], data)
    assert alone["darkness"] == pytest.approx(100.0) and alone["chance"] == pytest.approx(50.0)


def test_a_finished_pipeline_is_reused_across_settings_that_keep_its_weights() -> None:
    from histocam.experiments.pipeline import PipelineConfig

    saved = PipelineConfig.model_validate({"teacher_run": "runs/cam", "student": {
        "train": {"trace_test_pxap": True, "log_valcl_pxap": True}}})

    def changed(**student_train) -> list[str]:
        return PipelineConfig.model_validate({"teacher_run": "runs/cam", "device": "cpu",
                                              "student": {"train": student_train}}
                                             ).changes_from(saved)

    assert changed() == []  # without the traces, on another device: the same runs
    assert changed(eval_batch_size=8, num_workers=0) == []
    assert changed(lr=0.5, epochs=3) == ["student.train.epochs: 20 -> 3",
                                         "student.train.lr: 0.01 -> 0.5"]


def test_the_mean_map_rows_by_hand() -> None:
    summary = _summary({(0, 0): 60, (0, 1): 62, (1, 0): 70, (1, 1): 74})
    # each fold's mean map: PxAP 65 and 75, its per-image AP 2.0 to 2.5 above seed 0's (mean
    # 2.25); seed 1's are 2 and 4 above seed 0's in folds 0 and 1, so the mean map is 0.75 below
    seed0 = {i: v for r in summary.runs if r.seed == 0
             for i, v in r.model["best-loc"].per_image_ap.items()}
    seed1 = {i: v for r in summary.runs if r.seed == 1
             for i, v in r.model["best-loc"].per_image_ap.items()}
    maps = []
    for fold, pxap in ((0, 65.0), (1, 75.0)):
        mine = {i: v + 2 + 0.1 * k for k, (i, v) in enumerate(seed0.items()) if i.startswith(
            f"f{fold}")}
        maps.append({"fold": fold, "role": "model", "result": {
            "pxap": pxap, "chance": 50.0, "accuracy": 90.0, "per_class": {},
            "per_image_ap": mine}})
    summary = CrossvalResult.model_validate({**json.loads(summary.to_json()), "mean_maps": maps})
    row = next(line for line in crossval_table(summary).splitlines()
               if line.startswith("| model | 70.0"))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    d0 = [maps[f]["result"]["per_image_ap"][i] - seed0[i] for f in (0, 1)
          for i in maps[f]["result"]["per_image_ap"]]
    d1 = [maps[f]["result"]["per_image_ap"][i] - seed1[i] for f in (0, 1)
          for i in maps[f]["result"]["per_image_ap"]]
    assert cells[1:7] == ["70.0 ± 7.1", "65.0, 75.0", "51.0", "62.0", "+8.0", "90.0 ± 0.0"]
    assert cells[7].startswith(f"{np.mean(d0):+.1f}, ") and cells[7].endswith(" (6)")
    assert f"; {np.mean(d1):+.1f}, " in cells[7] and np.mean(d1) == pytest.approx(-0.75)


def test_the_mean_maps_of_student_and_teacher_are_paired() -> None:
    summary = _summary({(0, 0): 60, (0, 1): 62, (1, 0): 70, (1, 1): 74}, pipeline=True)
    maps = []
    for fold in (0, 1):
        for role, shift in (("teacher", 0.0), ("student", 3.0)):
            ap = {f"f{fold}-{i}": 60.0 + 10 * fold + i + shift + (0.5 * i if shift else 0)
                  for i in range(3)}
            maps.append({"fold": fold, "role": role, "result": {
                "pxap": 65.0 + shift, "chance": 50.0, "accuracy": 90.0, "per_class": {},
                "per_image_ap": ap}})
    summary = CrossvalResult.model_validate({**json.loads(summary.to_json()), "mean_maps": maps})
    table = crossval_table(summary)
    assert "| cam | 65.0 ± 0.0 |" in table and "| pixelcam | 68.0 ± 0.0 |" in table
    # student − teacher per image: 3, 3.5, 4 in each fold, mean 3.5 over n = 6
    line = next(x for x in table.splitlines() if x.startswith("Student − teacher, mean maps"))
    from scipy.stats import ttest_rel

    teacher = [60 + 10 * f + i for f in (0, 1) for i in range(3)]
    student = [t + 3 + 0.5 * i for t, i in zip(teacher, [0, 1, 2] * 2)]
    assert line.endswith(f"+3.5, {ttest_rel(student, teacher).pvalue:.2g} (6).")


@pytest.mark.slow
def test_crossval_evaluates_each_folds_mean_map_once(tmp_path: Path) -> None:
    from histocam.core.studydirs import CrossvalDir, EnsembleDir

    tree = _tree(_patients_csv(tmp_path / "data"), tmp_path / "runs")
    with pytest.raises(ValueError, match="two or more seeds"):
        run_crossval(tree, folds=2, seeds=[0], mean_map=True, say=lambda _: None)
    summary = run_crossval(tree, folds=2, seeds=[0, 1], mean_map=True, say=lambda _: None)
    folder = CrossvalDir(tmp_path / "runs" / "cv")
    assert [(m.fold, m.role) for m in summary.mean_maps] == [(0, "model"), (1, "model")]
    for m in summary.mean_maps:
        ensemble = EnsembleDir(folder.mean_map(m.fold, [0, 1], "model"))
        assert ensemble.read_members() == [str(folder.fold(m.fold, s).resolve()) for s in (0, 1)]
        stored = ensemble.read_evaluation("best-loc")
        assert m.result.pxap == stored.pxap and m.result.per_image_ap == stored.image_ap()
        assert set(m.result.per_image_ap) == set(summary.runs[2 * m.fold].model[
            "best-loc"].per_image_ap)
    stamps = {p: p.stat().st_mtime_ns for p in folder.root.glob("mean-map-fold*/model/*/*")}
    assert len(stamps) == 2 * 4  # per fold: the result, its rows and curves (CSV, PNG)
    again = run_crossval(tree, folds=2, seeds=[0, 1], mean_map=True, say=lambda _: None)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps and again.mean_maps == \
        summary.mean_maps
    assert "Mean map of each fold's 2 seeds' runs" in folder.summary_md.read_text()
    # one seed retrained: its fold's mean map is evaluated again, the other fold's reused
    fold0 = EnsembleDir(folder.mean_map(0, [0, 1], "model")).evaluation("best-loc").json
    fold1 = EnsembleDir(folder.mean_map(1, [0, 1], "model")).evaluation("best-loc").json
    weights = Run(folder.fold(0, 1)).checkpoint_path("best-loc")
    os.utime(weights, ns=(fold0.stat().st_mtime_ns + 10**9,) * 2)
    before = fold1.stat().st_mtime_ns
    run_crossval(tree, folds=2, seeds=[0, 1], mean_map=True, say=lambda _: None)
    assert fold0.stat().st_mtime_ns > weights.stat().st_mtime_ns - 10**9
    assert fold0.stat().st_mtime_ns != stamps[fold0] and fold1.stat().st_mtime_ns == before


def test_a_teacher_shared_by_every_seed_has_no_mean_map(tmp_path: Path) -> None:
    from histocam.core.experiment_results import FoldRun
    from histocam.core.studydirs import CrossvalDir
    from histocam.experiments.crossval import mean_maps

    runs = [FoldRun(fold=0, seed=s, dirs={"teacher": str(tmp_path / "t"),
                                           "student": str(tmp_path / f"s{s}")}) for s in (0, 1)]
    said: list[str] = []
    with pytest.raises(RunError):  # the students are no runs here: the teacher was skipped first
        mean_maps(runs, 1, [0, 1], ["teacher", "student"], CrossvalDir(tmp_path), said.append)
    assert said == ["no mean map of the teacher: a fold's seeds share one teacher run"]
