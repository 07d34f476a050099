"""What the tests share, imported as ``helpers`` (the test folder is on ``sys.path``): paths of the
shared data, tiny files written by the tests themselves, the tiny run and pipeline configs, and the
two-process runner of the distributed tests. Fixtures are in conftest.py."""

from __future__ import annotations

import copy
import shutil
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

SHARED = Path(__file__).resolve().parents[2] / "shared"
GLAS_SHARED = SHARED / "data" / "glas-train"

#: A run small enough to train in about a second on a CPU core: a seeded CAM on the test backbone,
#: synthetic-colon tiles of 72 px cropped to 64, 8 train / 6 valcl / 4 test images, one epoch.
TINY_RUN: dict[str, Any] = {
    "name": "run", "seed": 0,
    "data": {"dataset": "synthetic-colon", "resize": 72, "crop": 64, "eval_size": 64,
             "synthetic": {"size": 72, "n_train": 8, "n_valcl": 6, "n_test": 4}},
    "method": {"name": "cam", "backbone": {"name": "test_resnet"}},
    "train": {"epochs": 1, "batch_size": 4, "num_workers": 0},
}


def merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``changes`` merged in: a dict merges into a dict, any other
    value replaces."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_run(out_dir: Path | str | None = None, **changes: Any) -> dict[str, Any]:
    """The tree of a tiny run config (``TINY_RUN``) under ``out_dir``, with ``changes`` merged in,
    e.g. ``tiny_run(tmp_path, name="r", method={"name": "has"}, data={"synthetic": {"n_test":
    2}})``."""
    tree = merged(TINY_RUN, changes)
    if out_dir is not None:
        tree["out_dir"] = str(out_dir)
    return tree


def stop_after_epoch(config: Any, epoch: int) -> Any:
    """Train ``config`` (a ``RunConfig``) and stop it with ``KeyboardInterrupt`` (Ctrl-C) once
    ``epoch`` has ended, as a user or a job scheduler does; returns the run's ``RunDir``."""
    from histocam.train import Trainer

    trainer = Trainer(config)
    train_epoch = trainer._train_epoch

    def interrupted(e: int, partial: dict | None = None) -> dict:
        if e == epoch + 1:
            raise KeyboardInterrupt
        return train_epoch(e, partial)

    trainer._train_epoch = interrupted
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    return config.run_dir


def tiny_pipeline(out_dir: Path | str, **changes: Any) -> dict[str, Any]:
    """The tree of a tiny pipeline config: ``TINY_RUN``'s data, backbone and training for both
    stages (a CAM teacher, a PixelCAM student), named ``p``, with ``changes`` merged in."""
    train = {"epochs": 1, "batch_size": 4, "num_workers": 0}
    tree = {"name": "p", "out_dir": str(out_dir), "seed": 0, "data": TINY_RUN["data"],
            "backbone": TINY_RUN["method"]["backbone"], "teacher": {"train": train},
            "student": {"train": train}}
    return merged(tree, changes)


def write_rgb(path: Path, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return image


def write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8)).save(path)


def tissue_rgb(h: int, w: int, seed: int = 0, tissue: np.ndarray | None = None) -> np.ndarray:
    """White glass with pink, textured tissue where ``tissue`` (default: everywhere)."""
    rng = np.random.default_rng(seed)
    pink = np.stack([rng.integers(150, 230, (h, w)), rng.integers(40, 140, (h, w)),
                     rng.integers(110, 200, (h, w))], axis=2).astype(np.uint8)
    if tissue is None:
        return pink
    return np.where(tissue[..., None], pink, np.uint8(245))


def write_slide(path: Path, rgb: np.ndarray, mpp: float | None = 0.5) -> Path:
    """A tiled pyramidal TIFF (level 0 and a 4× level as successive pages, as OpenSlide reads
    generic TIFF); ``mpp`` None: no resolution (a slide that records no MPP)."""
    def resolution(downsample: int) -> dict:
        if mpp is None:
            return {"resolutionunit": "NONE"}
        per_cm = 1e4 / (mpp * downsample)
        return {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}

    with tifffile.TiffWriter(path) as tw:
        tw.write(rgb, tile=(64, 64), photometric="rgb", compression="zlib", **resolution(1))
        tw.write(rgb[::4, ::4], tile=(64, 64), photometric="rgb", compression="zlib",
                 subfiletype=1, **resolution(4))
    return path


def predict_run(root: Path, name: str = "r", seed: int = 1, **data: Any) -> Path:
    """A run directory of a (randomly initialised, seeded) CAM on synthetic-node at eval size 64,
    with its three checkpoints and an evaluation recording τ* = 0.4: what the trainer and
    `histocam evaluate` leave, for `histocam predict`. ``data``: more ``data`` keys (``mpp``)."""
    from histocam.core.results import EvaluationResult
    from histocam.methods.catalog import create_method
    from histocam.metrics import Batch, ClassificationAccuracy, PixelHistogram
    from histocam.metrics.localization import localization_report
    from histocam.train import RunConfig

    cfg = RunConfig.model_validate(tiny_run(
        root, name=name, seed=seed,
        data={"dataset": "synthetic-node", "synthetic": {"n_valcl": 4}, **data},
        method={"backbone": {"pretrained": False}}))
    run = cfg.run_dir
    run.write_config(cfg.to_yaml())
    for k, ckpt in enumerate(("best-loc", "best-cl", "last")):
        torch.manual_seed(10 * (seed - 1) + k)
        method = create_method(cfg.method.for_inference(), 2)
        run.save_checkpoint(ckpt, {"model": method.state_dict(), "epoch": 1,
                                   "class_names": ["normal", "tumor"],
                                   "config": cfg.model_dump(mode="json")})
    hist = PixelHistogram()
    hist.update(Batch(maps=torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0)),
                      masks=torch.arange(128).reshape(2, 8, 8) % 3 == 0))
    localization = localization_report(hist, hist).model_copy(update={"tau_star_valpx": 0.4})
    run.write_evaluation(EvaluationResult(
        run=str(run), checkpoint="best-loc", split="test", method="cam", data=cfg.data.dataset,
        classification=ClassificationAccuracy(2).compute(), localization=localization))
    return run.root


def files_under(directory: Path) -> list[str]:
    """Every file under ``directory``, hidden ones (temporary or part files) included."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


# ---------------------------------------------------------------- two processes, one gloo group
def _start_method() -> str:
    """``fork`` where it is safe: children start in well under a second instead of re-importing
    torch and histocam (~5 s each, more on a loaded machine). ``spawn`` after CUDA is initialised
    (CUDA cannot be used in a forked child) or where fork does not exist."""
    if "fork" in mp.get_all_start_methods() and not torch.cuda.is_initialized():
        return "fork"
    return "spawn"


def _rank_main(rank: int, world: int, store: str, target: Callable, args: tuple, out) -> None:
    try:
        torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                world_size=world)
        dist.barrier()  # every rank connected before any rank can leave
        try:
            result = target(rank, world, *args)
            dist.barrier()  # no rank leaves while another still talks to it
        finally:
            dist.destroy_process_group()
        out.put((rank, True, result))
    except BaseException:
        out.put((rank, False, traceback.format_exc()))


def run_ranks(target: Callable, *args: Any, world: int = 2, timeout: float = 120) -> list[Any]:
    """``[target(rank, world, *args) for each rank]``, each rank in its own process of one gloo
    process group; a rank's exception fails the caller with that rank's traceback. The ranks meet
    through a file of their own (a TCP port chosen free can be taken by another job on a shared
    machine before the ranks meet on it)."""
    ctx = mp.get_context(_start_method())
    queue = ctx.Queue()
    store = Path(tempfile.mkdtemp(prefix="histocam-ranks-")) / "store"
    procs = [ctx.Process(target=_rank_main, args=(r, world, str(store), target, args, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    try:
        replies = [queue.get(timeout=timeout) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        shutil.rmtree(store.parent, ignore_errors=True)
    replies.sort(key=lambda reply: reply[0])
    failed = [f"rank {rank} failed:\n{value}" for rank, ok, value in replies if not ok]
    assert not failed, "\n".join(failed)
    results: list[Any] = [None] * world
    for rank, _, value in replies:
        results[rank] = value
    return results
