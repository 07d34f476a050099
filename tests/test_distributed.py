"""Distributed training under torchrun equals one process with the same global batch.

``torchrun --standalone --nproc_per_node 2 -m histocam train`` (gloo, CPU) against ``Trainer`` in
this process, same config (global batch 4: 2 per rank). The backbone has BatchNorm, synchronised
over the ranks (``GlobalBatchNorm2d``), so the two runs compute the same function up to float
summation order; tolerances: weights and BatchNorm running statistics within 1e-5 (absolute) after
2 epochs, training loss within 1e-4 (relative), valcl accuracy, B-LOC/B-CL epochs and selections
identical, valpx PxAP within 1e-3 points. A learning rate where training is stable: with a
diverging one, float-level differences grow exponentially (as between two GPUs' kernels).

The pipeline, evaluation and CAM-store commands under torchrun are compared with one process at the
end of the file (their tolerances are stated there).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import files_under, run_ranks, tiny_run

from histocam.core.atomic import load_checkpoint
from histocam.data.open import open_source
from histocam.runs.evaluation import SplitMetrics
from histocam.train import RunConfig, Trainer, build_method
from histocam.train.split_pass import evaluate_split


def tree(tmp_path: Path, name: str) -> dict:
    return tiny_run(tmp_path, name=name, seed=4, deterministic=True, device="cpu",
                    data={"resize": 40, "crop": 32, "eval_size": 32,
                          "synthetic": {"size": 64, "n_train": 12, "n_valcl": 5, "n_test": 2}},
                    train={"epochs": 2, "lr": 0.002, "checkpoint_every": None})



def _log(run_dir: Path) -> list[dict]:
    with (run_dir / "log.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
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

    a, b = _log(one.run_dir.root), _log(tmp_path / "two")
    assert [r["epoch"] for r in b] == ["0", "1", "2"]
    for ra, rb in zip(a, b):
        assert ra["valcl_accuracy"] == rb["valcl_accuracy"] and ra["selected"] == rb["selected"]
        assert float(ra["valpx_pxap"]) == pytest.approx(float(rb["valpx_pxap"]), abs=1e-3)
        for key in ("train_loss", "train_accuracy"):
            if ra.get(key):
                assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-4), key
    for which, epoch in (("best-loc", best["loc_epoch"]), ("best-cl", best["cl_epoch"]),
                         ("last", 2)):
        wa = load_checkpoint(one.run_dir.root / "checkpoints" / f"{which}.pt")
        wb = load_checkpoint(tmp_path / "two" / "checkpoints" / f"{which}.pt")
        assert wa["epoch"] == wb["epoch"] == epoch
        assert wa["model"].keys() == wb["model"].keys()  # plain state-dict keys
        for k in wa["model"]:
            torch.testing.assert_close(wb["model"][k], wa["model"][k], atol=1e-5, rtol=0,
                                       msg=f"{which} {k}")
    assert "running_var" in " ".join(wa["model"])  # BatchNorm statistics were compared too


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


def _evaluate_rank(rank: int, world: int, cfg: dict, shard: bool):
    config = RunConfig.model_validate(cfg)
    torch.manual_seed(0)
    method = build_method(config, 2).eval()
    source = open_source(config.data)
    r = SplitMetrics(2, 0.5, torch.device("cpu"))
    evaluate_split(method, source.dataset("valpx"), config.data, torch.device("cpu"),
                   r.collection(), batch_size=2, shard=shard)
    total = r.histograms.total()
    return (r.accuracy.matrix.numpy(), total.fg.numpy(), total.bg.numpy(),
            r.predictions.rows, sorted(r.histograms.by_class), r.per_image.rows)


def test_sharded_evaluation_merges_to_the_whole_split(tmp_path: Path) -> None:
    """Each of 2 ranks evaluates its block of valpx (5 images: 2 + 3); every metric merged
    through ``Metric.sync`` equals one process's evaluation of the whole split, per-image rows
    in the same (dataset) order."""

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


@pytest.mark.slow
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


# ---------------------------------------------------------------- pipeline, evaluation, CAM stores


def _pipeline(out: Path) -> dict:
    """A tiny teacher (CAM) -> stored maps -> PixelCAM pipeline (1 epoch each); test and valpx
    5 images (2 + 3 per rank), train 12 (6 + 6), ``eval_batch_size`` 2."""
    base = tree(out, "p")
    train = {**base["train"], "epochs": 1, "eval_batch_size": 2}
    base["data"]["synthetic"]["n_test"] = 5
    return {"name": "p", "out_dir": str(out), "seed": 4, "deterministic": True, "device": "cpu",
            "data": base["data"], "backbone": {"name": "test_resnet"},
            "teacher": {"train": train}, "student": {"train": train}}



COMMANDS = """
import sys

from histocam.cli import app

for command in sys.argv[1:]:  # each command as `histocam` runs it, one after the other
    try:
        app(command.split(), prog_name="histocam")
    except SystemExit as exit:
        if exit.code:
            raise
"""


def _torchrun_commands(tmp_path: Path, *commands: str) -> subprocess.CompletedProcess:
    """The ``histocam`` commands, in turn, in the same 2 torchrun processes (one launch saves
    the start-up of the others; the process group the first command makes lives on)."""
    script = tmp_path / "commands.py"
    script.write_text(COMMANDS)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", str(script), *commands],
                          capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _without_run(path: Path) -> dict:
    data = json.loads(path.read_text())
    data.pop("run")  # the run directory's own path
    return data


def _assert_close(got, want, where: str = "") -> None:
    """Same structure, same strings and integers; floats within 1e-3 absolute (NaN = NaN); the
    timings (``cost``) and run paths (``run``) are not compared."""
    if isinstance(want, dict):
        assert got.keys() == want.keys(), where
        for key in want:
            if key not in ("cost", "run"):
                _assert_close(got[key], want[key], f"{where}/{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want)):
            _assert_close(a, b, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-3, nan_ok=True), where
    else:
        assert got == want, where


def _assert_same_npz(got: Path, want: Path, atol: float = 0.0) -> None:
    with np.load(want) as a, np.load(got) as b:
        assert b.files == a.files, got  # the same arrays, in the same order
        for key in a.files:
            np.testing.assert_allclose(b[key].astype(np.float32), a[key].astype(np.float32),
                                       atol=atol, rtol=0, err_msg=f"{got} {key}")


@pytest.mark.slow
def test_torchrun_pipeline_evaluate_and_cams_equal_one_process(tmp_path: Path) -> None:
    """2 torchrun processes run, in one launch, ``histocam pipeline pixelcam`` (teacher training,
    map export, PixelCAM training, evaluation of both, comparison), then ``histocam evaluate``
    (maps and separability too) and ``histocam cams`` on a copy of the 1-process teacher run.

    - Every command writes from rank 0 alone: one report on stdout, the same files as one process
      and no part or temporary file left.
    - ``evaluate`` and ``cams`` on the same trained run: their metrics JSON, per-image CSV,
      curves, saved maps and CAM store (.npz and .json) equal one process's exactly; the ranks'
      blocks are cut into the same batches of 2 as one process's pass, so every map comes from the
      same computation and every histogram count is the same.
    - The pipeline trains its own runs on 2 processes: its comparison.json and stored teacher
      maps equal the 1-process pipeline's within 1e-3 (floats; integers and strings exactly; in
      practice they agree to the bit), as the trainings agree to float tolerance only.
    """
    from histocam.experiments.pipeline import PipelineConfig, run_pipeline
    from histocam.runs import Run

    one_root, two_root = tmp_path / "one", tmp_path / "two"
    want = run_pipeline(PipelineConfig.model_validate(_pipeline(one_root)), progress=False)
    teacher_one = one_root / "p" / "teacher-cam"
    teacher_two = tmp_path / "teacher-copy"
    shutil.copytree(teacher_one, teacher_two)
    (two_root / "two.yaml").parent.mkdir()
    (two_root / "two.yaml").write_text(yaml.safe_dump(_pipeline(two_root)))
    proc = _torchrun_commands(
        tmp_path, f"pipeline pixelcam --config {two_root / 'two.yaml'}",
        f"evaluate {teacher_two} --checkpoint best-loc --save-maps --separability --device cpu "
        "--json",
        f"cams {teacher_two} --checkpoint best-cl --split test --device cpu")
    assert proc.stdout.count("run directory: ") == 1  # one report per command, by rank 0
    assert proc.stdout.count('"checkpoint": "best-loc"') == 1
    assert proc.stdout.count("wrote ") == 1

    # the pipeline on 2 processes = on 1
    assert files_under(two_root / "p") == files_under(one_root / "p")
    got = json.loads((two_root / "p" / "comparison.json").read_text())
    _assert_close(got, json.loads(want.to_json()))
    _assert_close(got, json.loads((one_root / "p" / "comparison.json").read_text()))
    assert len(got["student"]["best-loc"]["per_image_ap"]) == 5
    store = Path("teacher-cam") / "cams" / "best-loc-train.npz"
    _assert_same_npz(two_root / "p" / store, one_root / "p" / store, atol=1e-3)

    # evaluate and cams of one trained run on 2 processes = on 1, exactly
    metrics = Run(teacher_one).evaluate("best-loc", "test", device="cpu", save_maps=True,
                                        separability=True)
    Run(teacher_one).export_cams("best-cl", "test", device="cpu")
    assert files_under(teacher_two) == files_under(teacher_one)
    assert {"metrics/best-loc-test-maps.npz", "cams/best-cl-test.npz", "cams/best-cl-test.json",
            "cams/best-loc-train.npz"} <= set(files_under(teacher_two))
    got = _without_run(teacher_two / "metrics" / "best-loc-test.json")
    assert got == {k: v for k, v in metrics.model_dump().items() if k != "run"}
    separability = got["separability"]  # tiny images: J is undefined on most, skipped
    assert got["localization"]["per_class"] and \
        separability["n_images"] + separability["n_skipped_single_class"] == 5
    for name in ("metrics/best-loc-test-per-image.csv", "metrics/best-loc-test-curves.csv"):
        assert (teacher_two / name).read_text() == (teacher_one / name).read_text(), name
    assert len((teacher_two / "metrics/best-loc-test-per-image.csv").read_text().splitlines()) == 6
    assert _without_run(teacher_two / "cams/best-cl-test.json") == \
        _without_run(teacher_one / "cams/best-cl-test.json")
    assert len(json.loads((teacher_two / "cams/best-cl-test.json").read_text())["ids"]) == 5
    for name in ("metrics/best-loc-test-maps.npz", "cams/best-cl-test.npz"):
        _assert_same_npz(teacher_two / name, teacher_one / name)
