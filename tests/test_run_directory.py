"""A run directory that protects itself: one writer at a time (the run's lock), no run replaced
without ``--overwrite``, an epoch's log row committed with its checkpoints (a SIGKILL at any write
of an epoch, then ``--resume``, gives the files of the run that was never killed), orphan temporary
files removed, and ``--resume`` only with the config the run was trained with."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import files_under, run_ranks, stop_after_epoch, tiny_run
from typer.testing import CliRunner

from histocam.cli import app
from histocam.core import collectives
from histocam.core.atomic import load_checkpoint, save_checkpoint
from histocam.core.rundir import RunDir
from histocam.core.runlock import RunLock, RunLockError, holder
from histocam.runs import Run
from histocam.train import RunConfig, Trainer


def _config(out: Path, name: str = "run", **changes) -> RunConfig:
    return RunConfig.model_validate(tiny_run(out, name=name, deterministic=True, device="cpu",
                                             **changes))


def _write_yaml(config: RunConfig, path: Path) -> Path:
    path.write_text(config.to_yaml())
    return path


def _snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``root`` (hidden ones too): its bytes and modification time."""
    return {name: ((root / name).read_bytes(), (root / name).stat().st_mtime_ns)
            for name in files_under(root)}


def _lock_file(run: Path, pid: int, host: str | None = None, since: float | None = None) -> Path:
    """A lock file as another process would have left it."""
    path = RunDir(run).lock_file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                "since": time.time() if since is None else since,
                                "operation": "training", "token": "f" * 32}))
    return path


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---------------------------------------------------------------------------- the lock
def test_a_live_holder_is_named_and_its_lock_kept(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = _lock_file(tmp_path / "run", sleeper.pid)
        before = path.read_bytes()
        with pytest.raises(RunLockError) as info, RunLock(path, "evaluation"):
            pass
        message = str(info.value)
        assert f"pid {sleeper.pid} on host {socket.gethostname()} since " in message
        assert "is in use: training" in message and f"kill {sleeper.pid}" in message
        assert path.read_bytes() == before
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_stale_lock_is_taken_over_with_one_notice(tmp_path: Path, caplog) -> None:
    dead = _dead_pid()
    path = _lock_file(tmp_path / "run", dead)
    with caplog.at_level(logging.WARNING, logger="histocam"), RunLock(path, "evaluation"):
        owner = holder(path)
        assert owner is not None and owner.pid == os.getpid() and owner.operation == "evaluation"
    notices = [r.getMessage() for r in caplog.records]
    assert len(notices) == 1 and f"took over the lock left by training by pid {dead}" in notices[0]
    assert not path.exists()


def test_a_pid_given_to_a_later_process_does_not_hold_the_lock(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # the lock's owner died an hour ago; its pid now belongs to a process started since
        path = _lock_file(tmp_path / "run", sleeper.pid, since=time.time() - 3600)
        with RunLock(path, "training"):
            assert holder(path).pid == os.getpid()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_lock_from_another_host_is_never_broken(tmp_path: Path) -> None:
    path = _lock_file(tmp_path / "run", _dead_pid(), host="node-17")
    before = path.read_bytes()
    with pytest.raises(RunLockError, match="on host node-17") as info, RunLock(path, "training"):
        pass
    assert f"delete {path}" in str(info.value)
    assert path.read_bytes() == before


def test_a_lock_file_histocam_did_not_write_is_reported_not_broken(tmp_path: Path) -> None:
    path = RunDir(tmp_path / "run").lock_file
    path.parent.mkdir()
    path.write_text("locked by me\n")
    with pytest.raises(RunLockError, match="not one histocam wrote"), RunLock(path, "training"):
        pass
    assert path.read_text() == "locked by me\n"


def test_a_stale_lock_being_broken_by_another_process_is_not_broken_twice(tmp_path: Path) -> None:
    from histocam.core import runlock

    path = _lock_file(tmp_path / "run", _dead_pid())
    stale = holder(path)
    breaker = path.with_name(f"{path.name}.break-{stale.token}")
    breaker.touch()  # another process holds the right to break this stale lock
    assert runlock._break(path, stale) is False and holder(path) == stale
    breaker.unlink()
    path.write_text(path.read_text().replace("f" * 32, "e" * 32))  # taken by a new owner since
    assert runlock._break(path, stale) is True and holder(path).token == "e" * 32


def test_the_lock_is_reentrant_and_released_on_interrupts(tmp_path: Path) -> None:
    path = RunDir(tmp_path / "run").lock_file
    with pytest.raises(KeyboardInterrupt), RunLock(path, "thresholds"):
        with RunLock(path, "evaluation"):  # an experiment that evaluates: the same process
            assert holder(path).operation == "thresholds"
        assert path.exists()  # the outer holder still holds it
        raise KeyboardInterrupt
    assert not path.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == []  # no temporary left


def _enter_lock(rank: int, world: int, path: str) -> tuple[str, int | None]:
    try:
        with RunLock(path, "training"):
            owner = holder(path)
            collectives.barrier()  # both ranks have looked before rank 0 releases it
            return "held", owner.pid if owner else None
    except RunLockError as exc:
        return str(exc), None


@pytest.mark.slow
def test_under_torchrun_rank_0_takes_the_lock_and_every_rank_follows(tmp_path: Path) -> None:
    path = RunDir(tmp_path / "run").lock_file
    (held0, pid0), (held1, pid1) = run_ranks(_enter_lock, str(path))
    assert held0 == held1 == "held" and pid0 == pid1 and pid0 != os.getpid()  # rank 0's
    assert not path.exists()
    _lock_file(tmp_path / "run", os.getpid())  # held by this live process
    (error0, _), (error1, _) = run_ranks(_enter_lock, str(path))
    assert error0 == error1 and f"pid {os.getpid()}" in error0  # rank 1 has rank 0's answer


# ---------------------------------------------------------------------------- two trainings
# ``histocam train`` that holds its run after epoch 0 until it reads a line on stdin.
HOLDING = textwrap.dedent("""
    import sys
    from histocam.core.rundir import RunDir
    commit = RunDir.commit_epoch
    def commit_then_wait(self, state, selected):
        commit(self, state, selected)
        if state["epoch"] == 0:
            print("holding", flush=True)
            sys.stdin.readline()
    RunDir.commit_epoch = commit_then_wait
    from histocam.cli import app
    app(prog_name="histocam", args=sys.argv[1:])
""")


@pytest.mark.slow
def test_a_second_training_into_a_run_exits_2_naming_the_first(tmp_path: Path) -> None:
    config = _config(tmp_path, train={"epochs": 1})
    yaml_path = _write_yaml(config, tmp_path / "run.yaml")
    run = config.run_dir.root
    first = subprocess.Popen([sys.executable, "-c", HOLDING, "train", "--config", str(yaml_path)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stdout:
            if line.strip() == "holding":
                break
        before = _snapshot(run)
        assert ".lock" in before and "checkpoints/last.pt" in before
        second = CliRunner().invoke(app, ["train", "--config", str(yaml_path), "seed=9"])
        assert second.exit_code == 2, second.output  # this process: another pid than the first
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {run} is in use: training by "
                                                       f"pid {first.pid} on host "
                                                       f"{socket.gethostname()} since "), lines
        for argv in (["train", "--config", str(yaml_path), "--resume"],
                     ["evaluate", str(run), "--checkpoint", "best-loc"]):
            other = CliRunner().invoke(app, argv)
            assert other.exit_code == 2 and f"pid {first.pid}" in other.stderr, other.output
        assert _snapshot(run) == before  # nothing written by the refused commands
        out, err = first.communicate("\n", timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert [row["epoch"] for row in RunDir(run).read_log()] == ["0", "1"]
    assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == config.seed
    assert load_checkpoint(run / "checkpoints" / "last.pt")["config"]["seed"] == config.seed
    assert ".lock" not in files_under(run)


# ---------------------------------------------------------------------------- never overwritten
@pytest.mark.slow
def test_a_finished_run_without_last_pt_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    config = _config(tmp_path)
    Trainer(config).fit()
    run = config.run_dir
    Run(run).evaluate("best-loc", device="cpu")
    run.checkpoint("last").unlink()  # the biggest file, deleted to save space
    yaml_path = _write_yaml(config, tmp_path / "run.yaml")
    before = _snapshot(run.root)
    result = CliRunner().invoke(app, ["train", "--config", str(yaml_path), "seed=4"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {run} already holds a run ("), lines
    assert "checkpoints/best-loc.pt" in lines[0] and "metrics" in lines[0]
    assert "--overwrite" in lines[0] and "another name" in lines[0]
    assert _snapshot(run.root) == before  # every file's bytes and time

    both = CliRunner().invoke(app, ["train", "--config", str(yaml_path), "--resume",
                                    "--overwrite"])
    assert both.exit_code == 2 and "pass one" in both.stderr
    stored = run.stored_maps("best-loc", "train")
    stored.parent.mkdir()
    stored.write_bytes(b"maps of the old weights")
    result = CliRunner().invoke(app, ["train", "--config", str(yaml_path), "--overwrite",
                                      "seed=4"])
    assert result.exit_code == 0, result.output
    assert not run.metrics_dir().exists() and not run.cams_dir.exists()  # no stale results
    assert files_under(run.root) == ["checkpoints/best-cl.pt", "checkpoints/best-loc.pt",
                                     "checkpoints/last.pt", "config.yaml", "log.csv"]
    assert load_checkpoint(run.checkpoint("last"))["config"]["seed"] == 4


def test_a_folder_with_only_temporaries_and_a_config_is_no_run_yet(tmp_path: Path) -> None:
    config = _config(tmp_path, train={"epochs": 0})
    run = config.run_dir
    run.write_config("left by a run stopped before its first evaluation\n")
    orphan = run.checkpoint("last").with_name(".last.pt.k2j3.tmp")  # an atomic write killed
    orphan.parent.mkdir()
    orphan.write_bytes(b"half a checkpoint")
    assert run.results() == []  # never counted as a checkpoint
    Trainer(config).fit()
    assert files_under(run.root) == ["checkpoints/best-cl.pt", "checkpoints/best-loc.pt",
                                     "checkpoints/last.pt", "config.yaml", "log.csv"]


# ---------------------------------------------------------------------------- resume's config
@pytest.mark.slow
def test_resume_with_another_config_names_every_changed_key(tmp_path: Path) -> None:
    config = _config(tmp_path, train={"epochs": 2})
    run = stop_after_epoch(config, 1)
    yaml_path = _write_yaml(config, tmp_path / "run.yaml")
    before = _snapshot(run.root)
    result = CliRunner().invoke(app, ["train", "--config", str(yaml_path), "--resume", "seed=1",
                                      "train.epochs=3", "data.synthetic.n_train=10",
                                      "method.name=gap"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot resume {run}: "), lines
    for change in ("seed: 0 -> 1", "train.epochs: 2 -> 3", "data.synthetic.n_train: 8 -> 10",
                   'method.name: "cam" -> "gap"'):
        assert change in lines[0], change
    assert "another name" in lines[0] and "--overwrite" in lines[0]
    assert "train.num_workers" in lines[0]  # what a resume may change
    assert _snapshot(run.root) == before
    # a key that changes no number: resumed
    result = CliRunner().invoke(app, ["train", "--config", str(yaml_path), "--resume",
                                      "train.checkpoint_every=1", "device=auto"])
    assert result.exit_code == 0, result.output
    assert run.epochs_done() == 2


@pytest.mark.slow
def test_a_pipeline_stage_trained_with_another_config_is_not_reused(tmp_path: Path) -> None:
    config = _config(tmp_path)
    Run.train(config)
    stamps = _snapshot(config.run_dir.root)
    assert Run.train(config).dir == config.run_dir and _snapshot(config.run_dir.root) == stamps
    other = _config(tmp_path, train={"lr": 0.5})
    with pytest.raises(ValueError, match=r"trained with another configuration .*train\.lr: "
                                         r"0\.01 -> 0\.5"):
        Run.train(other)


# ---------------------------------------------------------------------------- kill at each write
class Writes:
    """The writes into a run: ``os.replace`` onto a path under it (an atomic write's last step)
    and ``os.unlink`` of one, each with the training epoch it happens in; ``kill=(i, when)``
    SIGKILLs the process right before or after the ``i``-th (before: the write's temporary file
    is whole and not yet in place)."""

    def __init__(self, root: Path, kill: tuple[int, str] | None = None) -> None:
        self.root, self.kill = str(root), kill
        self.events: list[tuple[int, str, str]] = []
        self.epoch = 0

    def install(self, setattr) -> None:
        real_replace, real_unlink, train_epoch = os.replace, os.unlink, Trainer._train_epoch

        def epoch(trainer, e, partial=None):
            self.epoch = e
            return train_epoch(trainer, e, partial)

        setattr(os, "replace", lambda src, dst, **kw: self._write(
            "replace", dst, lambda: real_replace(src, dst, **kw)))
        setattr(os, "unlink", lambda path, **kw: self._write(
            "unlink", path, lambda: real_unlink(path, **kw)))
        setattr(Trainer, "_train_epoch", epoch)

    def _write(self, kind: str, path, write):
        path = os.fspath(path)
        if not path.startswith(self.root + os.sep):
            return write()
        index = len(self.events)
        self.events.append((self.epoch, kind, os.path.relpath(path, self.root)))
        if self.kill == (index, "before"):
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            return write()
        finally:
            if self.kill == (index, "after"):
                os.kill(os.getpid(), signal.SIGKILL)


def _train_killed(config: RunConfig, kill: tuple[int, str]) -> None:
    """In a forked child: train ``config`` until the kill."""
    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool
    Writes(config.run_dir.root, kill).install(setattr)
    Trainer(config).fit()
    os._exit(3)  # not killed: the test fails


def _same(a, b, where: str = "") -> None:
    """Equal checkpoints: tensors equal, the log rows equal but for their wall-clock seconds,
    the configs but for the run's folder."""
    if isinstance(a, dict):
        skip = {"seconds", "out_dir"}
        assert a.keys() == b.keys(), where
        for key in a.keys() - skip:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    elif torch.is_tensor(a):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.slow
def test_sigkill_at_each_write_of_an_epoch_then_resume_equals_uninterrupted(
        tmp_path: Path, monkeypatch, caplog) -> None:
    changes = {"train": {"epochs": 1, "checkpoint_every": 1, "lr": 0.1}}  # epoch 1 selects both
    full = _config(tmp_path / "full", **changes)
    writes = Writes(full.run_dir.root)
    with monkeypatch.context() as patch:
        writes.install(patch.setattr)
        Trainer(full).fit()
    first = {}  # each write of a trained epoch, at its first occurrence
    for i, (epoch, kind, name) in enumerate(writes.events):
        if epoch >= 1 and name != ".lock":
            first.setdefault((kind, name), i)
    assert set(first) == {("replace", "checkpoints/resume.pt"), ("unlink", "checkpoints/resume.pt"),
                          ("replace", "checkpoints/last.pt"), ("replace", "log.csv"),
                          ("replace", "checkpoints/best-loc.pt"),
                          ("replace", "checkpoints/best-cl.pt")}, writes.events
    # after last.pt of the last epoch: its row and checkpoints are written by the resume alone
    points = [(i, when) for i in sorted(first.values()) for when in ("before", "after")]

    reference = full.run_dir.root
    fork = mp.get_context("fork")
    for k, (index, when) in enumerate(points):
        config = _config(tmp_path / f"kill{k}", **changes)
        child = fork.Process(target=_train_killed, args=(config, (index, when)))
        child.start()
        child.join(timeout=300)
        assert child.exitcode == -signal.SIGKILL, (writes.events[index], when, child.exitcode)
        run = config.run_dir.root
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="histocam"):
            result = CliRunner().invoke(app, ["train", "--config",
                                              str(_write_yaml(config, tmp_path / "k.yaml")),
                                              "--resume"])
        assert result.exit_code == 0, (writes.events[index], when, result.output)
        assert "took over the lock" in caplog.text  # the killed process's
        assert files_under(run) == files_under(reference), (writes.events[index], when)
        assert [{k: v for k, v in row.items() if k != "seconds"}
                for row in RunDir(run).read_log()] == [
            {k: v for k, v in row.items() if k != "seconds"}
            for row in RunDir(reference).read_log()]
        for name in ("best-loc", "best-cl", "last"):
            _same(load_checkpoint(run / "checkpoints" / f"{name}.pt"),
                  load_checkpoint(reference / "checkpoints" / f"{name}.pt"),
                  f"{writes.events[index]} {when}: {name}")


@pytest.mark.slow
def test_resume_removes_orphan_temporaries_and_writes_a_lost_row(tmp_path: Path) -> None:
    config = _config(tmp_path, train={"epochs": 2})
    run = stop_after_epoch(config, 1)
    state = run.load_checkpoint("last")
    run.write_log(state["log"][:-1])  # killed between last.pt and its row
    orphans = [run.checkpoint("best-loc").with_name(".best-loc.pt.x7f2.tmp"),
               run.root / ".log.csv.abc.tmp", run.cams_dir / ".best-loc-train.npz.part1-of-2"]
    for path in orphans:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"unfinished")
    save_checkpoint({"epoch": 1}, run.root / "checkpoints" / "keep.pt")  # not a temporary
    Trainer(config).fit(resume=True)
    assert not any(p.exists() for p in orphans)
    assert (run.root / "checkpoints" / "keep.pt").exists()
    assert [row["epoch"] for row in run.read_log()] == ["0", "1", "2"]
