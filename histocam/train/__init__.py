"""Training: the run config, the trainer with B-LOC/B-CL selection, checkpoints, evaluation."""

from histocam.train.run_config import RunConfig, TrainConfig, load_run_config
from histocam.train.trainer import Trainer, build_method

__all__ = ["RunConfig", "TrainConfig", "Trainer", "build_method", "load_run_config"]


def train(config: RunConfig, resume: bool = False, overwrite: bool = False) -> dict:
    """Python equivalent of ``histocam train``: fit and return the best values and epochs."""
    return Trainer(config).fit(resume=resume, overwrite=overwrite)
