"""The command line: version, method listing, help texts."""

from __future__ import annotations

from typer.testing import CliRunner

from histocam import __version__
from histocam.cli import app
from histocam.methods import METHODS


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == __version__


def test_methods_lists_every_registered_method_with_defaults() -> None:
    result = CliRunner().invoke(app, ["methods"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for name in METHODS.names():
        assert name in result.output
    assert "q=5.0" in result.output and "kmax=0.3" in result.output


def test_every_command_has_help() -> None:
    for command in (["train"], ["evaluate"], ["cams"], ["pixelcam"], ["score-maps"], ["demo"],
                    ["data", "check"], ["data", "synth"], ["data", "gallery"],
                    ["pipeline", "pixelcam"]):
        result = CliRunner().invoke(app, [*command, "--help"])
        assert result.exit_code == 0, command
