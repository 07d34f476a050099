"""``histocam ensemble``: the mean map of several runs, by hand, against one run, against the runs'
own saved maps, and the runs and folders it refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_run
from torch import nn
from typer.testing import CliRunner

from histocam.cli import app
from histocam.core.rundir import RunError
from histocam.core.studydirs import EnsembleDir
from histocam.runs import Run
from histocam.runs.ensemble import MeanOfMethods, evaluate_ensemble
from histocam.train import RunConfig


class FixedMaps(nn.Module):
    """A method whose logits and maps are given."""

    def __init__(self, logits: torch.Tensor, maps: torch.Tensor, probability: bool) -> None:
        super().__init__()
        self.logits, self.maps, self.probability_maps = logits, maps, probability

    def localize_with_logits(self, images, classes, upsample=True):
        return self.logits, self.maps


def test_the_mean_map_and_the_mean_probabilities_by_hand() -> None:
    a = torch.tensor([[[0.0, 1.0], [0.5, 0.5]]])
    b = torch.tensor([[[0.0, 0.5], [1.0, 0.0]]])
    la, lb = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, float(np.log(3.0))]])
    images, classes = torch.zeros(1, 3, 2, 2), torch.zeros(1, dtype=torch.long)
    logits, maps = MeanOfMethods([FixedMaps(la, a, True), FixedMaps(lb, b, True)]) \
        .localize_with_logits(images, classes)
    # probabilities (1/2, 1/2) and (1/4, 3/4): their mean (3/8, 5/8)
    assert torch.allclose(logits.softmax(1), torch.tensor([[0.375, 0.625]]))
    assert torch.allclose(maps, torch.tensor([[[0.0, 0.75], [0.75, 0.25]]]))
    # min–max maps: the mean (0, 0.75, 0.75, 0.25) normalised again to (0, 1, 1, 1/3)
    _, maps = MeanOfMethods([FixedMaps(la, a, False), FixedMaps(lb, b, False)]) \
        .localize_with_logits(images, classes)
    assert torch.allclose(maps, torch.tensor([[[0.0, 1.0], [1.0, 1 / 3]]]))


def test_maps_on_two_grids_are_averaged_on_the_finer_one() -> None:
    coarse = torch.tensor([[[1.0]]])  # 1×1: 1 everywhere once resized
    fine = torch.tensor([[[0.0, 0.2], [0.4, 0.6]]])
    logits = torch.zeros(1, 2)
    _, maps = MeanOfMethods([FixedMaps(logits, coarse, True), FixedMaps(logits, fine, True)]) \
        .localize_with_logits(torch.zeros(1, 3, 2, 2), torch.zeros(1, dtype=torch.long), False)
    assert torch.allclose(maps, torch.tensor([[[0.5, 0.6], [0.7, 0.8]]]))


def test_probability_and_minmax_maps_are_not_averaged() -> None:
    logits, m = torch.zeros(1, 2), torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="one kind"):
        MeanOfMethods([FixedMaps(logits, m, True), FixedMaps(logits, m, False)])


def trained(root: Path, name: str, seed: int, **changes) -> Run:
    return Run.train(RunConfig.model_validate(tiny_run(root, name=name, seed=seed, **changes)))


def test_an_ensemble_of_one_runs_copies_scores_as_the_run(tmp_path: Path) -> None:
    run = trained(tmp_path, "a", 0)
    shutil.copytree(run.dir.root, tmp_path / "copy")
    alone = run.evaluate("best-loc", device="cpu")
    both = evaluate_ensemble([run, Run(tmp_path / "copy")], "best-loc", "test", tmp_path / "ens",
                             device="cpu")
    assert both.pxap == pytest.approx(alone.pxap, abs=1e-6)
    assert both.tau_star == pytest.approx(alone.tau_star)
    assert both.accuracy == alone.accuracy
    assert both.image_ap() == pytest.approx(alone.image_ap(), abs=1e-6)
    assert [r.confidence for r in both.per_image] == pytest.approx(
        [r.confidence for r in alone.per_image], abs=1e-6)
    assert EnsembleDir(tmp_path / "ens").read_evaluation("best-loc").pxap == both.pxap


def test_the_mean_map_is_the_mean_of_the_runs_saved_maps(tmp_path: Path) -> None:
    runs = [trained(tmp_path, f"s{seed}", seed) for seed in (0, 1, 2)]
    members = [r.evaluate("best-loc", device="cpu", save_maps=True) for r in runs]
    result = evaluate_ensemble(runs, "best-loc", "test", tmp_path / "ens", device="cpu",
                               save_maps=True)
    saved = [np.load(r.dir.evaluation("best-loc").maps) for r in runs]
    ours = np.load(EnsembleDir(tmp_path / "ens").evaluation("best-loc").maps)
    assert sorted(ours.files) == sorted(saved[0].files)
    for image_id in ours.files:
        mean = sum(s[image_id].astype(np.float64) for s in saved) / len(saved)
        low, high = mean.min(), mean.max()
        expected = (mean - low) / (high - low) if high > low else np.zeros_like(mean)
        np.testing.assert_allclose(ours[image_id].astype(np.float64), expected, atol=3e-3)
    # the class probabilities: the mean of the runs' (each row's confidence is its prediction's)
    for k, row in enumerate(result.per_image):
        probs = []
        for member in members:
            other = member.per_image[k]
            assert other.id == row.id
            probs.append(other.confidence if other.prediction == row.prediction
                         else 1 - other.confidence)  # two classes
        assert row.confidence == pytest.approx(np.mean(probs), abs=1e-5)
    assert result.method == "mean of 3: cam"


def test_runs_on_other_data_or_given_once_are_refused(tmp_path: Path) -> None:
    a, b = trained(tmp_path, "a", 0), trained(tmp_path, "b", 1, data={"eval_size": 48})
    with pytest.raises(RunError, match=r"data.eval_size is 48, .* has 64"):
        evaluate_ensemble([a, b], "best-loc", "test", tmp_path / "ens", device="cpu")
    with pytest.raises(RunError, match="two or more"):
        evaluate_ensemble([a], "best-loc", "test", tmp_path / "ens", device="cpu")
    with pytest.raises(RunError, match="given twice"):
        evaluate_ensemble([a, Run(tmp_path / "a")], "best-loc", "test", tmp_path / "ens",
                          device="cpu")
    assert not (tmp_path / "ens").exists()


def test_a_folder_is_one_ensembles_and_nothing_else_is_written_over(tmp_path: Path) -> None:
    a, b, c = (trained(tmp_path, name, seed) for seed, name in enumerate("abc"))
    evaluate_ensemble([a, b], "best-loc", "test", tmp_path / "ens", device="cpu")
    before = (tmp_path / "ens" / "members.json").read_text()
    # the same runs in another order: the same ensemble, evaluated again
    evaluate_ensemble([b, a], "last", "test", tmp_path / "ens", device="cpu")
    with pytest.raises(RunError, match="holds the ensemble of other runs"):
        evaluate_ensemble([a, c], "best-loc", "test", tmp_path / "ens", device="cpu")
    assert (tmp_path / "ens" / "members.json").read_text() == before
    with pytest.raises(RunError, match="not an ensemble's folder"):
        evaluate_ensemble([a, b], "best-loc", "test", a.dir.root, device="cpu")
    assert sorted(p.name for p in (tmp_path / "ens" / "metrics").glob("*.json")) == [
        "best-loc-test.json", "last-test.json"]


def test_the_command_prints_the_table_and_one_line_errors(tmp_path: Path) -> None:
    trained(tmp_path, "a", 0)
    trained(tmp_path, "b", 1)
    runner = CliRunner()
    done = runner.invoke(app, ["ensemble", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                               str(tmp_path / "ens"), "--device", "cpu", "-q"])
    assert done.exit_code == 0, done.output
    assert "B-LOC" in done.output and "the mean map of 2 runs" in done.output
    assert str(tmp_path / "ens" / "metrics" / "best-loc-test.json") in done.output
    header = next(line for line in done.output.splitlines() if "selection" in line).split()
    assert header[-1] == "@τ*"  # no separability column: an ensemble has no features
    lines = runner.invoke(app, ["ensemble", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                                str(tmp_path / "ens"), "--device", "cpu", "-q", "--json",
                                "--checkpoint", "both"]).output.splitlines()
    stored = EnsembleDir(tmp_path / "ens").read_evaluation("best-cl")
    assert [json.loads(line)["checkpoint"] for line in lines] == ["best-loc", "best-cl"]
    assert json.loads(lines[1])["pxap"] == pytest.approx(stored.pxap)
    bad = runner.invoke(app, ["ensemble", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                              str(tmp_path / "e3"), "--checkpoint", "best", "-q"])
    assert bad.exit_code == 2 and "checkpoint must be one of" in bad.output
    assert not (tmp_path / "e3").exists()
    refused = runner.invoke(app, ["ensemble", str(tmp_path / "a"), "--out", str(tmp_path / "e2"),
                                  "-q"])
    assert refused.exit_code == 2
    assert refused.output.strip().splitlines()[-1] == "error: an ensemble needs two or more runs"
