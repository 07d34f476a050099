"""Runs as objects: a trained run's config, checkpoints, maps and evaluations (``Run``)."""

from histocam.runs.run import CHECKPOINTS, Run, RunError, is_trained

__all__ = ["CHECKPOINTS", "Run", "RunError", "is_trained"]
