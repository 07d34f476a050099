"""``python -m histocam`` (and ``torchrun -m histocam``): the command line."""

from histocam.cli import app

app(prog_name="histocam")
