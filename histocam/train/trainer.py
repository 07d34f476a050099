"""The training loop with the seed papers' model selection (PROTOCOL.md, "Model selection").

Evaluation at epoch 0 (before training) and after every epoch: accuracy on valcl (B-CL) and PxAP on
valpx (B-LOC); ties go to the later epoch. Checkpoints ``best-loc.pt``, ``best-cl.pt`` and
``last.pt`` (with optimizer state, for ``resume``) are written atomically; ``log.csv`` has one row
per epoch. Shuffling and augmentation of epoch e depend only on (seed, e), so a resumed run
continues exactly as the uninterrupted one would (deterministic mode on).
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from histocam.cams.store import load_cams
from histocam.data.open import negative_class, open_source
from histocam.data.transforms import JointTransform
from histocam.methods.base import WSOLMethod
from histocam.methods.registry import create_method
from histocam.train.checkpoint import load_checkpoint, save_checkpoint
from histocam.train.config import RunConfig
from histocam.train.evaluate import evaluate_split
from histocam.train.loader import make_loader
from histocam.train.seeding import resolve_device, seed_everything, set_deterministic

log = logging.getLogger("histocam")
console = Console()
CHECKPOINTS = ("best-loc", "best-cl", "last")


def build_method(config: RunConfig, num_classes: int) -> WSOLMethod:
    """The method of a run, started from ``config.init`` (a checkpoint's weights) when set."""
    method = create_method(config.method, num_classes)
    if config.init is not None:
        method.load_initial_state(load_checkpoint(config.init)["model"])
    return method


class Trainer:
    """Trains ``config``; supplies what the method's batches need: ``batch["cam"]`` (the stored
    teacher map, transformed with its image) for methods with ``needs_cams``, and
    ``batch["negative"]`` (images of the dataset's fully negative class, if it has one)."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        set_deterministic(config.deterministic)
        seed_everything(config.seed)
        self.source = open_source(config.data)
        self.class_names = self.source.class_names
        self.method = build_method(config, len(self.class_names)).to(self.device)
        self.cams = None  # id -> stored teacher map
        if config.cams is not None:
            self.cams = load_cams(config.cams, config.data, "train",
                                  self.source.dataset("train").ids)
        self.negative_class = negative_class(config.data, self.class_names)
        groups = self.method.parameter_groups()
        t = config.train
        for group in groups:
            group["lr"] = t.lr * (t.head_lr_multiplier if group["role"] == "head" else 1.0)
        self.optimizer = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum,
                                         nesterov=t.nesterov and t.momentum > 0,
                                         weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, t.lr_step, t.lr_gamma)
        self.use_amp = t.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.run_dir = Path(config.run_dir)
        self.best = {"pxap": float("-inf"), "accuracy": float("-inf"), "loc_epoch": None,
                     "cl_epoch": None}

    # ------------------------------------------------------------------ public
    def fit(self, resume: bool = False) -> dict[str, Any]:
        start = self._prepare_run_dir(resume)
        if start == 0:
            self._evaluate_and_select(0, {}, 0.0)
            start = 1
        for epoch in range(start, self.config.train.epochs + 1):
            began = time.perf_counter()
            train_stats = self._train_epoch(epoch)
            self.method.on_epoch_end(epoch)
            self.scheduler.step()
            self._evaluate_and_select(epoch, train_stats, time.perf_counter() - began)
        return dict(self.best)

    # ------------------------------------------------------------------ internals
    def _prepare_run_dir(self, resume: bool) -> int:
        ckpt = self.run_dir / "checkpoints" / "last.pt"
        if resume:
            if not ckpt.is_file():
                raise FileNotFoundError(f"cannot resume: {ckpt} does not exist")
            state = load_checkpoint(ckpt, self.device)
            self.method.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.best = dict(state["best"])
            self._truncate_log(state["epoch"])
            console.print(f"resuming {self.run_dir} after epoch {state['epoch']}")
            return state["epoch"] + 1
        if ckpt.exists():
            raise FileExistsError(f"{self.run_dir} already holds a run: pass --resume to continue it "
                                  "or choose another name")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(self.config.to_yaml())
        (self.run_dir / "log.csv").unlink(missing_ok=True)
        return 0

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        t = self.config.train
        seed_everything(self.config.seed * 100_003 + epoch)  # augmentation RNG of this epoch
        loader = make_loader(
            self.source.dataset("train"), JointTransform.from_config(self.config.data, train=True),
            t.batch_size, shuffle=True, num_workers=t.num_workers,
            seed=self.config.seed * 100_003 + epoch, on_bad_sample=t.on_bad_sample, cams=self.cams,
            drop_last=len(self.source.dataset("train")) > t.batch_size,
        )
        self.method.train()
        totals: dict[str, float] = {}
        n_seen, n_correct, steps = 0, 0, 0
        bar = Progress(TextColumn(f"epoch {epoch}"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), transient=True, console=console,
                       disable=not console.is_terminal)
        total = len(loader) if not t.max_steps_per_epoch else min(len(loader),
                                                                   t.max_steps_per_epoch)
        task = bar.add_task("train", total=total)
        bar.start()
        for batch in loader:
            bar.advance(task)
            if batch is None:
                continue
            batch = {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v)
                     for k, v in batch.items()}
            if self.negative_class is not None:
                batch["negative"] = batch["label"] == self.negative_class
            batch = self.method.prepare_batch(batch)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
                loss, parts, output = self.method.training_step(batch)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            b = batch["image"].shape[0]
            n_seen += b
            n_correct += int((output.logits.argmax(1) == batch["label"]).sum())
            for key, value in {"loss": float(loss.detach()), **parts}.items():
                totals[key] = totals.get(key, 0.0) + value * b
            steps += 1
            if t.max_steps_per_epoch and steps >= t.max_steps_per_epoch:
                break
        bar.stop()
        stats = {f"train_{k}": v / max(n_seen, 1) for k, v in totals.items()}
        stats["train_accuracy"] = 100.0 * n_correct / max(n_seen, 1)
        return stats

    def _evaluate_and_select(self, epoch: int, train_stats: dict, seconds: float) -> None:
        t = self.config.train
        valcl = evaluate_split(self.method, self.source.dataset("valcl"), self.config.data,
                               self.device, batch_size=t.eval_batch_size, localize=False,
                               num_workers=t.num_workers, on_bad_sample=t.on_bad_sample)
        valpx = evaluate_split(self.method, self.source.dataset("valpx"), self.config.data,
                               self.device, batch_size=t.eval_batch_size,
                               num_workers=t.num_workers, on_bad_sample=t.on_bad_sample)
        accuracy = valcl.accuracy.compute()["accuracy"]
        pxap = valpx.pxap
        row: dict[str, Any] = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"],
                               **train_stats, "valcl_accuracy": accuracy,
                               "valpx_pxap": pxap if pxap is not None else "", "seconds": seconds}
        metrics = {"valcl_accuracy": accuracy, "valpx_pxap": pxap}
        saved = []
        if pxap is not None and pxap >= self.best["pxap"]:
            self.best.update(pxap=pxap, loc_epoch=epoch)
            self._save("best-loc", epoch, metrics)
            saved.append("B-LOC")
        if accuracy >= self.best["accuracy"]:
            self.best.update(accuracy=accuracy, cl_epoch=epoch)
            self._save("best-cl", epoch, metrics)
            saved.append("B-CL")
        self._save("last", epoch, metrics, full=True)
        row["selected"] = "+".join(saved)
        self._append_log(row)
        pxap_text = f"{pxap:.2f}" if pxap is not None else "n/a"
        loss_text = f" loss {train_stats['train_loss']:.4f}" if "train_loss" in train_stats else ""
        console.print(f"epoch {epoch:3d}{loss_text}  valcl acc {accuracy:6.2f}  valpx PxAP "
                      f"{pxap_text:>6}  {seconds:6.1f}s  {' '.join(saved)}", highlight=False)

    def _save(self, which: str, epoch: int, metrics: dict, full: bool = False) -> None:
        state: dict[str, Any] = {
            "model": self.method.state_dict(), "epoch": epoch, "metrics": metrics,
            "config": self.config.model_dump(mode="json"), "class_names": self.class_names,
        }
        if full:
            state.update(optimizer=self.optimizer.state_dict(),
                         scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(),
                         best=dict(self.best))
        save_checkpoint(state, self.run_dir / "checkpoints" / f"{which}.pt")

    def _append_log(self, row: dict[str, Any]) -> None:
        path = self.run_dir / "log.csv"
        rows = []
        if path.is_file():
            with path.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
        rows.append({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
        fields: list[str] = []
        for r in rows:
            fields.extend(k for k in r if k not in fields)
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(path)

    def _truncate_log(self, last_epoch: int) -> None:
        path = self.run_dir / "log.csv"
        if not path.is_file():
            return
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            fields, rows = reader.fieldnames or [], [r for r in reader
                                                     if int(r["epoch"]) <= last_epoch]
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
