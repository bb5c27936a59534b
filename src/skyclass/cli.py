"""The ``skyclass`` command: audit, split, lr-find, train, evaluate, export, predict, serve.

Each area keeps its commands at module level in its own ``commands.py`` (``COMMANDS`` names them);
heavy imports (torch, onnxruntime) happen inside a command, so ``skyclass serve --help`` is
fast.
This module is the entry point: it alone configures logging (``-q``/``-v``, ``SKYCLASS_LOG_LEVEL``)
and turns usage errors into one line.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass

import typer

from skyclass import __version__

COMMAND_MODULES = (
    "skyclass.data.commands",
    "skyclass.train.commands",
    "skyclass.export.commands",
    "skyclass.serve.commands",
)
#: The order ``skyclass --help`` lists the commands in: the road, data to served model.
ROAD = (
    "audit",
    "label-issues",
    "split",
    "lr-find",
    "train",
    "evaluate",
    "export",
    "serve",
    "predict",
)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"

#: Top-level modules that only the ``train`` extra installs (``pip install -e '.[train]'``).
TRAIN_EXTRA_MODULES = (
    "torch",
    "torchvision",
    "albumentations",
    "onnx",
    "sklearn",
    "imagehash",
    "matplotlib",
    "tqdm",
)
#: Commands that need the ``train`` extra: checked before they parse their arguments.
TRAIN_COMMANDS = frozenset({"audit", "label-issues", "lr-find", "train", "evaluate", "export"})
INSTALL_TRAIN = "pip install -e '.[train]'"


def _installed(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def missing_extra_message(argv: list[str], exc: ModuleNotFoundError | None = None) -> str | None:
    """The one line for a command run without the ``train`` extra (the serve-only install of
    scripts/serve.sh), or None. Before running: a command of TRAIN_COMMANDS with a module of the
    extra missing; after: ``exc``, an import of one of the extra's modules that failed."""
    command = next((a for a in argv if not a.startswith("-")), "")
    if exc is not None:
        missing = (exc.name or "").split(".")[0]
        missing = missing if missing in TRAIN_EXTRA_MODULES else ""
    elif command in TRAIN_COMMANDS and not {"--help", "-h"} & set(argv):
        missing = next((m for m in TRAIN_EXTRA_MODULES if not _installed(m)), "")
    else:
        missing = ""
    if not missing:
        return None
    return (
        f"skyclass {command or 'this command'} needs the training extras (no module named "
        f"{missing!r}); install them with: {INSTALL_TRAIN}"
    )


@dataclass(frozen=True)
class CliOptions:
    """The global options, for commands that adapt to them (progress bars, request logs)."""

    quiet: bool = False
    verbose: int = 0


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr; return the Exit to raise (one line, no traceback)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def cli_options(ctx: typer.Context) -> CliOptions:
    """The global options of the running command (their defaults when none were parsed)."""
    obj = ctx.find_object(CliOptions)
    return obj if obj is not None else CliOptions()


def log_level(quiet: bool, verbose: int, env: str | None) -> int:
    """-q: errors only; -v: INFO; -vv: DEBUG; otherwise SKYCLASS_LOG_LEVEL (default WARNING).
    Raises ValueError naming the valid levels for a bad SKYCLASS_LOG_LEVEL."""
    name = (env or "WARNING").strip().upper()
    if name not in LOG_LEVELS:
        raise ValueError(f"SKYCLASS_LOG_LEVEL={env!r} is not one of {', '.join(LOG_LEVELS)}")
    if quiet:
        return logging.ERROR
    if verbose:
        return logging.DEBUG if verbose > 1 else logging.INFO
    return getattr(logging, name)


def configure_logging(level: int) -> None:
    """Root logging on stderr at ``level`` (entry point only; modules just get loggers)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(level)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"skyclass {__version__}")
        raise typer.Exit()


def global_options(
    ctx: typer.Context,
    quiet: bool = typer.Option(
        False, "--quiet", "-q", help="Errors only: no progress bars, no request log."
    ),
    verbose: int = typer.Option(
        0, "--verbose", "-v", count=True, help="More log lines (-v info, -vv debug)."
    ),
    version: bool = typer.Option(
        False,
        "--version",
        callback=_show_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """From a folder of photos to a serverless image-classification API."""
    try:
        level = log_level(quiet, verbose, os.environ.get("SKYCLASS_LOG_LEVEL"))
    except ValueError as exc:
        raise fail(str(exc)) from None
    configure_logging(level)
    ctx.obj = CliOptions(quiet=quiet, verbose=verbose)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="skyclass",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # click's help: fits 80 columns, never cuts an option name
        context_settings={"max_content_width": 80, "help_option_names": ["-h", "--help"]},
    )
    app.callback()(global_options)
    commands = {}
    for module in COMMAND_MODULES:
        commands.update(importlib.import_module(module).COMMANDS)
    for name in sorted(commands, key=lambda n: ROAD.index(n) if n in ROAD else len(ROAD)):
        app.command(name)(commands[name])
    return app


def main(argv: list[str] | None = None) -> None:
    """The console script: usage errors as one line (exit 2), Ctrl-C as one line (exit 130)."""
    command = typer.main.get_command(build_app())
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # no command: the help, as a successful answer
        argv = ["--help"]
    message = missing_extra_message(argv)
    try:
        if message is not None:  # a training command in the serve-only install
            raise typer.Exit(2)
        code = command.main(args=argv, prog_name="skyclass", standalone_mode=False)
    except ModuleNotFoundError as exc:
        message = missing_extra_message(argv, exc)
        if message is None:
            raise
        code = 2
    except typer.TyperException as exc:  # click's usage errors: a bad option, a missing argument
        text = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        where = getattr(getattr(exc, "ctx", None), "command_path", None)
        hint = f" (see {where} --help)" if where else ""
        typer.echo(f"error: {text}{hint}", err=True)
        code = getattr(exc, "exit_code", 2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("error: interrupted", err=True)
        code = 130
    except typer.Exit as exc:
        code = exc.exit_code
    if message is not None:
        typer.echo(f"error: {message}", err=True)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
