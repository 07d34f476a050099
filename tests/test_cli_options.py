"""Every numeric option of every command refuses values out of its range, and non-numbers, before
any work starts: exit status 2, the option named, no traceback.

The commands and their options are found by walking the typer app, so a command or an option added
later is swept too; a numeric option must declare its range (``typer.Option(min=..., max=...)``)
unless any integer is valid (a seed), and a float option needs a ``max`` (a ``min`` alone lets
``inf`` through).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from histocam.cli import app

RUNNER = CliRunner()
ANY_INTEGER = {"seed"}  # options for which every integer is a valid value


def _commands(command=None, path=()):
    command = command or typer.main.get_command(app)
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))
    else:
        yield path, command


def _numeric_options():
    for path, command in _commands():
        for param in command.params:
            if param.type_descriptor.annotation in (int, float):
                yield pytest.param(path, command, param, id=f"{' '.join(path)} {param.opts[0]}")


NUMERIC = list(_numeric_options())


def _placeholders(command, tmp: Path) -> list[str]:
    """Values for the command's required parameters (paths that do not exist)."""
    argv = []
    for param in command.params:
        if not param.required:
            continue
        value = str(tmp / f"no-{param.name}")
        argv += [value] if param.param_type_name == "argument" else [param.opts[0], value]
    return argv


def _bad_values(param) -> list[str]:
    number = param.type_descriptor.annotation
    values = ["abc"] + (["nan"] if number is float else [])
    if param.min is not None:
        values += [str(number(param.min) - 1)] + [v for v in ("0", "-1") if number(v) < param.min]
    if param.max is not None:
        values += [str(number(param.max) * 2 + 1)] + (["inf", "1e400"] if number is float else [])
    return list(dict.fromkeys(values))


def test_the_sweep_sees_the_commands() -> None:
    swept = {(" ".join(p.values[0]), p.values[2].opts[0]) for p in NUMERIC}
    for expected in [("predict", "--mpp"), ("predict", "--overlap"), ("predict", "--tile"),
                     ("evaluate", "--batch-size"), ("cams", "--batch-size"),
                     ("data synth", "--size"), ("data patches", "--valcl-fraction"),
                     ("score-maps", "--size"), ("stain-shift", "--max-strength")]:
        assert expected in swept, expected


@pytest.mark.parametrize("path,command,param", NUMERIC)
def test_numeric_option_refuses_out_of_range(path, command, param, tmp_path: Path) -> None:
    name = param.opts[0]
    if param.name in ANY_INTEGER:
        assert param.type_descriptor.annotation is int
        return
    assert param.min is not None, f"{' '.join(path)} {name}: declare its range (min=, max=)"
    if param.type_descriptor.annotation is float:
        assert param.max is not None, f"{' '.join(path)} {name}: a float option needs max="
    for value in _bad_values(param):
        argv = [*path, name, value, *_placeholders(command, tmp_path)]
        result = RUNNER.invoke(app, argv)
        report = f"{argv}\n--- exit {result.exit_code}; output:\n{result.output}"
        assert result.exception is None or isinstance(result.exception, SystemExit), report
        assert "Traceback" not in result.output, report
        assert result.exit_code == 2, report
        assert name in result.output, report
        assert not any(tmp_path.iterdir()), f"{report}\n(the command wrote files)"
