"""The ``skyclass`` command: audit, split, lr-find, train, evaluate, export, predict, serve.

Each area registers its own commands; heavy imports (torch, onnxruntime) happen inside a command,
so ``skyclass serve --help`` starts fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys

import typer

COMMAND_MODULES = (
    "skyclass.data.commands",
    "skyclass.train.commands",
    "skyclass.export.commands",
    "skyclass.serve.commands",
)


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
    elif command in TRAIN_COMMANDS and "--help" not in argv:
        missing = next((m for m in TRAIN_EXTRA_MODULES if not _installed(m)), "")
    else:
        missing = ""
    if not missing:
        return None
    return (
        f"skyclass {command or 'this command'} needs the training extras (no module named "
        f"{missing!r}); install them with: {INSTALL_TRAIN}"
    )


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr; return the Exit to raise (one line, no traceback)."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="skyclass",
        help="From a folder of photos to a serverless image-classification API.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)
    return app


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("SKYCLASS_LOG_LEVEL", "WARNING").upper(),
        format="%(levelname)s %(name)s: %(message)s",
    )
    message = missing_extra_message(sys.argv[1:])
    try:
        if message is None:
            build_app()()
    except ModuleNotFoundError as exc:
        message = missing_extra_message(sys.argv[1:], exc)
        if message is None:
            raise
    if message is not None:
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
