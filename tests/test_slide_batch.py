"""Batches of slides that survive bad files: truncated and corrupt slides (failing at open, at the
thumbnail or in a tile reader process) and other files named in one line and in summary.csv; two
processes side by side with --shard cover every slide once; results reused only when made by the
same run, checkpoint and options; an image and a slide of one stem never share a file; a corrupt
partial result named; every numeric option of predict checked."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import predict_run, tissue_rgb, write_slide
from PIL import Image
from typer.testing import CliRunner

from histocam.cli import app
from histocam.core.runlock import RunLockError, acquire, holder, release
from histocam.predict import SlideOptions, predict

ROOT = Path(__file__).resolve().parents[1]


def histocam(*args: str, **kwargs) -> subprocess.Popen:
    """``python -m histocam ARGS`` in a new process (our tree first on the path)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "histocam", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def small_slide(path: Path, seed: int = 0) -> Path:
    tissue = np.zeros((160, 200), bool)
    tissue[20:140, 30:170] = True
    return write_slide(path, tissue_rgb(160, 200, seed, tissue))


def damaged_slide(path: Path, page: int) -> Path:
    """An 8256-pixel-wide slide (its thumbnail comes from the 4× level) with tissue around
    x = 3840, one of whose tiles at level ``page`` is overwritten with noise: level 1 fails at the
    thumbnail, level 0 in a tile reader process."""
    tissue = np.zeros((256, 8256), bool)
    tissue[32:224, 3600:4100] = True
    write_slide(path, tissue_rgb(256, 8256, 4, tissue))
    with tifffile.TiffFile(path) as tif:
        p = tif.pages[page]
        k = 60 if page == 0 else 15
        offset, count = p.dataoffsets[k], p.databytecounts[k]
    data = bytearray(path.read_bytes())
    data[offset:offset + count] = np.random.default_rng(0).integers(0, 256, count, np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


# ------------------------------------------------------------------ bad files
def test_a_folder_with_truncated_corrupt_and_other_files_finishes_the_good_slides(run_dir,
                                                                               tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    small_slide(folder / "good1.tif", 1)
    small_slide(folder / "good2.tif", 2)
    whole = small_slide(tmp_path / "whole.tif", 3).read_bytes()
    (folder / "truncated.tif").write_bytes(whole[: len(whole) * 6 // 10])
    damaged_slide(folder / "corrupt-thumbnail.tif", page=1)
    damaged_slide(folder / "corrupt-tile.tif", page=0)
    (folder / "notes.txt").write_text("not a slide")
    out = tmp_path / "out"
    proc = histocam("predict", str(run_dir), str(folder), "--out", str(out), "--device", "cpu",
                    "--workers", "1", "--tile", "64", "--quiet")
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stdout + stderr
    assert "Traceback" not in stdout + stderr and "Task was destroyed" not in stderr
    errors = [line for line in stderr.splitlines() if line.strip()]
    assert len(errors) == 3 and all(e.startswith("error: ") for e in errors), stderr
    for name, problem in [("truncated.tif", "cannot"), ("corrupt-thumbnail.tif", "level 1"),
                          ("corrupt-tile.tif", "level 0")]:
        line = next(e for e in errors if name in e)
        assert problem in line
    assert f"skipped {folder / 'notes.txt'}: not an image or slide file" in stdout
    table = {Path(r["file"]).name: r for r in rows(out / "summary.csv")}
    assert {k: v["status"] for k, v in table.items()} == {
        "good1.tif": "done", "good2.tif": "done", "truncated.tif": "failed",
        "corrupt-thumbnail.tif": "failed", "corrupt-tile.tif": "failed", "notes.txt": "skipped"}
    assert int(table["good1.tif"]["tiles"]) > 0 and table["good1.tif"]["label"] in ("normal", "tumor")
    assert "corrupt-tile.tif" in table["corrupt-tile.tif"]["error"]
    for good in ("good1", "good2"):
        assert (out / "slides" / good / f"{good}.json").is_file()


def test_one_truncated_tiled_tiff_is_one_error_line_naming_it(run_dir, tmp_path) -> None:
    whole = small_slide(tmp_path / "whole.tif").read_bytes()
    (tmp_path / "t.tif").write_bytes(whole[: len(whole) * 6 // 10])
    res = CliRunner().invoke(app, ["predict", str(run_dir), str(tmp_path / "t.tif"), "--out",
                                   str(tmp_path / "o"), "--device", "cpu", "--workers", "0",
                                   "--quiet"])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("error: ") and str(tmp_path / "t.tif") in lines[0]


def test_a_corrupt_file_in_a_slides_resume_folder_is_named(run_dir, tmp_path) -> None:
    small_slide(tmp_path / "s.tif")
    out = tmp_path / "out"
    predict(run_dir, [tmp_path / "s.tif"], out, device="cpu", num_workers=0,
            slide_options=SlideOptions(tile=64, keep_work=True))
    folder = out / "slides" / "s"
    (folder / "s.json").unlink()  # as if interrupted after the tiles
    batch = sorted((folder / "work" / "batches").glob("batch-*.npz"))[0]
    batch.write_bytes(b"PK\x03\x04 not a zip")
    res = CliRunner().invoke(app, ["predict", str(run_dir), str(tmp_path / "s.tif"), "--out",
                                   str(out), "--device", "cpu", "--workers", "0", "--tile", "64",
                                   "--quiet"])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert str(batch) in lines[0] and "--redo" in lines[0]


# ------------------------------------------------------------------ shards and locks
def test_two_shards_side_by_side_cover_every_slide_once(run_dir, tmp_path) -> None:
    for k in range(4):
        small_slide(tmp_path / f"s{k}.tif", k)
    out = tmp_path / "out"
    procs = [histocam("predict", str(run_dir), str(tmp_path), "--out", str(out), "--device",
                      "cpu", "--workers", "0", "--tile", "64", "--quiet", "--shard", f"{i}/2")
             for i in range(2)]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stdout + stderr
    computed = [Path(r["file"]).name for i in range(2)
                for r in rows(out / f"summary-shard-{i}-of-2.csv") if r["status"] == "done"]
    assert sorted(computed) == [f"s{k}.tif" for k in range(4)]  # each slide once
    assert all((out / "slides" / f"s{k}" / f"s{k}.json").is_file() for k in range(4))
    assert not list((out / "slides").glob("*.lock"))


def lock_file(path: Path, pid: int, since: float) -> Path:
    """A slide's lock as another process of this host would have written it."""
    path.write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "since": since,
                                "operation": "prediction of s.tif", "token": uuid.uuid4().hex}))
    return path


def test_a_live_lock_is_respected_and_a_dead_ones_is_taken_over(tmp_path) -> None:
    live = lock_file(tmp_path / "a.lock", os.getppid(), time.time())  # our parent outlives us
    with pytest.raises(RunLockError, match="in use: prediction of s.tif"):
        acquire(live, "prediction of s.tif")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = lock_file(tmp_path / "b.lock", dead.pid, time.time() - 60)
    acquire(stale, "prediction of s.tif")
    assert holder(stale).pid == os.getpid()
    release(stale)
    assert not stale.exists() and live.exists()
    foreign = tmp_path / "c.lock"
    foreign.write_text("")  # not a lock histocam wrote (its locks are written whole): never broken
    with pytest.raises(RunLockError, match="not one histocam wrote"):
        acquire(foreign, "prediction of s.tif")
    assert foreign.exists()


def test_a_locked_slide_of_this_shard_is_left_to_its_holder(run_dir, tmp_path) -> None:
    small_slide(tmp_path / "s.tif")
    (tmp_path / "out" / "slides").mkdir(parents=True)
    lock_file(tmp_path / "out" / "slides" / "s.lock", os.getppid(), time.time())
    result = predict(run_dir, [tmp_path / "s.tif"], tmp_path / "out", device="cpu",
                     num_workers=0, slide_options=SlideOptions(tile=64))
    row = rows(result.summary_csv)[0]
    assert result.slides == [] and row["status"] == "locked"
    assert f"prediction of s.tif by pid {os.getppid()}" in row["error"]


# ------------------------------------------------------------------ identity of a result
def test_a_result_of_another_run_or_options_is_never_returned_as_done(run_dir, tmp_path) -> None:
    other = predict_run(tmp_path / "runs", "other", seed=2)
    small_slide(tmp_path / "s.tif")
    args = ["--out", str(tmp_path / "out"), "--device", "cpu", "--workers", "0", "--tile", "64",
            "--quiet"]
    runner = CliRunner()
    first = runner.invoke(app, ["predict", str(run_dir), str(tmp_path / "s.tif"), *args])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["predict", str(run_dir), str(tmp_path / "s.tif"), *args])
    assert again.exit_code == 0 and "already done" in again.output
    for cmd in (["predict", str(other), str(tmp_path / "s.tif"), *args],
                ["predict", str(run_dir), str(tmp_path / "s.tif"), *args, "--top-k", "3"]):
        res = runner.invoke(app, cmd)
        lines = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code == 2 and len(lines) == 1 and "--redo" in lines[0], res.output
        assert str(tmp_path / "out" / "slides" / "s" / "s.json") in lines[0]
    redo = runner.invoke(app, ["predict", str(other), str(tmp_path / "s.tif"), *args, "--redo"])
    assert redo.exit_code == 0 and "already done" not in redo.output


def test_an_image_and_a_slide_of_one_stem_never_share_a_file(run_dir, tmp_path) -> None:
    Image.fromarray(tissue_rgb(64, 64)).save(tmp_path / "slideA.png")
    small_slide(tmp_path / "slideA.tif")
    out = tmp_path / "out"
    result = predict(run_dir, [tmp_path / "slideA.png", tmp_path / "slideA.tif"], out,
                     device="cpu", num_workers=0, slide_options=SlideOptions(tile=64))
    image_files = {p.name for p in out.glob("slideA.*")}
    slide_files = {p.name for p in (out / "slides" / "slideA").iterdir()}
    assert {"slideA.map.npy", "slideA.overlay.png"} <= image_files
    assert {"slideA.map.npy", "slideA.overlay.png", "slideA.json"} <= slide_files
    np.testing.assert_array_equal(np.load(out / "slideA.map.npy").shape, (64, 64))  # the image's
    assert np.load(out / "slides" / "slideA" / "slideA.map.npy").shape == (20, 25)  # the slide's
    assert [r["output"] for r in rows(result.summary_csv)] == [str(out), str(out / "slides" / "slideA")]


# ------------------------------------------------------------------ numeric options
@pytest.mark.parametrize("option", [
    ["--mpp", "0"], ["--mpp", "-1"], ["--magnification", "0"], ["--slide-mpp", "0"],
    ["--tile", "0"], ["--tile", "4"], ["--overlap", "-8"], ["--tile", "64", "--overlap", "40"],
    ["--map-downsample", "0"], ["--min-tissue", "1.5"], ["--min-tissue", "-0.1"],
    ["--threshold", "1.5"], ["--batch-size", "0"], ["--workers", "-1"], ["--top-k", "0"],
    ["--tissue-threshold", "0"], ["--tissue-smooth", "-1"], ["--tissue-min-area", "-5"],
    ["--tissue-max-hole", "-1"], ["--tissue-close", "-2"], ["--region-smooth", "-1"],
    ["--region-min-area", "-1"], ["--overlay-scale", "p0"], ["--overlay-scale", "high"],
    ["--shard", "2/2"], ["--shard", "1"], ["--aggregation", "median"], ["--slide-map", "cam"],
    ["--backend", "bioformats"], ["--mpp", "0.5", "--magnification", "20"],
])
def test_out_of_range_options_are_one_error_line(run_dir, tmp_path, option) -> None:
    small_slide(tmp_path / "s.tif")
    res = CliRunner().invoke(app, ["predict", str(run_dir), str(tmp_path / "s.tif"), "--out",
                                   str(tmp_path / "o"), "--device", "cpu", "--workers", "0",
                                   "--quiet", *option])
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith("error: ") and option[-2] in lines[0]
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_a_bad_image_in_a_batch_is_named_and_the_others_predicted(run_dir, tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(tissue_rgb(40, 40)).save(folder / "a.png")
    (folder / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    result = predict(run_dir, [folder], tmp_path / "out", device="cpu", num_workers=0)
    assert [Path(f).name for f, _ in result.failures] == ["b.png"]
    assert "b.png" in result.failures[0][1]
    assert [r.split(",")[1] for r in result.images_csv.read_text().splitlines()[1:]] == ["a"]


def test_the_command_line_defaults_are_the_options_defaults() -> None:
    import inspect

    from histocam.cli.predict_command import predict_command
    from histocam.wsi.tissue import TissueOptions

    defaults = {k: p.default.default for k, p in inspect.signature(predict_command).parameters.items()
                if hasattr(p.default, "default")}
    tissue, slide = TissueOptions(), SlideOptions()
    assert (defaults["tissue_threshold"], defaults["tissue_smooth"], defaults["tissue_close"],
            defaults["tissue_max_hole"], defaults["tissue_min_area"]) == \
        (tissue.threshold, tissue.smooth_um, tissue.close_um, tissue.max_hole_um2,
         tissue.min_area_um2)
    for cli, field in [("map_downsample", "map_downsample"), ("min_tissue", "min_tissue"),
                       ("slide_map", "slide_map"), ("aggregation", "aggregation"),
                       ("top_k", "top_k"), ("region_smooth", "region_smooth_um"),
                       ("region_min_area", "region_min_area_um2"),
                       ("overlay_scale", "overlay_scale"), ("backend", "backend")]:
        assert defaults[cli] == getattr(slide, field), cli
