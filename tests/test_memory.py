"""Evaluation batches from a memory budget: the tensor-memory tracker on hand-computed cases, the
batch it fits, and evaluation choosing it (or ``--batch-size``) with the same metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import histocam.runs.evaluation as run_evaluate
from histocam.cli import app
from histocam.core.devices import one_cpu_thread
from histocam.methods.catalog import create_method, method_config
from histocam.runs import Run
from histocam.train import memory
from histocam.train.memory import _PeakTensorBytes, fit_batch, peak_tensor_bytes


def test_tracker_counts_live_storages() -> None:
    with _PeakTensorBytes() as tracker:
        a = torch.ones(1000)  # 4000 bytes
        b = a * 2  # 8000 alive
        view = b[:10]  # a view: no new storage
        del a  # 4000
        c = torch.ones(500, dtype=torch.float64)  # 8000 alive
    assert (tracker.peak, tracker.current) == (8000, 8000)
    del b, view, c
    assert tracker.current == 0


def test_tracker_counts_tensors_saved_for_backward() -> None:
    x = torch.ones(1000, requires_grad=True)  # before the tracker: not counted
    with _PeakTensorBytes() as tracker:
        y = x.exp()  # 4000, saved by exp's backward
        z = y.sum()  # 4
        del y
        assert tracker.current == 4004  # the graph holds y
        (grad,) = torch.autograd.grad(z, x)  # d/dx sum(exp x) = exp x: 4000 more
        del z
    assert tracker.current == 4000 and tracker.peak >= 8004
    assert torch.allclose(grad, torch.exp(torch.ones(1000)))


def _method(map_tta: str = "none"):
    config = method_config({"name": "gradcam", "map_tta": map_tta,
                            "backbone": {"name": "test_resnet", "pretrained": False}})
    return create_method(config, 2)


def test_peak_grows_with_the_image_and_keeps_the_generators() -> None:
    method = _method()
    torch.manual_seed(3)
    state = torch.get_rng_state()
    small = peak_tensor_bytes(method, 32, "cpu")
    large = peak_tensor_bytes(method, 64, "cpu")
    assert torch.equal(torch.get_rng_state(), state) and method.training
    assert 3.5 * small < large < 4.5 * small  # activations scale with the pixels
    forward = peak_tensor_bytes(method, 64, "cpu", localize=False)
    assert forward < large  # no graph kept for a gradient


def test_fit_batch_divides_the_budget() -> None:
    method = _method("d8")
    per_image = peak_tensor_bytes(method, 48, "cpu")
    assert fit_batch(method, 48, "cpu", limit=64, budget=5 * per_image) == 5
    assert fit_batch(method, 48, "cpu", limit=3, budget=5 * per_image) == 3
    assert fit_batch(method, 48, "cpu", limit=64, budget=per_image // 2) == 1
    with pytest.raises(ValueError, match="at least 1"):
        fit_batch(method, 48, "cpu", limit=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("memory")
    args = ["train", f"out_dir={root}", "name=r", "seed=0", "device=cpu", "method.name=cam",
            "method.backbone.name=test_resnet", "data.resize=64", "data.crop=64",
            "data.eval_size=64", "data.synthetic.size=64", "data.synthetic.n_train=4",
            "data.synthetic.n_valcl=4", "data.synthetic.n_test=6",
            "data.synthetic.valpx_per_class=2", "train.epochs=1", "train.batch_size=2",
            "train.num_workers=0", "train.eval_batch_size=64"]
    with one_cpu_thread():
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return root / "r"


def test_evaluate_takes_its_batch_from_the_budget_or_the_option(trained: Path,
                                                                 monkeypatch) -> None:
    seen: list[int] = []
    evaluate_split = run_evaluate.evaluate_split

    def spy(*args, **kwargs):
        seen.append(kwargs["batch_size"])
        return evaluate_split(*args, **kwargs)

    monkeypatch.setattr(run_evaluate, "evaluate_split", spy)
    method, _ = Run(trained).method("best-loc")
    monkeypatch.setattr(memory, "EVAL_MEMORY_BUDGET", 3 * peak_tensor_bytes(method, 64, "cpu"))
    args = ["evaluate", str(trained), "--checkpoint", "best-loc", "--device", "cpu", "--json",
            "--quiet"]
    by_budget = CliRunner().invoke(app, args)
    assert by_budget.exit_code == 0, by_budget.output
    assert seen == [3, 3]  # valpx and test, 3 images a batch
    by_option = CliRunner().invoke(app, [*args, "--batch-size", "1"])
    assert by_option.exit_code == 0, by_option.output
    assert seen[2:] == [1, 1]
    # the same metrics, up to the float rounding of convolutions batched differently
    budget, option = json.loads(by_budget.stdout), json.loads(by_option.stdout)
    assert budget.keys() == option.keys() and budget["data"] == option["data"]
    for key in ("accuracy", "pxap", "TP*", "FN*", "FP*", "TN*"):
        assert budget[key] == pytest.approx(option[key], abs=1e-3), key
