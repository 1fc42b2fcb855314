"""The `kelocate` command line: a thin typer layer over the Python API.

Each command group lives in `kelocate/commands/<name>.py` and registers itself here. Usage mistakes
(unknown option, malformed value) and user errors end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from kelocate.commands.common import err_console

try:  # typer >= 0.20 vendors click; older releases use click itself
    from typer._click import exceptions as _click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as _click_errors

app = typer.Typer(name="kelocate", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Locate knowledge in language models and edit it where it was located.")

COMMAND_MODULES = ("predict", "models", "organism", "trace", "neurons", "klob", "stats", "edit", "train", "study",
                   "project", "sparsity")


@app.callback()
def _root() -> None:
    """Locate knowledge in language models and edit it where it was located."""


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(f"kelocate.commands.{_name}")
    except ModuleNotFoundError as _exc:  # a command group not written yet
        if _exc.name != f"kelocate.commands.{_name}":
            raise
        continue
    _module.register(app)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit code."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="kelocate", standalone_mode=False)
    except _click_errors.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help() if exc.ctx else "")
        return 0
    except _click_errors.ClickException as exc:  # usage errors: one line, exit code 2
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        message = " ".join(exc.format_message().split())
        err_console.print(f"[bold red]error:[/] {message}{where}", highlight=False, soft_wrap=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    return result if isinstance(result, int) else 0


def run() -> None:
    """Entry point for the `kelocate` script."""
    sys.exit(main())


if __name__ == "__main__":
    run()
