"""The ``skyclass`` command: audit, split, lr-find, train, evaluate, export, predict, serve.

Each area registers its own commands; heavy imports (torch, onnxruntime) happen inside a command,
so ``skyclass serve --help`` starts fast.
"""

from __future__ import annotations

import importlib
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
TRAIN_EXTRA_MODULES = frozenset(
    {"torch", "torchvision", "albumentations", "onnx", "sklearn", "imagehash", "matplotlib", "tqdm"}
)
INSTALL_TRAIN = "pip install -e '.[train]'"


def missing_extra_message(exc: ModuleNotFoundError, argv: list[str]) -> str | None:
    """The one line for a command run without the extra it needs, or None if ``exc`` is not that
    (a module of the ``train`` extra missing: the serve-only install of scripts/serve.sh)."""
    root = (exc.name or "").split(".")[0]
    if root not in TRAIN_EXTRA_MODULES:
        return None
    command = next((a for a in argv if not a.startswith("-")), "this command")
    return (
        f"skyclass {command} needs the training extras (no module named {root!r}); "
        f"install them with: {INSTALL_TRAIN}"
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
    try:
        build_app()()
    except ModuleNotFoundError as exc:
        message = missing_extra_message(exc, sys.argv[1:])
        if message is None:
            raise
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
