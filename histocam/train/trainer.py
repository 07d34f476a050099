"""The training loop with the seed papers' model selection (docs/protocol.md, "Model selection").

Evaluation at epoch 0 (before training) and after every epoch: accuracy on valcl (B-CL) and PxAP on
valpx (B-LOC); ties go to the later epoch. The B-LOC, B-CL and last checkpoints (the last with
optimizer, scheduler and scaler state) are written atomically, and the training log has one row per
epoch; where they go is the run's ``RunDir``.

**Resume is exact, and possible in the middle of an epoch.** Epochs on real data are long (24k
CAMELYON16 patches: ~750 steps of 32), so losing up to a whole epoch to a crash or a preempted job
is costly; every ``train.checkpoint_every`` steps the trainer also writes the resume state: the
model, optimiser, scheduler and scaler, the epoch and the number of batches done in it, each rank's
running training sums of the epoch, and every process-global random generator of every rank
(Python, NumPy, torch CPU and GPU). ``--resume`` continues from the newer of the last checkpoint
(an epoch end) and the resume state. Nothing else needs saving, because the rest is a function of
the seed:

- the sample order of epoch e is the ``DistributedSampler`` permutation of (seed, e), and a
  resumed epoch skips the batches already done (``loader.make_train_loader``);
- the augmentation of each sample is seeded by (seed, e, index), so loader workers, whose own state
  is lost with the process, hold no state that matters;
- the global generators (dropout, a method's draws) are re-seeded at each epoch start, and restored
  from the resume state in the middle of one.

In deterministic mode a run killed at any point and resumed writes the same log metrics and
the same final weights as the run that was never interrupted (tests/test_resume.py). A mid-epoch
resume needs the same number of processes and batch size (the batches of each rank depend on
them); an epoch-end resume does not.

Under ``torchrun`` the trainer is data-parallel (``distributed.py``): each rank trains on
``batch_size / N`` samples of the global batch, metrics are merged across ranks through the metric
protocol (``Metric.sync``) before B-LOC/B-CL are decided, and only rank 0 writes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from histocam.core import collectives, progress
from histocam.core.atomic import CheckpointError, load_checkpoint
from histocam.core.collectives import all_gather_objects, all_reduce_sum
from histocam.core.configs import describe_invalid
from histocam.core.devices import command_device
from histocam.core.rundir import LABEL, RESUME, RunError
from histocam.data.errors import DataError
from histocam.data.open import negative_class, open_source
from histocam.data.transforms import JointTransform
from histocam.maps.store import load_cams
from histocam.methods.base import WSOLMethod
from histocam.methods.catalog import create_method
from histocam.metrics.classification import ClassificationAccuracy
from histocam.metrics.histogram import PixelHistogram
from histocam.train import distributed
from histocam.train.loader import (
    check_bad_samples,
    check_training_splits,
    make_train_loader,
    train_batches,
)
from histocam.train.memory import fit_batch
from histocam.train.run_config import RESUMABLE_KEYS, RunConfig, config_changes
from histocam.train.seeding import (
    epoch_seed,
    rng_state,
    seed_everything,
    set_deterministic,
    set_rng_state,
)
from histocam.train.split_pass import evaluate_split

log = logging.getLogger("histocam")


def build_method(config: RunConfig, num_classes: int) -> WSOLMethod:
    """The method of a run, started from ``config.init`` (a checkpoint's weights) when set."""
    method = create_method(config.method, num_classes)
    if config.init is not None:
        try:
            method.load_initial_state(load_checkpoint(config.init, needs=("model",))["model"])
        except RuntimeError as exc:  # another architecture's weights
            raise CheckpointError(f"{config.init}: its weights do not fit method "
                                  f"{config.method.name!r} ({str(exc).splitlines()[0]})") from exc
    return method


class Trainer:
    """Trains ``config``; supplies what the method's batches need: ``batch["cam"]`` (the stored
    teacher map, transformed with its image) for methods with ``needs_cams``, and
    ``batch["negative"]`` (images of the dataset's fully negative class, if it has one)."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        t = config.train
        self.device = command_device(config.device)
        self.dist = collectives.setup(self.device)
        if t.batch_size % self.dist.world:
            raise ValueError(f"train.batch_size {t.batch_size} is not divisible by the "
                             f"{self.dist.world} processes (each trains on batch_size / processes)")
        set_deterministic(config.deterministic)
        seed_everything(config.seed)
        self.source = open_source(config.data)
        check_training_splits(self.source, config.data.dataset)
        self.class_names = self.source.class_names
        self.method = build_method(config, len(self.class_names)).to(self.device)
        if self.dist.active:
            distributed.convert_batchnorm(self.method)
            distributed.broadcast_module(self.method)
        self.cams = None  # id -> stored teacher map
        if config.cams is not None:
            self.cams = load_cams(config.cams, config.data, "train",
                                  self.source.dataset("train").ids)
        self.negative_class = negative_class(config.data, self.class_names)
        groups = self.method.parameter_groups()
        for group in groups:
            group["lr"] = t.lr * (t.head_lr_multiplier if group["role"] == "head" else 1.0)
        self.optimizer = torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum,
                                         nesterov=t.nesterov and t.momentum > 0,
                                         weight_decay=t.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, t.lr_step, t.lr_gamma)
        self.use_amp = t.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.run_dir = config.run_dir
        self.best = {"pxap": float("-inf"), "accuracy": float("-inf"), "loc_epoch": None,
                     "cl_epoch": None}
        self.rows: list[dict[str, Any]] = []  # the log's rows, saved in every "last" checkpoint
        self.warned = False  # the method's training warnings are logged once per run
        self.eval_batches: dict[bool, int] | None = None  # localize -> batch (memory budget)

    # ------------------------------------------------------------------ public
    def fit(self, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
        """Train the run: a fresh one, or (``resume``) the one in its directory from where it
        stopped. A fresh run never replaces a run's results unless ``overwrite``. The run's lock
        is held throughout (``RunDir.lock``)."""
        if resume and overwrite:
            raise ValueError("--resume continues a run and --overwrite replaces it: pass one")
        try:
            with self.run_dir.lock("training"):
                start, partial = self._prepare_run_dir(resume, overwrite)
                if start == 0:
                    self._evaluate_and_select(0, {}, 0.0)
                    start = 1
                epochs = self.config.train.epochs
                with progress.task(f"{self.config.name}: epochs", epochs, start - 1) as all_epochs:
                    for epoch in range(start, epochs + 1):
                        began = time.perf_counter()
                        train_stats = self._train_epoch(epoch, partial if epoch == start else None)
                        self._warn(epoch, train_stats)
                        self.method.on_epoch_end(epoch)
                        self.scheduler.step()
                        self._evaluate_and_select(epoch, train_stats, time.perf_counter() - began)
                        all_epochs.advance()
                collectives.barrier()
        finally:
            collectives.teardown(self.dist)
        return dict(self.best)

    # ------------------------------------------------------------------ internals
    def _prepare_run_dir(self, resume: bool, overwrite: bool) -> tuple[int, dict | None]:
        """(first epoch to train, the mid-epoch state to continue it from or None)."""
        run = self.run_dir
        if resume:
            if not run.has_started():
                raise FileNotFoundError(f"cannot resume: {run.checkpoint('last')} does not exist")
            full = ("model", "optimizer", "scheduler", "scaler", "best", "epoch")
            state = run.load_checkpoint("last", self.device, needs=full)
            self._check_resumable(state)
            partial = None
            if run.resume_state.is_file():
                mid_state = run.load_checkpoint(
                    RESUME, self.device, needs=(*full, "step", "ranks", "world", "batch_size"))
                if mid_state["epoch"] > state["epoch"]:
                    partial = mid_state
                    self._check_same_job(run.resume_state, partial)
            self.rows = list(state["log"])
            collectives.barrier()  # every rank has read before rank 0 writes
            if self.dist.is_main:  # finish what a kill left of the last epoch's commit
                run.recover(state)
                if partial is None:
                    run.remove_resume_state()
            state = partial or state
            self.method.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.best = dict(state["best"])
            done = state["epoch"] - (1 if partial else 0)
            if self.dist.is_main:
                where = (f"in epoch {partial['epoch']} after step {partial['step']}" if partial
                         else f"after epoch {done}")
                progress.message(f"resuming {self.run_dir} {where}")
            collectives.barrier()
            return done + 1, partial
        made = collectives.from_main([str(p.relative_to(run.root)) for p in run.results()])
        if made and not overwrite:
            raise FileExistsError(
                f"{run} already holds a run ({', '.join(made)}): continue it with --resume, "
                "replace it with --overwrite, or train under another name")
        if self.dist.is_main:
            if overwrite:
                run.remove_results()
            run.remove_temporaries()
            run.write_config(self.config.to_yaml())
        collectives.barrier()
        return 0, None

    def _check_resumable(self, state: dict) -> None:
        """The run resumed is the one configured: the config of the "last" checkpoint (``state``)
        equals this one but for ``RESUMABLE_KEYS``; that checkpoint holds the log rows that
        ``RunDir.recover`` rewrites."""
        last = self.run_dir.checkpoint("last")
        if "log" not in state or "selected" not in state:
            raise RunError(f"{last}: holds no log rows, so it cannot be resumed "
                           "(train it again under another name or with --overwrite)")
        try:
            saved = RunConfig.model_validate(state["config"])
        except ValidationError as exc:
            raise RunError(f"{last}: its config is not valid for this histocam "
                           f"({describe_invalid(exc)}); train it again under another name or "
                           "with --overwrite") from None
        changed = config_changes(saved, self.config)
        if changed:
            raise RunError(
                f"cannot resume {self.run_dir}: the config differs from the one it was trained "
                f"with ({self.run_dir.config}): {'; '.join(changed)}. Resume with that config, "
                "or start a new run under another name or with --overwrite (a resume may change "
                f"only {', '.join(RESUMABLE_KEYS)})")

    def _check_same_job(self, path: Path, partial: dict) -> None:
        batch = self.config.train.batch_size
        if partial["world"] != self.dist.world or partial["batch_size"] != batch:
            raise ValueError(
                f"{path}: saved in the middle of epoch {partial['epoch']} by {partial['world']} "
                f"process(es) with batch size {partial['batch_size']}; resume it with the same "
                f"(now: {self.dist.world}, {batch}), or delete it to resume from the last epoch end")

    def _train_epoch(self, epoch: int, partial: dict | None = None) -> dict[str, float]:
        t, cfg, ctx = self.config.train, self.config, self.dist
        seed_everything(epoch_seed(cfg.seed, epoch, ctx.rank))  # the model's draws this epoch
        train = self.source.dataset("train")
        done = partial["step"] if partial else 0
        per_rank = t.batch_size // ctx.world
        drop_last = len(train) > t.batch_size
        batches_of_rank = train_batches(len(train), per_rank, seed=cfg.seed, epoch=epoch,
                                        rank=ctx.rank, world=ctx.world, drop_last=drop_last)
        n_batches = len(batches_of_rank)
        total = min(n_batches, t.max_steps_per_epoch or n_batches)
        tried = sum(len(b) for b in batches_of_rank[done:total])  # by this process
        loader = make_train_loader(
            train, JointTransform.from_config(cfg.data, train=True), per_rank, seed=cfg.seed,
            epoch=epoch, num_workers=t.num_workers, rank=ctx.rank, world=ctx.world,
            skip_batches=done, drop_last=drop_last, on_bad_sample=t.on_bad_sample, cams=self.cams)
        batches = iter(loader)
        totals: dict[str, float] = {}
        n_seen, n_correct, n_read = 0, 0, 0
        if partial is not None:
            mine = partial["ranks"][ctx.rank]  # this rank's generators and partial sums
            set_rng_state(mine["rng"], self.device)
            totals, n_seen, n_correct = dict(mine["totals"]), mine["seen"], mine["correct"]
        self.method.train()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        with progress.task(f"epoch {epoch} training", total, done, unit="batches") as bar:
            for step in range(done + 1, total + 1):
                batch = next(batches)
                size = 0 if batch is None else batch["image"].shape[0]
                n_read += size
                # a step trains on 2 samples or more (BatchNorm); a rank with none: every rank skips
                if collectives.all_ranks(size >= (2 if ctx.world == 1 else 1)):
                    b, correct, losses = self._train_step(batch, params)
                    n_seen += b
                    n_correct += correct
                    for key, value in losses.items():
                        totals[key] = totals.get(key, 0.0) + value * b
                if t.checkpoint_every and step % t.checkpoint_every == 0 and step < total:
                    self._save_resume(epoch, step, totals, n_seen, n_correct)
                bar.advance()
        del batches
        if ctx.active:  # the epoch's sums over every rank
            keys = sorted(totals)
            summed = all_reduce_sum(torch.tensor([totals[k] for k in keys]
                                                 + [n_seen, n_correct, tried, n_read],
                                                 dtype=torch.float64)).tolist()
            totals = dict(zip(keys, summed))
            n_seen, n_correct, tried, n_read = (int(v) for v in summed[-4:])
        check_bad_samples(train, tried, tried - n_read, t.max_bad_fraction, f"in epoch {epoch}")
        if n_seen == 0:
            raise DataError(None, f"no train sample of {train.name} was trained on in epoch "
                            f"{epoch}: every batch was left with fewer than 2 readable samples; "
                            "the run stopped")
        stats = {f"train_{k}": v / max(n_seen, 1) for k, v in totals.items()}
        stats["train_accuracy"] = 100.0 * n_correct / max(n_seen, 1)
        return stats

    def _warn(self, epoch: int, train_stats: dict[str, float]) -> None:
        """Log what the method finds wrong with an epoch (``WSOLMethod.training_warnings``), at the
        first epoch where it does; the training log has every epoch's losses."""
        messages = self.method.training_warnings(train_stats)
        if messages and not self.warned and self.dist.is_main:
            self.warned = True
            for message in messages:
                log.warning("%s, epoch %d: %s (logged once; the run's log has every epoch)",
                            self.run_dir, epoch, message)

    def _train_step(self, batch: dict, params: list) -> tuple[int, int, dict[str, float]]:
        """One optimiser step (gradients averaged over the ranks): (samples, correct, losses)."""
        batch = {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v)
                 for k, v in batch.items()}
        if self.negative_class is not None:
            batch["negative"] = batch["label"] == self.negative_class
        batch = self.method.prepare_batch(batch)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            loss, parts, output = self.method.training_step(batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        distributed.average_gradients(params, self.dist.world)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        correct = int((output.logits.argmax(1) == batch["label"]).sum())
        return batch["image"].shape[0], correct, {"loss": float(loss.detach()), **parts}

    def _save_resume(self, epoch: int, step: int, totals: dict, seen: int, correct: int) -> None:
        ranks = all_gather_objects({"rng": rng_state(self.device), "totals": dict(totals),
                                    "seen": seen, "correct": correct})  # collective: every rank's
        if not self.dist.is_main:
            return
        self.run_dir.save_checkpoint(RESUME, {
            "model": self.method.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "best": dict(self.best), "epoch": epoch, "step": step, "ranks": ranks,
            "world": self.dist.world,
            "batch_size": self.config.train.batch_size,
            "config": self.config.model_dump(mode="json"), "class_names": self.class_names,
        })

    def _evaluate_and_select(self, epoch: int, train_stats: dict, seconds: float) -> None:
        """Merged (all-rank) valcl accuracy and valpx PxAP decide B-CL and B-LOC on every rank
        alike; rank 0 writes."""
        t = self.config.train
        if self.eval_batches is None:  # memory per image does not change with the weights
            self.eval_batches = {localize: fit_batch(
                self.method, self.config.data.eval_size, self.device, limit=t.eval_batch_size,
                localize=localize) for localize in (False, True)}
        options = dict(num_workers=t.num_workers, on_bad_sample=t.on_bad_sample, shard=True)
        valcl = ClassificationAccuracy(len(self.class_names))
        valpx, valpx_read = PixelHistogram(self.device), ClassificationAccuracy(len(self.class_names))
        evaluate_split(self.method, self.source.dataset("valcl"), self.config.data, self.device,
                       {"accuracy": valcl}, batch_size=self.eval_batches[False], **options,
                       progress=f"epoch {epoch} valcl")
        evaluate_split(self.method, self.source.dataset("valpx"), self.config.data, self.device,
                       {"pixels": valpx, "read": valpx_read}, batch_size=self.eval_batches[True],
                       **options, progress=f"epoch {epoch} valpx")
        for split, read in (("valcl", valcl), ("valpx", valpx_read)):
            dataset = self.source.dataset(split)
            check_bad_samples(dataset, len(dataset), len(dataset) - int(read.matrix.sum()),
                              t.max_bad_fraction, f"in the evaluation of epoch {epoch}")
        accuracy = valcl.compute().accuracy
        pxap = valpx.pxap
        row: dict[str, Any] = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"],
                               **train_stats, "valcl_accuracy": accuracy,
                               "valpx_pxap": pxap if pxap is not None else "", "seconds": seconds}
        for key, split, wanted in (("valcl_pxap", "valcl", t.log_valcl_pxap),
                                   ("test_pxap_trace", "test", t.trace_test_pxap)):
            if wanted:  # logged for later study; never read by the selection below
                traced = PixelHistogram(self.device)
                evaluate_split(self.method, self.source.dataset(split), self.config.data,
                               self.device, {"pixels": traced},
                               batch_size=self.eval_batches[True], **options)
                row[key] = traced.pxap if traced.pxap is not None else ""
        metrics = {"valcl_accuracy": accuracy, "valpx_pxap": pxap}
        selected = []
        if pxap is not None and pxap >= self.best["pxap"]:
            self.best.update(pxap=pxap, loc_epoch=epoch)
            selected.append("best-loc")
        if self.method.classifier_frozen and pxap is None:
            raise ValueError(f"{self.config.method.name} selects its checkpoints on valpx PxAP "
                             "(its classifier is frozen), but no valpx image has a mask")
        if self.method.classifier_frozen:  # B-CL carries no information: it is B-LOC (NEGEV)
            if "best-loc" in selected:
                self.best.update(accuracy=accuracy, cl_epoch=epoch)
                selected.append("best-cl")
        elif accuracy >= self.best["accuracy"]:
            self.best.update(accuracy=accuracy, cl_epoch=epoch)
            selected.append("best-cl")
        saved = [LABEL[name] for name in selected]
        row["selected"] = "+".join(saved)
        self.rows.append(row)
        if not self.dist.is_main:
            return
        self.run_dir.commit_epoch({
            "model": self.method.state_dict(), "epoch": epoch, "metrics": metrics,
            "config": self.config.model_dump(mode="json"), "class_names": self.class_names,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "best": dict(self.best), "log": list(self.rows),
        }, selected)
        pxap_text = f"{pxap:.2f}" if pxap is not None else "n/a"
        loss_text = f" loss {train_stats['train_loss']:.4f}" if "train_loss" in train_stats else ""
        progress.message(f"epoch {epoch:3d}{loss_text}  valcl acc {accuracy:6.2f}  valpx PxAP "
                         f"{pxap_text:>6}  {seconds:6.1f}s  {' '.join(saved)}")
