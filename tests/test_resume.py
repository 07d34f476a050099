"""Exact resume: a run SIGKILLed in the middle of an epoch and resumed with ``--resume`` writes the
same log.csv metrics and the same final weights as the run that was never interrupted.

The run uses every source of randomness the trainer has: random crops and flips, colour jitter and
stain augmentation (per-sample seeds), Hide-and-Seek's random hidden patches (the process-global
torch generator, restored from ``resume.pt``), shuffling (the epoch's permutation), and a resumed
process with loader workers where the first had none.
"""

from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from helpers import stop_after_epoch, tiny_run
from typer.testing import CliRunner

from histocam.cli import app
from histocam.core import atomic
from histocam.core.atomic import load_checkpoint, save_checkpoint
from histocam.train import RunConfig, Trainer
from histocam.train.loader import train_batches
from histocam.train.seeding import rng_state, sample_seed, set_rng_state

KILL_EPOCH, KILL_STEP = 2, 2  # of 3 steps per epoch: a SIGKILL right after resume.pt of step 2

# A real ``histocam train`` process that SIGKILLs itself right after writing the step checkpoint
# (deterministic, unlike racing an external kill against a 3-step epoch).
DRIVER = textwrap.dedent(f"""
    import os, signal, sys
    import histocam.train.trainer as trainer
    save = trainer.Trainer._save_resume
    def save_then_die(self, epoch, step, *args):
        save(self, epoch, step, *args)
        if (epoch, step) == ({KILL_EPOCH}, {KILL_STEP}):
            os.kill(os.getpid(), signal.SIGKILL)
    trainer.Trainer._save_resume = save_then_die
    from histocam.cli import app
    app(prog_name="histocam", args=sys.argv[1:])
""")


def tree(tmp_path: Path, name: str, num_workers: int = 0) -> dict:
    return tiny_run(tmp_path, name=name, seed=5, deterministic=True, device="cpu",
                    data={"resize": 40, "crop": 32, "eval_size": 32, "color_jitter": True,
                          "stain_augment": 0.1,
                          "synthetic": {"size": 64, "n_train": 12, "n_valcl": 4, "n_test": 2}},
                    method={"name": "has"},
                    train={"epochs": 2, "num_workers": num_workers, "lr": 0.05,
                           "checkpoint_every": 1})



def _log(run_dir: Path) -> list[dict]:
    with (run_dir / "log.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path: Path) -> None:
    full = RunConfig.model_validate(tree(tmp_path, "full"))
    Trainer(full).fit()

    killed = tree(tmp_path, "killed")
    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump(killed))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", DRIVER, "train", "--config", str(config)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    run_dir = tmp_path / "killed"
    mid = load_checkpoint(run_dir / "checkpoints" / "resume.pt")
    assert (mid["epoch"], mid["step"]) == (KILL_EPOCH, KILL_STEP)  # killed inside epoch 2
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["epoch"] == KILL_EPOCH - 1
    assert [r["epoch"] for r in _log(run_dir)] == ["0", "1"]

    # ``histocam train --resume`` (the CLI), in a process with a loader worker this time
    proc = subprocess.run([sys.executable, "-m", "histocam", "train", "--config", str(config),
                           "--resume", "train.num_workers=1"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"in epoch {KILL_EPOCH} after step {KILL_STEP}" in " ".join(proc.stderr.split())
    assert not (run_dir / "checkpoints" / "resume.pt").exists()

    a, b = _log(full.run_dir.root), _log(run_dir)
    assert [r["epoch"] for r in b] == ["0", "1", "2"]
    for key in ("train_loss", "train_accuracy", "valcl_accuracy", "valpx_pxap", "selected", "lr"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    for which in ("last", "best-loc", "best-cl"):
        wa = load_checkpoint(full.run_dir.root / "checkpoints" / f"{which}.pt")
        wb = load_checkpoint(run_dir / "checkpoints" / f"{which}.pt")
        assert wa["epoch"] == wb["epoch"], which
        assert wa["model"].keys() == wb["model"].keys()
        assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"]), which
    opt_a = load_checkpoint(full.run_dir.root / "checkpoints" / "last.pt")["optimizer"]["state"]
    opt_b = load_checkpoint(run_dir / "checkpoints" / "last.pt")["optimizer"]["state"]
    assert all(torch.equal(opt_a[k]["momentum_buffer"], opt_b[k]["momentum_buffer"]) for k in opt_a)


def test_mid_epoch_resume_refuses_another_batch_size(tmp_path: Path) -> None:
    cfg = tree(tmp_path, "r")
    stop_after_epoch(RunConfig.model_validate(cfg), 1)
    run_dir = tmp_path / "r" / "checkpoints"
    last = load_checkpoint(run_dir / "last.pt")  # forge a mid-epoch state of epoch 2
    last.update(epoch=2, step=1, ranks=[{"rng": rng_state(), "totals": {}, "seen": 0,
                                         "correct": 0}], world=1, batch_size=8)
    torch.save(last, run_dir / "resume.pt")
    with pytest.raises(ValueError, match=r"resume\.pt.*batch size 8"):
        Trainer(RunConfig.model_validate(cfg)).fit(resume=True)


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    import random

    import numpy as np

    random.gauss(0, 1)  # a cached Gaussian is part of Python's state
    np.random.standard_normal()
    torch.save(rng_state(), tmp_path / "rng.pt")
    first = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(),
             np.random.standard_normal(), torch.rand(3).tolist())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (random.random(), random.gauss(0, 1), np.random.rand(3).tolist(),
             np.random.standard_normal(), torch.rand(3).tolist())
    assert first == again


def test_epoch_order_and_sample_seeds_depend_on_seed_epoch_index_only() -> None:
    one = train_batches(13, 4, seed=7, epoch=2, drop_last=True)
    assert len(one) == 3 and all(len(b) == 4 for b in one)
    assert one == train_batches(13, 4, seed=7, epoch=2, drop_last=True)
    assert one != train_batches(13, 4, seed=7, epoch=3, drop_last=True)
    assert sorted(i for b in train_batches(13, 4, seed=7, epoch=2) for i in b) == list(range(13))
    # two ranks of batch 2: their k-th batches together are the one-process k-th batch
    ranks = [train_batches(12, 2, seed=7, epoch=2, rank=r, world=2, drop_last=True) for r in (0, 1)]
    whole = train_batches(12, 4, seed=7, epoch=2, drop_last=True)
    assert [sorted(a + b) for a, b in zip(*ranks)] == [sorted(b) for b in whole]
    seeds = {sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(50)}
    assert len(seeds) == 450 and all(0 <= s < 2**63 for s in seeds)


class _DiskFull:
    """A file whose writes fail with ENOSPC after ``budget`` bytes (a disk filling up mid-write)."""

    def __init__(self, fh, budget: int) -> None:
        self.fh, self.budget = fh, budget

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.budget:
            self.fh.write(data[: self.budget])
            raise OSError(errno.ENOSPC, "No space left on device")
        self.budget -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self) -> _DiskFull:
        return self

    def __exit__(self, *exc) -> None:
        self.fh.close()


def _fill_disk_after(monkeypatch, budget: int) -> None:
    real = os.fdopen
    monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: _DiskFull(real(fd, mode), budget))


def test_full_disk_mid_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "ck" / "last.pt"
    save_checkpoint({"w": torch.arange(5.0)}, path)
    _fill_disk_after(monkeypatch, 100)
    with pytest.raises(OSError, match="No space left on device") as info:
        save_checkpoint({"w": torch.zeros(10_000)}, path)
    assert info.value.filename == str(path) and info.value.errno == errno.ENOSPC
    assert "the previous last.pt is intact" in info.value.strerror
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(5.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary left
    with pytest.raises(OSError, match="no new.pt was written"):
        save_checkpoint({"w": torch.zeros(10_000)}, path.parent / "new.pt")


@pytest.mark.slow
def test_training_on_a_full_disk_is_one_error_line_and_resumes(tmp_path: Path, monkeypatch) -> None:
    cfg = tree(tmp_path, "disk")
    cfg["train"].update(epochs=2, checkpoint_every=None)
    config = tmp_path / "disk.yaml"
    config.write_text(yaml.safe_dump(cfg))
    stop_after_epoch(RunConfig.model_validate(cfg), 1)
    ckpts = tmp_path / "disk" / "checkpoints"
    before = {p.name: p.read_bytes() for p in ckpts.iterdir()}
    _fill_disk_after(monkeypatch, 1000)
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--resume",
                                      "--quiet"])  # stderr: the error alone
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {ckpts}/"), lines
    assert "cannot write the checkpoint (No space left on device); the previous" in lines[0]
    assert {p.name: p.read_bytes() for p in ckpts.iterdir()} == before  # every file intact
    monkeypatch.undo()
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--resume"])
    assert result.exit_code == 0, result.output
    assert load_checkpoint(ckpts / "last.pt")["epoch"] == 2


def test_unwritable_run_folder_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    cfg = tree(tmp_path / "file", "x")  # out_dir is a file: nothing can be created below it
    config = tmp_path / "x.yaml"
    config.write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 2 and result.stderr.startswith("error: "), result.output
    assert "file" in result.stderr and "not a directory" in result.stderr.lower()
