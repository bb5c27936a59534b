"""CLI commands of skyclass.serve: ``serve`` and ``predict`` (heavy imports stay inside them).

Exit codes: 0 all good; 1 some image failed (predict) or the server stopped on an error;
2 a usage error (a missing path or model folder, a bad option), always as one line on stderr.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from skyclass.cli import cli_options
from skyclass.cli import fail as _fail


def resolve_model(value: str) -> Path:
    """A model folder from ``--model``: a folder path, or the name of a folder beside the default
    model (``imagenet-mobilenet-v2`` -> ``models/imagenet-mobilenet-v2``)."""
    from skyclass.api import resolve_model_dir
    from skyclass.core.errors import ModelUnavailable

    try:
        return resolve_model_dir(value)
    except ModelUnavailable as exc:
        raise _fail(str(exc)) from None


def _settings(model: list[str], variant: str | None, cors: list[str], default: str | None) -> Any:
    """ServeSettings from the environment, with the command line's choices over it."""
    from skyclass.serve.settings import ServeSettings

    settings = ServeSettings.from_env()
    changes: dict[str, object] = {}
    if model:
        changes.update(model_dirs=tuple(resolve_model(m) for m in model), s3_uri=None)
    if variant:
        changes["variant"] = variant
    if cors:
        changes["cors_origins"] = tuple(cors)
    if default:
        changes["default_model"] = default
    settings = replace(settings, **changes)  # type: ignore[arg-type]
    for folder in settings.model_dirs:
        if not folder.is_dir():
            raise _fail(f"model folder not found: {folder}")
    return settings


def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port (0 picks a free one)."),
    model: list[str] = typer.Option(
        None,
        "--model",
        "-m",
        metavar="<str>",
        help="Model folder or name; repeat for several (first: default).",
    ),
    variant: str = typer.Option(None, help="fp32 or int8 (default: each model's own)."),
    cors_origin: list[str] = typer.Option(
        None,
        "--cors-origin",
        metavar="<str>",
        help="Allowed CORS origin; repeat for several (default: *).",
    ),
    default_model: str = typer.Option(None, "--default-model", help="Name of the default."),
) -> None:
    """Serve the API and web page under uvicorn (the same app as the Lambda handler).
    Logs one line per request (method, path, status, ms) unless -q."""
    from skyclass.core.errors import ModelUnavailable
    from skyclass.serve import listen
    from skyclass.serve.access_log import AccessLog
    from skyclass.serve.app import create_app
    from skyclass.serve.registry import ModelRegistry
    from skyclass.serve.settings import SettingsError

    try:
        settings = _settings(model, variant, cors_origin, default_model)
        registry = ModelRegistry.from_settings(settings)
        registry.get()  # load the default now: usable at once, or a clear error
    except (SettingsError, ValueError) as exc:
        raise _fail(str(exc)) from None
    except ModelUnavailable as exc:
        raise _fail(str(exc), 1) from None
    _load_the_others(registry)
    try:
        sock, url = listen.bind(host, port)
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    others = [n for n in registry.names if n != registry.default_name]
    also = f" (also: {', '.join(others)})" if others else ""
    typer.echo(f"skyclass serving {registry.default_name}{also} at {url}")
    app: Any = create_app(registry, settings)
    if not cli_options(ctx).quiet:
        logging.getLogger("skyclass").setLevel(logging.INFO)
        app = AccessLog(app)
    listen.run(app, sock, settings)


def _load_the_others(registry: Any) -> None:
    """Load every other model now as well, so that ``/health`` and ``/models`` say at once which
    ones failed and why, and whether each one's scope is on (the Lambda handler stays lazy: its
    cold start pays for the models it is asked for only). A failed one is a warning line; the
    server still starts and keeps retrying it on request."""
    from skyclass.core.errors import ModelUnavailable

    for name in registry.names:
        if name == registry.default_name:
            continue
        try:
            registry.get(name)
        except ModelUnavailable as exc:
            typer.echo(f"warning: {exc}", err=True)


def predict(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(..., help="Image files and folders (recursive)."),
    model: str = typer.Option(None, "--model", "-m", help="Model folder or name."),
    fmt: str = typer.Option(
        "table", "--format", "-f", help="table, json (one object per line) or csv."
    ),
    as_json: bool = typer.Option(False, "--json", help="Same as --format json."),
    variant: str = typer.Option(None, help="fp32 or int8 (default: the model's own)."),
    top_k: int = typer.Option(
        None, "--top-k", min=1, help="Classes to show (default: all up to 10, else 5)."
    ),
    reject: bool = typer.Option(
        True,
        "--reject/--no-reject",
        help="Judge out-of-scope photos with the model's scope file (label: none).",
    ),
    explain: Path = typer.Option(
        None, "--explain", help="Write a class activation map overlay PNG per photo here."
    ),
) -> None:
    """Classify image files and folders with a model folder (the bundled one by default)."""
    from skyclass.core.bundle import VARIANTS
    from skyclass.serve.batch_predict import (
        PredictInputError,
        PredictOptions,
        classify_files,
        load_for_predict,
    )
    from skyclass.serve.predict_output import FORMATS

    fmt = "json" if as_json else fmt.lower()
    if fmt not in FORMATS:
        raise _fail(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if variant is not None and variant not in VARIANTS:
        raise _fail(f"--variant must be one of {', '.join(VARIANTS)}")
    try:
        found, loaded = load_for_predict(paths, model, variant, explain)
    except PredictInputError as exc:
        raise _fail(str(exc)) from None
    options = PredictOptions(top_k, reject, explain, bar=not cli_options(ctx).quiet)
    failed = classify_files(found, loaded, fmt, options)
    if failed:
        what = f"{failed} of {len(found.files) + len(found.unreadable)} files"
        if found.unreadable:
            what += f" and folders ({len(found.unreadable)} folders unreadable)"
        typer.echo(f"{what} could not be classified", err=True)
        raise typer.Exit(1)


#: This area's commands, by the name the CLI gives them.
COMMANDS = {"serve": serve, "predict": predict}
