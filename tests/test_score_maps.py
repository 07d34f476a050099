"""``histocam score-maps``: saved maps scored per protocol; τ* from valpx only; clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from histocam.cli import app
from histocam.metrics import Batch, PixelHistogram, PxAP, best_threshold
from histocam.metrics.localization import localization_report


def _write(tmp: Path, name: str, maps: np.ndarray, masks: np.ndarray, skip_empty=True):
    md, kd = tmp / f"{name}_maps", tmp / f"{name}_masks"
    md.mkdir()
    kd.mkdir()
    for i, (m, k) in enumerate(zip(maps, masks)):
        np.save(md / f"img{i}.npy", m)
        if k.any() or not skip_empty:
            Image.fromarray(k.astype(np.uint8) * 255).save(kd / f"img{i}.png")
    return md, kd


def _data(seed, n=4, h=9, w=13):
    rng = np.random.default_rng(seed)
    masks = rng.random((n, h, w)) < 0.4
    maps = np.clip(masks * 0.3 + rng.random((n, h, w)) * 0.7, 0, 1).astype(np.float32)
    masks[1] = False
    return maps, masks


def test_score_maps_native_equals_accumulator(tmp_path: Path) -> None:
    maps, masks = _data(0)
    md, kd = _write(tmp_path, "test", maps, masks)
    result = CliRunner().invoke(app, ["score-maps", str(md), str(kd), "--native", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    acc = PxAP()
    acc.update(Batch(maps=torch.from_numpy(maps), masks=torch.from_numpy(masks)))
    assert out["pxap"] == pytest.approx(acc.compute()) and out["n_images"] == 4
    assert "tau_star_valpx" not in out and "oracle" in out["oracle_test_tau"]["note"]


def test_score_maps_resizes_to_protocol_size(tmp_path: Path) -> None:
    maps, masks = _data(1)
    md, kd = _write(tmp_path, "test", maps, masks)
    out = json.loads(CliRunner().invoke(app, ["score-maps", str(md), str(kd), "--size", "18",
                                              "--json"]).stdout)
    m = torch.nn.functional.interpolate(torch.from_numpy(maps)[:, None], (18, 18), mode="bilinear",
                                        align_corners=False)[:, 0]
    k = torch.nn.functional.interpolate(torch.from_numpy(masks).float()[:, None], (18, 18),
                                        mode="nearest")[:, 0] > 0.5
    acc = PxAP()
    acc.update(Batch(maps=m.clamp(0, 1), masks=k))
    assert out["pxap"] == pytest.approx(acc.compute())
    assert out["evaluated_at"] == "18x18"


def test_tau_star_comes_from_valpx_only(tmp_path: Path) -> None:
    vmaps, vmasks = _data(2)
    tmaps, tmasks = _data(3)
    vmd, vkd = _write(tmp_path, "valpx", vmaps, vmasks)
    md, kd = _write(tmp_path, "test", tmaps, tmasks)
    args = ["score-maps", str(md), str(kd), "--valpx-maps", str(vmd), "--valpx-masks", str(vkd),
            "--native", "--json"]
    first = json.loads(CliRunner().invoke(app, args).stdout)
    valpx = PixelHistogram()
    valpx.update(Batch(maps=torch.from_numpy(vmaps), masks=torch.from_numpy(vmasks)))
    assert first["tau_star_valpx"] == pytest.approx(best_threshold(valpx))
    # change every test mask: τ* must not move, the test scores must
    for f in kd.iterdir():
        f.unlink()
    flipped = ~tmasks
    for i, k in enumerate(flipped):
        Image.fromarray(k.astype(np.uint8) * 255).save(kd / f"img{i}.png")
    second = json.loads(CliRunner().invoke(app, args).stdout)
    assert second["tau_star_valpx"] == first["tau_star_valpx"]
    assert second["pxap"] != first["pxap"]
    # without --json: a table of the same numbers for a person, and no JSON
    table = CliRunner().invoke(app, args[:-1]).stdout
    row = next(line.split() for line in table.splitlines() if line.strip().startswith("4 "))
    assert row[:4] == ["4", f"{second['pxap']:.1f}", f"{second['chance']:.1f}",
                       f"{second['tau_star_valpx']:.3f}"]
    assert row[4:8] == [f"{second[k]:.1f}" for k in ("TP*", "FN*", "FP*", "TN*")]
    assert "{" not in table and "evaluated at native mask resolution" in table


def test_report_without_valpx_has_no_tau_star() -> None:
    hist = PixelHistogram()
    hist.update(Batch(maps=torch.rand(2, 3, 5), masks=torch.rand(2, 3, 5) > 0.5))
    report = localization_report(hist)
    assert report.tau_star_valpx is None and "tau_star_valpx" not in report.model_dump()
    assert "tau_star_valpx" not in json.loads(report.to_json())


@pytest.mark.parametrize("problem", ["nan", "range", "3d", "stray", "orphan_mask", "int"])
def test_invalid_files_exit_nonzero_naming_the_file(tmp_path: Path, problem: str) -> None:
    maps, masks = _data(4, n=2)
    md, kd = _write(tmp_path, "test", maps, masks)
    bad = {"nan": "img0.npy", "range": "img0.npy", "3d": "img0.npy", "int": "img0.npy",
           "stray": "notes.txt", "orphan_mask": "ghost.png"}[problem]
    if problem == "nan":
        m = maps[0].copy()
        m[0, 0] = np.nan
        np.save(md / bad, m)
    elif problem == "range":
        np.save(md / bad, maps[0] * 2 + 0.5)
    elif problem == "3d":
        np.save(md / bad, maps[:1])
    elif problem == "int":
        np.save(md / bad, (maps[0] > 0.5).astype(np.int64))
    elif problem == "stray":
        (md / bad).write_text("x")
    else:
        Image.fromarray(masks[0].astype(np.uint8)).save(kd / bad)
    result = CliRunner().invoke(app, ["score-maps", str(md), str(kd)])
    assert result.exit_code == 2
    assert bad in result.output and "error" in result.output
