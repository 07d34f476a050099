"""Distributed training under torchrun equals one process with the same global batch.

``torchrun --standalone --nproc_per_node 2 -m histocam train`` (gloo, CPU) against ``Trainer`` in
this process, same config (global batch 4: 2 per rank). The backbone has BatchNorm, synchronised
over the ranks (``GlobalBatchNorm2d``), so the two runs compute the same function up to float
summation order; tolerances: weights and BatchNorm running statistics within 1e-5 (absolute) after
2 epochs, training loss within 1e-4 (relative), valcl accuracy, B-LOC/B-CL epochs and selections
identical, valpx PxAP within 1e-3 points. A learning rate where training is stable: with a
diverging one, float-level differences grow exponentially (as between two GPUs' kernels).
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from test_metrics_sync import run_ranks

from histocam.data.open import open_source
from histocam.train import RunConfig, Trainer, build_method
from histocam.train.checkpoint import load_checkpoint
from histocam.train.distributed import average_gradients, convert_batchnorm
from histocam.train.evaluate import evaluate_split
from histocam.train.seeding import set_deterministic


def tree(tmp_path: Path, name: str) -> dict:
    return {
        "name": name, "out_dir": str(tmp_path), "seed": 4, "deterministic": True, "device": "cpu",
        "data": {"dataset": "synthetic-colon", "resize": 40, "crop": 32, "eval_size": 32,
                 "synthetic": {"size": 64, "n_train": 12, "n_valcl": 5, "n_test": 2}},
        "method": {"name": "cam", "backbone": {"name": "test_resnet"}},
        "train": {"epochs": 2, "batch_size": 4, "num_workers": 0, "lr": 0.002,
                  "checkpoint_every": None},
    }


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    set_deterministic(False)


def _log(run_dir: Path) -> list[dict]:
    with (run_dir / "log.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_torchrun_two_processes_equal_one_process(tmp_path: Path) -> None:
    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump(tree(tmp_path, "two")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", "-m", "histocam", "train", "--config",
                           str(config)], capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("done: ") == 1  # rank 0 reports, rank 0 alone writes
    one = RunConfig.model_validate(tree(tmp_path, "one"))
    best = Trainer(one).fit()

    a, b = _log(one.run_dir), _log(tmp_path / "two")
    assert [r["epoch"] for r in b] == ["0", "1", "2"]
    for ra, rb in zip(a, b):
        assert ra["valcl_accuracy"] == rb["valcl_accuracy"] and ra["selected"] == rb["selected"]
        assert float(ra["valpx_pxap"]) == pytest.approx(float(rb["valpx_pxap"]), abs=1e-3)
        for key in ("train_loss", "train_accuracy"):
            if ra.get(key):
                assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-4), key
    for which, epoch in (("best-loc", best["loc_epoch"]), ("best-cl", best["cl_epoch"]),
                         ("last", 2)):
        wa = load_checkpoint(one.run_dir / "checkpoints" / f"{which}.pt")
        wb = load_checkpoint(tmp_path / "two" / "checkpoints" / f"{which}.pt")
        assert wa["epoch"] == wb["epoch"] == epoch
        assert wa["model"].keys() == wb["model"].keys()  # plain state-dict keys
        for k in wa["model"]:
            torch.testing.assert_close(wb["model"][k], wa["model"][k], atol=1e-5, rtol=0,
                                       msg=f"{which} {k}")
    assert "running_var" in " ".join(wa["model"])  # BatchNorm statistics were compared too


def _global_bn_rank(rank: int, world: int, x: torch.Tensor, weight: torch.Tensor):
    bn = torch.nn.BatchNorm2d(3)
    convert_batchnorm(bn)
    part = x[rank * 2:(rank + 1) * 2].clone().requires_grad_(True)
    (bn(part) * weight[rank * 2:(rank + 1) * 2]).sum().backward()
    return part.grad.numpy(), bn.running_mean.numpy(), bn.running_var.numpy()  # not shared tensors


def test_global_batchnorm_equals_batchnorm_over_the_whole_batch() -> None:
    """Forward, gradient and running statistics of 2 ranks x 2 samples = BatchNorm over 4
    samples (odd shape 3 channels, 5 x 7)."""
    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(4, 3, 5, 7, generator=g), torch.randn(4, 3, 5, 7, generator=g)
    whole = x.clone().requires_grad_(True)
    bn = torch.nn.BatchNorm2d(3)
    (bn(whole) * weight).sum().backward()
    results = run_ranks(_global_bn_rank, x, weight)
    grads = torch.cat([torch.from_numpy(r[0]) for r in results])
    torch.testing.assert_close(grads, whole.grad, atol=1e-5, rtol=1e-5)
    for mean, var in ((torch.from_numpy(r[1]), torch.from_numpy(r[2])) for r in results):
        torch.testing.assert_close(mean, bn.running_mean, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(var, bn.running_var, atol=1e-6, rtol=1e-6)


def test_batch_size_must_divide_over_processes(tmp_path: Path) -> None:
    results = run_ranks(_trainer_error, str(tmp_path))
    assert all("not divisible by the 2 processes" in r for r in results)


def _trainer_error(rank: int, world: int, out: str) -> str:
    cfg = tree(Path(out), "odd")
    cfg["train"]["batch_size"] = 3
    try:
        Trainer(RunConfig.model_validate(cfg))
    except ValueError as exc:
        return str(exc)
    return "no error"


def _average_rank(rank: int, world: int) -> list:
    a, b, frozen = (torch.nn.Parameter(torch.zeros(3, 5)), torch.nn.Parameter(torch.zeros(7)),
                    torch.nn.Parameter(torch.zeros(2)))
    a.grad = torch.full((3, 5), float(rank + 1))
    b.grad = torch.arange(7.0) if rank == 0 else None  # unused on rank 1: counts as zero there
    average_gradients([a, b, frozen], world)
    return [a.grad.numpy(), b.grad.numpy(), frozen.grad]


def test_average_gradients_is_the_mean_over_ranks() -> None:
    for a, b, frozen in run_ranks(_average_rank):
        assert (a == 1.5).all() and (b == torch.arange(7.0).numpy() / 2).all()
        assert frozen is None  # no gradient anywhere: the optimiser must leave it alone


def _evaluate_rank(rank: int, world: int, cfg: dict, shard: bool):
    config = RunConfig.model_validate(cfg)
    torch.manual_seed(0)
    method = build_method(config, 2).eval()
    source = open_source(config.data)
    r = evaluate_split(method, source.dataset("valpx"), config.data, torch.device("cpu"),
                       batch_size=2, tau=0.5, shard=shard)
    return (r.accuracy.matrix.numpy(), r.histogram.fg.numpy(), r.histogram.bg.numpy(),
            r.predictions, sorted(r.by_class), sorted(row["id"] for row in r.per_image.rows))


def test_sharded_evaluation_merges_to_the_whole_split(tmp_path: Path) -> None:
    """Each of 2 ranks evaluates every 2nd image of valpx (5 images: 3 + 2); every metric merged
    through ``Metric.sync`` equals one process's evaluation of the whole split."""
    import numpy as np

    cfg = tree(tmp_path, "eval")
    cfg["data"]["synthetic"]["n_valcl"] = 5
    whole = _evaluate_rank(0, 1, cfg, False)
    for part in run_ranks(_evaluate_rank, cfg, True):
        for got, want in zip(part, whole):
            if isinstance(want, np.ndarray):
                np.testing.assert_array_equal(got, want)
            else:
                assert got == want


class _Stop(Exception):
    """Both ranks stop here, right after the step checkpoint (a crash of the whole job)."""


def _train_rank(rank: int, world: int, cfg: dict, resume: bool, stop_at: tuple | None) -> str:
    trainer = Trainer(RunConfig.model_validate(cfg))
    if stop_at is not None:
        save = trainer._save_resume

        def save_then_stop(epoch, step, *args):
            save(epoch, step, *args)
            if (epoch, step) == stop_at:
                raise _Stop

        trainer._save_resume = save_then_stop
    try:
        trainer.fit(resume=resume)
    except _Stop:
        return "stopped"
    return "done"


def test_two_process_mid_epoch_resume_equals_uninterrupted(tmp_path: Path) -> None:
    """Each rank's generators and partial epoch sums are saved and restored (a resume that gave
    every rank rank 0's sums would log another epoch-2 loss with the same weights)."""
    base = tree(tmp_path, "full")
    base["method"]["name"] = "has"  # random hidden patches: the ranks' generators matter
    base["train"]["checkpoint_every"] = 1
    assert run_ranks(_train_rank, base, False, None) == ["done", "done"]
    cut = {**base, "name": "cut"}
    assert run_ranks(_train_rank, cut, False, (2, 1)) == ["stopped", "stopped"]
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "resume.pt")["step"] == 1
    assert run_ranks(_train_rank, cut, True, None) == ["done", "done"]
    a, b = _log(tmp_path / "full"), _log(tmp_path / "cut")
    for key in ("train_loss", "train_accuracy", "valcl_accuracy", "valpx_pxap", "selected"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    wa = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
