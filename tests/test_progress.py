"""The progress display (``histocam.core.progress``): stage lines, bars on a terminal, log lines
otherwise, nothing with ``--quiet``; a long command driven through a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import tiny_pipeline, tiny_run
from typer.testing import CliRunner

from histocam.cli import app
from histocam.core import progress

COLOURS = re.compile(r"\x1b\[[0-9;]*m")
CURSOR = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")  # moves and erasures: each starts a line


@pytest.fixture(autouse=True)
def _default_mode():
    yield
    progress.configure()


def test_every_event_reaches_the_listeners_in_every_mode() -> None:
    events = []
    progress.configure(quiet=True)
    with progress.listen(events.append):
        stages = progress.Stages(2)
        stages.next("training")
        with progress.task("epoch 1", 3, unit="batches") as bar:
            bar.advance()
            bar.advance(2)
        progress.message("epoch 1 done")
        stages.next("evaluating")
        assert list(progress.track(["a", "b"], "images")) == ["a", "b"]
    assert [(e.kind, e.text, e.completed, e.total) for e in events] == [
        ("stage", "[1/2] training", 1, 2),
        ("start", "epoch 1", 0, 3), ("advance", "epoch 1", 1, 3), ("advance", "epoch 1", 3, 3),
        ("end", "epoch 1", 3, 3), ("message", "epoch 1 done", 0, None),
        ("stage", "[2/2] evaluating", 2, 2),
        ("start", "images", 0, 2), ("advance", "images", 1, 2), ("advance", "images", 2, 2),
        ("end", "images", 2, 2)]


def test_without_a_terminal_a_running_task_logs_lines(capsys, monkeypatch) -> None:
    progress.configure(mode="lines")
    monkeypatch.setattr(progress, "INTERVAL", 0.0)  # a line at every step
    progress.Stages(3).next("exporting teacher maps")
    with progress.task("epoch 2 training", 4, unit="batches") as bar:
        for _ in range(4):
            bar.advance()
    out, err = capsys.readouterr()
    assert out == ""  # progress never mixes with the results on stdout
    lines = err.splitlines()
    assert lines[0] == "[1/3] exporting teacher maps"
    assert re.fullmatch(r"epoch 2 training: 1/4 batches, 0:0\d elapsed, about 0:\d\d left", lines[1])
    assert lines[-1].startswith("epoch 2 training: 4/4 batches") and lines[-1].endswith("(done)")


def test_a_short_task_logs_nothing_and_quiet_logs_nothing_at_all(capsys) -> None:
    progress.configure(mode="lines")  # INTERVAL (30 s) never passes in this task
    with progress.task("valpx", 5) as bar:
        bar.advance(5)
    assert capsys.readouterr().err == ""
    progress.configure(quiet=True)
    progress.Stages(1).next("training")
    progress.message("epoch 1")
    with progress.task("valpx", 5) as bar:
        bar.advance(5)
    assert capsys.readouterr() == ("", "")


def test_only_rank_zero_reports(capsys, monkeypatch) -> None:
    monkeypatch.setenv("RANK", "1")
    progress.configure(mode="lines")
    assert progress.current_mode() == "quiet"
    progress.Stages(1).next("training")
    assert capsys.readouterr().err == ""


def pipeline_yaml(path: Path, out: Path) -> Path:
    """A tiny pipeline whose teacher trains two epochs (a bar of epochs with a count to show)."""
    path.write_text(yaml.safe_dump(tiny_pipeline(out, device="cpu",
                                                 teacher={"train": {"epochs": 2}})))
    return path


def run_in_terminal(argv: list[str], timeout: float = 400) -> tuple[int, str]:
    """(exit status, everything the command wrote) with stdout and stderr on a pseudo-terminal."""
    master, slave = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "histocam", *argv], stdin=slave, stdout=slave,
                            stderr=slave, env=env, close_fds=True)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 1 << 16)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.wait(), b"".join(chunks).decode("utf-8", "replace")


def test_a_long_command_on_a_terminal_shows_its_stages_and_bars(tmp_path: Path) -> None:
    config = pipeline_yaml(tmp_path / "pipeline.yaml", tmp_path / "runs")
    status, raw = run_in_terminal(["pipeline", "pixelcam", "-c", str(config)])
    text = CURSOR.sub("\n", COLOURS.sub("", raw))
    assert status == 0, text[-3000:]
    for stage in ("[1/4] training the teacher (cam), 2 epochs",
                  "[2/4] exporting the teacher's B-LOC maps of the training images",
                  "[3/4] training PixelCAM from the teacher's maps, 1 epoch",
                  "[4/4] evaluating the teacher and the student on test"):
        assert stage in text, text[-3000:]
    # bars: the epochs of a run, an epoch's batches and an evaluation's images, each with its
    # count and the time elapsed and left
    assert re.search(r"teacher-cam: epochs .*\d/2 elapsed \d:\d\d:\d\d left", text), text[-3000:]
    assert re.search(r"epoch 1 training .*\d/2 elapsed", text), text[-3000:]
    assert re.search(r"teacher-cam best-loc: test .*\d/4 elapsed", text), text[-3000:]
    assert "valcl acc" in text  # the epoch lines stay above the bars


def test_quiet_leaves_only_the_result(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_run(tmp_path, name="r", device="cpu")))
    result = CliRunner().invoke(app, ["train", "-c", str(config), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and result.stdout.startswith("done: ")
    result = CliRunner().invoke(app, ["train", "-c", str(config), "name=s"])  # not a terminal
    assert result.exit_code == 0, result.output
    assert "epoch   1 loss" in result.stderr and "epoch   1 loss" not in result.stdout
