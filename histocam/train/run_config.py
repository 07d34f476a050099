"""The one run config (pydantic): data + method + training, loaded from YAML with overrides.

Every key is consumed: unknown keys anywhere are an error (``histocam.core.configs``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SerializeAsAny, field_validator, model_validator

from histocam.core.configs import StrictModel
from histocam.core.rundir import RunDir
from histocam.data.config import DataConfig
from histocam.methods.base import MethodConfig
from histocam.methods.catalog import METHODS, method_config
from histocam.train.config_errors import validate_config


class TrainConfig(StrictModel):
    """Survey App. A defaults: SGD Nesterov 0.9, wd 1e-4, batch 32, head lr × 10, step decay."""

    epochs: int = Field(20, ge=0)
    batch_size: int = Field(32, ge=1)
    eval_batch_size: int = Field(64, ge=1)
    lr: float = Field(0.01, gt=0)
    head_lr_multiplier: float = Field(10.0, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(1e-4, ge=0)
    lr_step: int = Field(5, ge=1, description="multiply the lr by lr_gamma every lr_step epochs")
    lr_gamma: float = Field(0.1, gt=0, le=1)
    num_workers: int = Field(2, ge=0)
    amp: bool = Field(True, description="mixed precision (CUDA only)")
    on_bad_sample: Literal["skip", "error"] = "skip"
    max_bad_fraction: float = Field(
        1.0, gt=0, le=1, description="with on_bad_sample: skip, the largest share of an epoch's "
        "training samples (and of valcl, valpx) that may be unreadable; a larger share, or all of "
        "them, stops the run")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cap, for quick runs")
    log_valcl_pxap: bool = Field(
        False, description="also log, each epoch, the PxAP of every valcl image that has a mask "
        "(valcl_pxap in the run's log): a larger pixel-labelled set than valpx, for studying "
        "selection")
    trace_test_pxap: bool = Field(
        False, description="also log, each epoch, the PxAP of the test split (test_pxap_trace in "
        "the run's log), to study after training how a selection rule transfers to unseen images; the "
        "trainer never reads it and selects on valcl/valpx only")
    checkpoint_every: int | None = Field(
        500, ge=1, description="also save the resume state every this many training steps, so "
        "that --resume continues in the middle of an epoch (null: at epoch ends only)")


class RunIdentity(StrictModel):
    """Where a run goes and how it is seeded (shared by runs and pipelines)."""

    name: str = "run"
    out_dir: Path = Path("runs")
    seed: int = 0
    deterministic: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"


class RunConfig(RunIdentity):
    data: DataConfig = Field(default_factory=DataConfig)
    method: SerializeAsAny[MethodConfig] = Field(default_factory=lambda: method_config("cam"))
    train: TrainConfig = Field(default_factory=TrainConfig)
    init: Path | None = Field(None, description="checkpoint whose weights start the model (a "
                              "teacher run's B-CL checkpoint for a seeded student)")
    cams: Path | None = Field(None, description="stored teacher maps of the training images "
                              "(`histocam cams TEACHER_RUN`), for methods that learn from them")

    @field_validator("method", mode="before")
    @classmethod
    def _parse_method(cls, value: Any) -> MethodConfig:
        if isinstance(value, dict) and not isinstance(value.get("name", ""), str):
            raise ValueError(f"name: a method name is a string, got {value['name']!r}")
        return method_config(value)

    @model_validator(mode="after")
    def _cams_iff_needed(self) -> RunConfig:
        needs = METHODS.get(self.method.name).needs_cams
        if needs and self.cams is None:
            raise ValueError(f"method {self.method.name!r} learns from a teacher's stored maps: set "
                             "cams (written by `histocam cams TEACHER_RUN`), or use "
                             "`histocam pixelcam TEACHER_RUN`")
        if not needs and self.cams is not None:
            raise ValueError(f"method {self.method.name!r} does not use stored maps: remove cams")
        return self

    @property
    def run_dir(self) -> RunDir:
        return RunDir(self.out_dir / self.name)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


#: The keys that ``--resume`` may change, none of them part of the recipe the weights are trained
#: by: where the run is (``name``, ``out_dir``: a run folder may be moved); what runs it
#: (``device``: a run may continue on another machine, with that device's rounding); how its
#: training data are read (``train.num_workers``: the sample order and each sample's augmentation
#: are seeded by (seed, epoch, index), whatever process or loader worker reads it); how often the
#: mid-epoch state is saved (``train.checkpoint_every``); how many images an evaluation batch
#: holds (``train.eval_batch_size``: evaluation runs the model in eval mode, each image's maps and
#: scores independent of its batch, and computes no gradient); what the log also records
#: (``train.log_valcl_pxap``, ``train.trace_test_pxap``: evaluations in eval mode after an epoch,
#: and the global generators are re-seeded at every epoch start, so the weights are the same with
#: or without them; a run resumed with another value logs the new columns from then on). Every
#: other key (seed, data, method, epochs, optimiser, ...) is the run's content: a resume that
#: changes one is refused.
RESUMABLE_KEYS = ("name", "out_dir", "device", "train.num_workers", "train.checkpoint_every",
                  "train.eval_batch_size", "train.log_valcl_pxap", "train.trace_test_pxap")


def config_changes(saved: RunConfig, new: RunConfig,
                   allowed: tuple[str, ...] = RESUMABLE_KEYS) -> list[str]:
    """``key: old -> new`` for each key (dotted) whose value differs between the two configs,
    ``allowed`` keys aside."""
    return tree_changes(saved.model_dump(mode="json"), new.model_dump(mode="json"), allowed)


def tree_changes(saved: dict[str, Any], new: dict[str, Any],
                 allowed: tuple[str, ...] = ()) -> list[str]:
    """``config_changes`` of two nested config dicts (a stored summary's config, say)."""
    old, now = flat_config(saved), flat_config(new)
    absent = object()
    out = []
    for key in sorted(old.keys() | now.keys()):
        if key in allowed or old.get(key, absent) == now.get(key, absent):
            continue
        before, after = (json.dumps(d[key]) if key in d else "(absent)" for d in (old, now))
        out.append(f"{key}: {before} -> {after}")
    return out


def flat_config(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as dotted keys: ``{"train": {"lr": 1}}`` → ``{"train.lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flat_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """The run config of a YAML file (or the defaults) with ``key=value`` overrides; an invalid
    one is a ``ConfigError`` that blames the override or the file (``config_errors``)."""
    return validate_config(RunConfig, path, overrides)
