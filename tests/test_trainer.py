"""Trainer: outputs, model selection, resume == uninterrupted, bad samples, config strictness."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import stop_after_epoch, tiny_run, write_rgb
from typer.testing import CliRunner

from histocam.cli import app
from histocam.core.atomic import CheckpointError, load_checkpoint, save_checkpoint
from histocam.core.configs import apply_overrides
from histocam.metrics import Batch, PixelHistogram, PxAP
from histocam.runs import Run
from histocam.train import RunConfig, Trainer, load_run_config


class EvilPayload:
    """An arbitrary Python object: refused by weights_only loading."""


def tiny_config(tmp_path: Path, name: str = "r", **train) -> RunConfig:
    return RunConfig.model_validate(tiny_run(
        tmp_path, name=name, seed=3, deterministic=True,
        data={"synthetic": {"n_train": 12, "n_valcl": 8, "n_test": 6}},
        train={"epochs": 3, "lr": 0.05, **train}))



def _log(run_dir: Path) -> list[dict]:
    with (run_dir / "log.csv").open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_training_writes_run_directory_and_selects(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    best = Trainer(cfg).fit()
    run = cfg.run_dir
    assert (run.root / "config.yaml").is_file() and run.config == run.root / "config.yaml"
    assert RunConfig.model_validate(__import__("yaml").safe_load(run.config.read_text()))
    rows = _log(run.root)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    pxaps = [float(r["valpx_pxap"]) for r in rows]
    accs = [float(r["valcl_accuracy"]) for r in rows]
    # B-LOC = best valpx PxAP, ties -> the later epoch; same for B-CL with accuracy
    assert best["loc_epoch"] == max(i for i, p in enumerate(pxaps) if p == max(pxaps))
    assert best["cl_epoch"] == max(i for i, a in enumerate(accs) if a == max(accs))
    loc = load_checkpoint(run.root / "checkpoints" / "best-loc.pt")
    assert loc["epoch"] == best["loc_epoch"] and "optimizer" not in loc
    assert "optimizer" in load_checkpoint(run.root / "checkpoints" / "last.pt")
    method, names = Run(run).method("best-cl")
    assert names == ["benign", "malignant"] and Run(run).config.method.name == "cam"


@pytest.mark.slow
def test_resume_equals_uninterrupted(tmp_path: Path) -> None:
    full = tiny_config(tmp_path, "full")
    Trainer(full).fit()
    part = tiny_config(tmp_path, "part")
    stop_after_epoch(part, 1)  # Ctrl-C
    assert not part.run_dir.lock_file.exists()  # released on the way out
    resumed = tiny_config(tmp_path, "part")
    Trainer(resumed).fit(resume=True)
    a, b = _log(full.run_dir.root), _log(resumed.run_dir.root)
    assert [r["epoch"] for r in b] == ["0", "1", "2", "3"]
    for key in ("valpx_pxap", "valcl_accuracy", "train_loss"):
        assert [r[key] for r in a] == [r[key] for r in b], key
    wa = full.run_dir.load_checkpoint("last")["model"]
    wb = resumed.run_dir.load_checkpoint("last")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_existing_run_is_not_overwritten(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, epochs=0)
    Trainer(cfg).fit()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(cfg).fit()


@pytest.mark.slow
def test_evaluate_command_outputs(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, epochs=1)
    Trainer(cfg).fit()
    result = CliRunner().invoke(app, ["evaluate", str(cfg.run_dir), "--checkpoint", "best-loc",
                                      "--save-maps", "--separability"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((cfg.run_dir.root / "metrics" / "best-loc-test.json").read_text())
    assert Run(cfg.run_dir).dir.read_evaluation("best-loc").model_dump() == metrics
    loc = metrics["localization"]
    assert 0 <= loc["pxap"] <= 100 and "tau_star_valpx" in loc
    assert loc["oracle_test_tau"]["note"].startswith("threshold chosen on the evaluated set")
    assert metrics["classification"]["n_images"] == 6
    assert "J = tr(S_B)/tr(S_W)" in metrics["separability"]["definition"]
    with (cfg.run_dir.root / "metrics" / "best-loc-test-per-image.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6 and all(r["ap"] != "" for r in rows)
    maps = np.load(cfg.run_dir.root / "metrics" / "best-loc-test-maps.npz")
    assert len(maps.files) == 6 and all(maps[k].shape == (64, 64) for k in maps.files)
    # chance and the per-class scores, recomputed from the saved maps and the test masks
    from histocam.data.open import open_source
    from histocam.data.transforms import JointTransform

    test = open_source(cfg.data).dataset("test")
    items = [JointTransform.from_config(cfg.data, train=False)(test[i]) for i in range(len(test))]
    masks = {it["id"]: it["mask"] > 0.5 for it in items}
    assert loc["chance"] == pytest.approx(100 * float(torch.stack(list(masks.values())).double()
                                                      .mean()), abs=1e-9)
    for c, name in enumerate(["benign", "malignant"]):
        ids = [it["id"] for it in items if int(it["label"]) == c]
        ref = PxAP()
        ref.update(Batch(maps=torch.stack([torch.from_numpy(maps[k.replace("/", "__")]).float()
                                for k in ids]), masks=torch.stack([masks[k] for k in ids])))
        got = loc["per_class"][name]
        assert got["n_images"] == len(ids)
        assert got["pxap"] == pytest.approx(ref.compute(), abs=0.05)  # saved maps are float16
        per_image = [float(r["ap"]) for r in rows if r["id"] in ids]
        assert got["mean_image_ap"] == pytest.approx(np.mean(per_image), abs=1e-3)
    assert (cfg.run_dir.root / "metrics" / "best-loc-test-curves.png").is_file()
    # a table for a person: the stored numbers, rounded, and where the files went
    row = next(line.split() for line in result.stdout.splitlines()
               if line.strip().startswith("B-LOC"))
    cl = metrics["classification"]
    assert row[1:3] == [f"{cl['accuracy']:.1f}", "50.0"]  # CL, and always the majority class
    assert row[3:6] == [f"{loc['pxap']:.1f}", f"{loc['chance']:.1f}", f"{loc['tau_star_valpx']:.3f}"]
    assert row[6:10] == [f"{loc[k]:.1f}" for k in ("TP*", "FN*", "FP*", "TN*")]
    assert row[-1] == f"{metrics['separability']['mean']:.3f}"
    assert "data: synthetic-colon (the run's own)" in result.stdout
    assert f"wrote: {cfg.run_dir.evaluation('best-loc').json}" in result.stdout
    assert "{" not in result.stdout  # no JSON unless asked
    # --json: one line per checkpoint, for programs
    result = CliRunner().invoke(app, ["evaluate", str(cfg.run_dir), "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["checkpoint"] for r in lines] == ["best-loc", "best-cl"]
    assert lines[0]["pxap"] == loc["pxap"] and lines[0]["TP*"] == loc["TP*"]
    assert lines[0]["tau_star_valpx"] == loc["tau_star_valpx"]
    assert lines[0]["dice_fg_at_tau_star"] == loc["at_tau_star_valpx"]["dice_fg"]


def test_bad_samples_are_skipped_and_logged(tmp_path: Path, caplog) -> None:
    data = tmp_path / "d"
    for i in range(8):
        write_rgb(data / f"{i}.png", 40, 40, i)
    (data / "3.png").write_bytes(b"not a png")
    rows = [f"{i}.png,{i % 2},background,{'train' if i < 6 else 'valcl'}" for i in range(8)]
    rows += ["6.png,0,background,valpx", "7.png,1,background,valpx"]
    (data / "set.csv").write_text("image,label,mask,split\n" + "\n".join(rows) + "\n")
    base = {"name": "bad", "out_dir": str(tmp_path / "runs"),
            "data": {"dataset": str(data / "set.csv"), "resize": 36, "crop": 32, "eval_size": 32},
            "method": {"name": "gap", "backbone": {"name": "test_resnet"}},
            "train": {"epochs": 1, "batch_size": 3, "num_workers": 0}}
    with caplog.at_level("WARNING", logger="histocam"):
        Trainer(RunConfig.model_validate(base)).fit()
    assert any("3.png" in r.message for r in caplog.records)
    base["name"] = "bad2"
    base["train"]["on_bad_sample"] = "error"
    with pytest.raises(Exception, match="3.png"):
        Trainer(RunConfig.model_validate(base)).fit()


def test_config_unknown_keys_and_overrides(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("name: x\ntrain: {epochs: 2}\nmethod: {name: lse, q: 3}\n")
    cfg = load_run_config(tmp_path / "r.yaml", ["train.epochs=5", "method.q=7.5",
                                                "method.backbone.name=resnet50"])
    assert cfg.train.epochs == 5 and cfg.method.q == 7.5 and cfg.method.backbone.name == "resnet50"
    assert "q: 7.5" in cfg.to_yaml()
    with pytest.raises(ValueError, match=r"^override train\.epoch=5: unknown key; did you mean "
                       r"train\.epochs\?$"):
        load_run_config(tmp_path / "r.yaml", ["train.epoch=5"])
    (tmp_path / "bad.yaml").write_text("train: {epoch: 2}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: invalid config: train\.epoch: unknown key; "
                       r"did you mean train\.epochs\?"):
        load_run_config(tmp_path / "bad.yaml", ["train.epochs=5"])
    with pytest.raises(ValueError, match="not key=value"):
        apply_overrides({}, ["train.epochs"])
    with pytest.raises(FileNotFoundError):
        load_run_config(tmp_path / "nope.yaml")


def test_checkpoint_is_atomic_and_weights_only(tmp_path: Path) -> None:
    path = save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 1}, tmp_path / "c" / "x.pt")
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["x.pt"]  # no temporary left behind

    torch.save({"obj": EvilPayload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt: cannot load checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")
    assert issubclass(CheckpointError, ValueError)  # a user error: one line on the command line


def test_cli_train(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, "cli", epochs=1)
    (tmp_path / "run.yaml").write_text(cfg.to_yaml())
    result = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "run.yaml"),
                                      "train.epochs=1", "name=cli2"])
    assert result.exit_code == 0, result.output
    assert "B-LOC epoch" in result.output and (tmp_path / "cli2" / "checkpoints").is_dir()
    bad = CliRunner().invoke(app, ["train", "--config", str(tmp_path / "run.yaml"), "nope=1"])
    assert bad.exit_code == 2 and "nope" in bad.output


POOLING = ["cam", "gap", "maxpool", "lse", "wildcat", "deepmil", "prm"]


@pytest.mark.skipif(not __import__("helpers").GLAS_SHARED.is_dir(),
                    reason="shared GlaS copy absent")
@pytest.mark.slow
@pytest.mark.parametrize("name", POOLING)
def test_pooling_methods_train_on_shared_glas(tmp_path: Path, name: str) -> None:
    from helpers import GLAS_SHARED

    tree = tiny_run(tmp_path, name=name, method={"name": name},
                    train={"batch_size": 6, "max_steps_per_epoch": 2})
    tree["data"] = {"dataset": str(GLAS_SHARED), "resize": 72, "crop": 64, "eval_size": 64}
    cfg = RunConfig.model_validate(tree)
    Trainer(cfg).fit()
    for ckpt in ("best-loc", "best-cl", "last"):
        assert cfg.run_dir.checkpoint(ckpt).is_file()
    method, _ = Run(cfg.run_dir).method("best-loc")
    from histocam.data.open import open_source
    from histocam.train.split_pass import evaluate_split

    kept = {}
    pixels = PixelHistogram()
    evaluate_split(method, open_source(cfg.data).dataset("valpx"), cfg.data,
                   torch.device("cpu"), {"pixels": pixels}, map_sink=kept.__setitem__)
    maps = torch.stack(list(kept.values()))
    assert maps.shape[1:] == (64, 64) and torch.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1 and pixels.pxap is not None
