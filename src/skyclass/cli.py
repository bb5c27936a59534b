"""The ``skyclass`` command: audit, split, lr-find, train, evaluate, export, predict, serve.

Each area registers its own commands; heavy imports (torch, onnxruntime) happen inside a command,
so ``skyclass serve --help`` starts fast.
"""

from __future__ import annotations

import importlib
import logging
import os

import typer

COMMAND_MODULES = (
    "skyclass.data.commands",
    "skyclass.train.commands",
    "skyclass.export.commands",
    "skyclass.serve.commands",
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
    build_app()()


if __name__ == "__main__":
    main()
