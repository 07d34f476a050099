"""``Run(dir)``: a trained run as an object.

A run's files are those of its ``RunDir`` (``histocam.core.rundir``): the resolved ``RunConfig``,
the checkpoints, the log, the evaluations and the stored maps. ``Run`` loads a checkpoint as a
ready method (``run.method("best-loc")``), exports its maps of a split (the CAM store a seeded
student learns from), evaluates a checkpoint on the run's own data or on any other dataset
(``run.evaluate("best-loc", data="synthetic-node")``: out-of-distribution evaluation) and reads
what the evaluations recorded (``run.tau_star("best-loc")``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from pydantic import ValidationError

from histocam.core import collectives
from histocam.core.atomic import CheckpointError, write_text_atomic
from histocam.core.collectives import all_gather_objects
from histocam.core.devices import command_device, resolve_device
from histocam.core.progress import message
from histocam.core.progress import task as progress_task
from histocam.core.results import EvaluationResult
from histocam.core.rundir import CHECKPOINTS, RunDir, RunError
from histocam.core.runlock import RunLock
from histocam.data.config import DataConfig
from histocam.data.open import open_source
from histocam.data.transforms import JointTransform
from histocam.maps.store import (
    ShardedNpzWriter,
    config_hash,
    dataset_identity,
    provenance_path,
    store_identity,
    store_is_current,
)
from histocam.methods.base import WSOLMethod
from histocam.methods.catalog import create_method
from histocam.runs.evaluation import evaluate_run
from histocam.train.loader import make_loader
from histocam.train.memory import fit_batch
from histocam.train.run_config import RunConfig, config_changes
from histocam.train.trainer import Trainer

__all__ = ["CHECKPOINTS", "Run", "RunError"]


class Run:
    """A run directory. ``Run(dir)`` reads its config (``config``: the run's own config, already
    validated, instead); checkpoints are loaded on demand."""

    def __init__(self, directory: str | Path | RunDir, config: RunConfig | None = None) -> None:
        self.dir = directory if isinstance(directory, RunDir) else RunDir(directory)
        if not self.dir.root.is_dir():
            raise RunError(f"{self.dir}: no such run directory")
        if not self.dir.is_run():
            inner = sorted(p.name for p in self.dir.root.iterdir() if RunDir(p).is_run())
            if inner:
                raise RunError(f"{self.dir}: not a run directory but a folder of runs: "
                               f"{', '.join(inner)}; give one of them, e.g. "
                               f"{self.dir.root / inner[0]}")
            raise RunError(f"{self.dir}: not a run directory (no {self.dir.config.name})")
        if config is not None:
            self.config = config
            return
        path = self.dir.config
        try:
            self.config = RunConfig.model_validate(yaml.safe_load(path.read_text()))
        except (ValidationError, yaml.YAMLError, KeyError) as exc:
            raise RunError(f"{path}: not a valid run config for this histocam "
                           f"({_first_line(exc)}); train the run again or move it away") from None

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r}, method={self.config.method.name!r})"

    @classmethod
    def train(cls, config: RunConfig) -> Run:
        """The trained run of ``config``: trained here, resumed when an epoch has ended, or, when
        its last epoch has ended, the run as it was trained. A run trained with another config
        (but for ``RESUMABLE_KEYS``) is an error. Under torchrun (a collective) rank 0 decides
        for every rank."""
        run_dir = config.run_dir
        if not collectives.from_main(run_dir.has_started()):
            Trainer(config).fit()
            return cls(run_dir, config=config)
        stored = cls(run_dir)
        changed = config_changes(stored.config, config)
        if changed:
            raise RunError(f"{run_dir}: trained with another configuration than this one "
                           f"({'; '.join(changed)}); move it away or choose another name")
        if collectives.from_main(run_dir.epochs_done()) < config.train.epochs:
            Trainer(config).fit(resume=True)
        return stored

    def writing(self, operation: str, device: str = "auto") -> RunLock:
        """``with run.writing("evaluation"):`` the run's lock (``RunDir.lock``), taken for the
        job: it joins the job's process group first (``collectives.setup``)."""
        collectives.setup(command_device(device))
        return self.dir.lock(operation)

    # ------------------------------------------------------------------ checkpoints
    def checkpoint_path(self, checkpoint: str) -> Path:
        if checkpoint not in CHECKPOINTS:
            raise RunError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got "
                           f"{checkpoint!r}")
        return self.dir.checkpoint(checkpoint)

    def trained(self) -> bool:
        """Both selected checkpoints exist."""
        return self.dir.is_trained()

    def require_trained(self) -> Run:
        """This run, or a RunError when it has no B-LOC/B-CL checkpoints (a run given to be used
        as it is, e.g. a teacher, is never trained behind the user's back)."""
        if not self.trained():
            raise RunError(f"{self.dir}: the run has no best-loc/best-cl checkpoints (train it "
                           "first)")
        return self

    def state(self, checkpoint: str, device: str | torch.device = "cpu") -> dict:
        path = self.checkpoint_path(checkpoint)
        if not path.is_file():
            raise RunError(f"{path}: checkpoint not found (is the run trained?)")
        try:
            return self.dir.load_checkpoint(checkpoint, device,
                                            needs=("model", "epoch", "class_names"))
        except CheckpointError as exc:
            raise RunError(str(exc)) from None

    def method(self, checkpoint: str = "best-loc", device: str = "cpu"
               ) -> tuple[WSOLMethod, list[str]]:
        """(the method with the checkpoint's weights, in eval mode, class names)."""
        method, state = self._load(checkpoint, device)
        return method, state["class_names"]

    def _load(self, checkpoint: str, device: str) -> tuple[WSOLMethod, dict]:
        """(the ready method, the checkpoint's state): the file is read once."""
        dev = resolve_device(device)
        state = self.state(checkpoint, dev)
        # the weights come from the checkpoint: fetch or read no other weight source
        method = create_method(self.config.method.for_inference(), len(state["class_names"]))
        try:  # a composed method also takes the weights of its classifier alone (a classifier run)
            method.load_initial_state(state["model"])
        except RuntimeError as exc:
            raise RunError(f"{self.checkpoint_path(checkpoint)}: weights do not match the run's "
                           f"method ({_first_line(exc)})") from None
        return method.to(dev).eval(), state

    # ------------------------------------------------------------------ data
    def data_config(self, data: str | Path | DataConfig | None = None) -> DataConfig:
        """The run's own data, or another dataset (a registered name, a path, or a config) with
        the run's pre-processing sizes (and, from one synthetic domain to another, its
        ``data.synthetic`` settings)."""
        if data is None:
            return self.config.data
        if isinstance(data, DataConfig):
            return data
        own = self.config.data
        other = DataConfig(dataset=str(data), resize=own.resize, crop=own.crop,
                           eval_size=own.eval_size)
        if own.is_synthetic and other.is_synthetic:  # the same rendering scale and counts
            other = other.model_copy(update={"synthetic": own.synthetic})
        return other

    def data_tag(self, data: str | Path | DataConfig | None) -> str | None:
        """The tag of the evaluations on other data (``RunDir.evaluation``; None: own data)."""
        if data is None:
            return None
        config = self.data_config(data)
        if dataset_identity(config) == dataset_identity(self.config.data):
            return None
        name = Path(config.dataset).name or "data"
        return f"{name}-{dataset_identity(config)[:8]}"

    # ------------------------------------------------------------------ maps
    def stored_maps(self, checkpoint: str = "best-loc", split: str = "train", *,
                    device: str = "auto", progress: bool = False) -> Path:
        """The store of ``checkpoint``'s maps of ``split``, exported unless it is current for the
        run's data (a collective under torchrun: the ranks join the job's process group, rank 0
        decides, the ranks export together)."""
        collectives.setup(command_device(device))
        npz = self.dir.stored_maps(checkpoint, split)
        if not collectives.from_main(store_is_current(npz, self.config.data, split)):
            self.export_cams(checkpoint, split, device=device, progress=progress)
        elif progress:
            message(f"{npz} is current, reused")
        return npz

    def export_cams(self, checkpoint: str = "best-loc", split: str = "train", *,
                    device: str = "auto", batch_size: int | None = None,
                    progress: bool = False) -> Path:
        """Store the normalised low-resolution map of every image's ground-truth class of
        ``split`` (float16, streamed to ``RunDir.stored_maps``) with its provenance;
        ``batch_size`` by default from the memory budget (``histocam.train.memory.fit_batch``).

        Under torchrun (a collective: every rank calls it) each rank maps its contiguous block of
        the images (``collectives.shard_indices``) into a part file and rank 0 merges the parts,
        in rank order, into the same single ``.npz`` and ``.json`` one process writes (same maps,
        same order); every rank returns once both exist. It joins the job's process group,
        making it on first use (``collectives.setup``)."""
        with self.writing("map export", device):
            return self._export_cams(checkpoint, split, command_device(device), batch_size,
                                     progress)

    def _export_cams(self, checkpoint: str, split: str, dev: torch.device,
                     batch_size: int | None, progress: bool) -> Path:
        method, state = self._load(checkpoint, str(dev))
        data = self.config.data
        dataset = open_source(data).dataset(split)
        batch_size = batch_size or fit_batch(method, data.eval_size, dev,
                                             limit=self.config.train.eval_batch_size)
        loader = make_loader(dataset, JointTransform.from_config(data, train=False),
                             batch_size, shuffle=False,
                             num_workers=self.config.train.num_workers,
                             indices=collectives.shard_indices(len(dataset)))
        npz = self.dir.stored_maps(checkpoint, split)
        shape = None
        description = f"{self.dir.name}: {checkpoint} maps of {split}" if progress else None
        with ShardedNpzWriter(npz) as writer, \
                progress_task(description, len(loader.dataset), unit="images") as bar:
            for batch in loader:
                with torch.no_grad():  # top-down CAMs re-enable gradients where they need them
                    _, low = method.localize_with_logits(batch["image"].to(dev),
                                                         batch["label"].to(dev), upsample=False)
                for image_id, m in zip(batch["id"], low.detach().cpu().numpy()):
                    writer.add(image_id, m.astype("float16"))
                    shape = list(m.shape)
                bar.advance(len(batch["id"]))
        ids = list(writer.keys)  # every rank's, in dataset order
        shape = next((s for s in all_gather_objects(shape) if s is not None), None)
        if collectives.is_main():
            write_text_atomic(provenance_path(npz), json.dumps({
                "run": str(self.dir.root.resolve()), "checkpoint": checkpoint,
                "epoch": state["epoch"], "method": self.config.method.name,
                "teacher_config_hash": config_hash(self.config.method.model_dump(mode="json")),
                **store_identity(data, dataset), "class_names": state["class_names"], "ids": ids,
                "map_shape": shape,
            }, indent=2))
        collectives.barrier()  # the store is complete before any rank reads it
        return npz

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, checkpoint: str, split: str = "test", *,
                 data: str | Path | DataConfig | None = None, device: str = "auto",
                 save_maps: bool = False, separability: bool = False,
                 batch_size: int | None = None) -> EvaluationResult:
        """Test metrics of a checkpoint (``histocam.runs.evaluation``)."""
        with self.writing("evaluation", device):
            return evaluate_run(self, checkpoint, split, data=data, device=device,
                                save_maps=save_maps, separability=separability,
                                batch_size=batch_size)

    def evaluation(self, checkpoint: str, split: str = "test", *, device: str = "auto"
                   ) -> EvaluationResult:
        """The stored evaluation of ``checkpoint`` on the run's ``split``, evaluated first when it
        is missing or older than the checkpoint."""
        if self.dir.evaluation_is_current(checkpoint, split):
            stored = self.dir.read_evaluation(checkpoint, split)
            if stored is not None:
                return stored
        self.require_trained()
        return self.evaluate(checkpoint, split, device=device)

    def tau_star(self, checkpoint: str) -> tuple[float | None, str]:
        """(τ* recorded for ``checkpoint`` by ``histocam evaluate``, where it was read), or
        (None, why there is none) (``RunDir.tau_star``)."""
        self.checkpoint_path(checkpoint)
        return self.dir.tau_star(checkpoint)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(text[:3]) if text else type(exc).__name__
