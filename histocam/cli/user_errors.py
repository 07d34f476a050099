"""User errors of the command line: one ``error:`` line on stderr and exit status 2.

Every user error (a missing run, file or checkpoint, a bad config key or value, a stale CAM store,
unknown names, unloadable weights, an option out of its range or not a number) ends in one line; a
traceback means a bug in histocam.
"""

from __future__ import annotations

import functools
import sys

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError  # typer's own click
from typer.core import TyperGroup


class OneLineUsageErrors(TyperGroup):
    """The ``histocam`` command group: the command line's own usage errors (an option out of its
    range, a value that is not a number, a missing argument, an unknown option) are one ``error:``
    line and exit status 2, as every other user error, instead of click's usage box. Running a
    group without a command still prints its help."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except ClickException as exc:
            typer.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def user_error_message(exc: BaseException) -> str | None:
    """One line for an error caused by the user's input; None for anything else (a bug)."""
    from pydantic import ValidationError

    from histocam.core.configs import describe_invalid
    from histocam.core.registry import UnknownNameError
    from histocam.core.runlock import RunLockError
    from histocam.data.errors import DataError
    from histocam.maps.store import CAMStoreError
    from histocam.models.backbones import BackboneError
    from histocam.runs import RunError

    if isinstance(exc, ValidationError):
        return "invalid config: " + describe_invalid(exc)
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        # "[Errno 20] Not a directory: 'runs/x'" -> "runs/x: not a directory"
        return f"{exc.filename}: {exc.strerror[:1].lower()}{exc.strerror[1:]}"
    if isinstance(exc, (RunError, RunLockError, DataError, CAMStoreError, BackboneError,
                        UnknownNameError, FileNotFoundError, FileExistsError, NotADirectoryError,
                        IsADirectoryError, PermissionError, ValueError)):
        return " ".join(str(exc).split())
    return None


def user_errors(command):
    """Decorator: user errors become one ``error:`` line and exit status 2."""

    @functools.wraps(command)
    def wrapped(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except EOFError as exc:  # typer would print only "Aborted." for it: a file read too far
            typer.echo(f"error: unexpected end of a file ({exc})", err=True)
            raise typer.Exit(2) from None
        except Exception as exc:
            message = user_error_message(exc)
            if message is None:
                raise
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(2) from None

    return wrapped
