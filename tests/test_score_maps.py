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


@pytest.mark.parametrize("second", ["img0.tif", "img0.bmp"])
def test_two_masks_of_one_id_are_an_error_naming_both(tmp_path: Path, second: str) -> None:
    maps, masks = _data(5, n=2)
    md, kd = _write(tmp_path, "test", maps, masks, skip_empty=False)
    Image.fromarray(masks[0].astype(np.uint8) * 255).save(kd / second)
    result = CliRunner().invoke(app, ["score-maps", str(md), str(kd)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    line = " ".join(result.output.split())
    assert str(kd / "img0.png") in line and str(kd / second) in line and "second mask" in line


def test_two_float_maps_of_one_id_are_an_error(tmp_path: Path) -> None:
    maps, masks = _data(6, n=2)
    md, kd = _write(tmp_path, "test", maps, masks)
    np.save(md / "img0.map.npy", maps[0])
    result = CliRunner().invoke(app, ["score-maps", str(md), str(kd)])
    assert result.exit_code == 2, result.output
    line = " ".join(result.output.split())
    assert "img0.map.npy" in line and "img0.npy" in line and "second map" in line


def _random_run(root: Path) -> Path:
    """A run directory of a seeded, untrained CAM (eval size 48): what predict needs."""
    from histocam.methods.catalog import create_method
    from histocam.train import RunConfig

    cfg = RunConfig.model_validate({
        "name": "r", "out_dir": str(root), "seed": 1, "device": "cpu",
        "data": {"dataset": "synthetic-colon", "resize": 48, "crop": 48, "eval_size": 48},
        "method": {"name": "cam", "backbone": {"name": "test_resnet", "pretrained": False}}})
    run = cfg.run_dir
    run.write_config(cfg.to_yaml())
    torch.manual_seed(0)
    state = create_method(cfg.method.for_inference(), 2).state_dict()
    for name in ("best-loc", "best-cl"):
        run.save_checkpoint(name, {"model": state, "epoch": 1,
                                   "class_names": ["benign", "malignant"]})
    return run.root


def test_score_maps_reads_every_map_format_predict_writes(tmp_path: Path) -> None:
    """``histocam predict``'s output folder is a maps folder: its float16 ``.map.npy`` maps are
    scored as float32, its 8-bit ``.map.png`` maps as value / 255, its other files passed over."""
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    for name, shape in (("a", (40, 56)), ("b", (48, 48))):
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(images / f"{name}.png")
    out = tmp_path / "predicted"
    result = CliRunner().invoke(app, ["predict", str(_random_run(tmp_path / "runs")), str(images),
                                      "--out", str(out), "--device", "cpu", "--workers", "0",
                                      "--threshold", "0.5", "--quiet"])
    assert result.exit_code == 0, result.output
    float_maps = sorted(out.glob("*.map.npy"))
    assert len(float_maps) == 2 and np.load(float_maps[0]).dtype == np.float16
    masks = tmp_path / "masks"
    masks.mkdir()
    expected_npy, expected_png = PxAP(), PxAP()
    for path in float_maps:
        image_id = path.name.removesuffix(".map.npy")
        values = np.load(path).astype(np.float32)
        mask = rng.random(values.shape) < 0.3
        Image.fromarray(mask.astype(np.uint8) * 255).save(masks / f"{image_id}.png")
        expected_npy.update(Batch(maps=torch.from_numpy(values)[None],
                                  masks=torch.from_numpy(mask)[None]))
        png = np.asarray(Image.open(out / f"{image_id}.map.png"), np.float32) / 255
        expected_png.update(Batch(maps=torch.from_numpy(png)[None],
                                  masks=torch.from_numpy(mask)[None]))
    scored = CliRunner().invoke(app, ["score-maps", str(out), str(masks), "--native",
                                      "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["pxap"] == pytest.approx(expected_npy.compute())
    pngs = tmp_path / "png-maps"  # the 8-bit maps alone
    pngs.mkdir()
    for path in out.glob("*.map.png"):
        (pngs / path.name).write_bytes(path.read_bytes())
    scored = CliRunner().invoke(app, ["score-maps", str(pngs), str(masks), "--native",
                                      "--json"])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["pxap"] == pytest.approx(expected_png.compute())
