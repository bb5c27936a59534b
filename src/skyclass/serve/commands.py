"""CLI commands of skyclass.serve: ``serve`` and ``predict`` (heavy imports stay inside them).

Exit codes: 0 all good; 1 some image failed (predict) or the server stopped on an error;
2 a usage error (a missing path or model folder, a bad option), always as one line on stderr.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from skyclass.cli import fail as _fail

if TYPE_CHECKING:
    from skyclass.core.predictor import Prediction


def resolve_model(value: str) -> Path:
    """A model folder from ``--model``: a folder path, or the name of a folder beside the default
    model (``imagenet-mobilenet-v2`` -> ``models/imagenet-mobilenet-v2``)."""
    from skyclass.core.bundle import MANIFEST
    from skyclass.serve.settings import default_model_dir

    path = Path(value).expanduser()
    if path.is_dir():
        return path
    named = default_model_dir().parent / value
    if "/" not in value and "\\" not in value and (named / MANIFEST).is_file():
        return named
    raise _fail(f"model folder not found: {value}")


def collect_images(paths: list[Path]) -> list[Path]:
    """Files as given (any extension), and image files under folders (recursive, sorted)."""
    from skyclass.core.preprocess import IMAGE_SUFFIXES

    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            out.extend(found)
        elif path.is_file():
            out.append(path)
        else:
            raise _fail(f"no such file or folder: {path}")
    return out


def register(app: typer.Typer) -> None:
    """Add this area's commands to the skyclass CLI."""

    @app.command()
    def serve(
        host: str = typer.Option("127.0.0.1", help="address to listen on"),
        port: int = typer.Option(8000, help="port (0 picks a free one)"),
        model: list[str] = typer.Option(
            None, "--model", "-m", help="model folder or name; repeat for several (first: default)"
        ),
        variant: str = typer.Option(None, help="fp32 or int8 (default: each model's own)"),
        cors_origin: list[str] = typer.Option(
            None, "--cors-origin", help="allowed CORS origin; repeat for several (default: *)"
        ),
        default_model: str = typer.Option(None, "--default-model", help="name of the default"),
    ) -> None:
        """Serve the API and web page under uvicorn (the same app as the Lambda handler)."""
        import logging
        import socket

        import uvicorn

        from skyclass.core.errors import ModelUnavailable
        from skyclass.serve.app import create_app
        from skyclass.serve.registry import ModelRegistry
        from skyclass.serve.server import uvicorn_config
        from skyclass.serve.settings import ServeSettings, SettingsError

        try:
            settings = ServeSettings.from_env()
            changes: dict[str, object] = {}
            if model:
                changes.update(model_dirs=tuple(resolve_model(m) for m in model), s3_uri=None)
            if variant:
                changes["variant"] = variant
            if cors_origin:
                changes["cors_origins"] = tuple(cors_origin)
            if default_model:
                changes["default_model"] = default_model
            settings = replace(settings, **changes)  # type: ignore[arg-type]
            for folder in settings.model_dirs:
                if not folder.is_dir():
                    raise _fail(f"model folder not found: {folder}")
            registry = ModelRegistry.from_settings(settings)
            registry.get()  # load the default now: usable at once, or a clear error
        except (SettingsError, ValueError) as exc:
            raise _fail(str(exc)) from None
        except ModelUnavailable as exc:
            raise _fail(str(exc), 1) from None

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP, not 0: asyncio only sets TCP_NODELAY on sockets that say they are TCP, and
        # without it every kept-alive response waits ~40 ms for a delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        others = [n for n in registry.names if n != registry.default_name]
        also = f" (also: {', '.join(others)})" if others else ""
        typer.echo(f"skyclass serving {registry.default_name}{also} at http://{shown}:{bound}/")
        sys.stdout.flush()

        logging.getLogger("skyclass").setLevel(logging.INFO)
        config = uvicorn_config(create_app(registry, settings), settings)
        uvicorn.Server(config).run(sockets=[sock])

    @app.command()
    def predict(
        paths: list[Path] = typer.Argument(..., help="image files and folders (recursive)"),
        model: str = typer.Option(None, "--model", "-m", help="model folder or name"),
        as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
        variant: str = typer.Option(None, help="fp32 or int8 (default: the model's own)"),
        top_k: int = typer.Option(
            None, "--top-k", min=1, help="classes to show (default: all up to 10, else 5)"
        ),
        reject: bool = typer.Option(
            True,
            "--reject/--no-reject",
            help="judge out-of-scope photos with the model's scope file (label: none)",
        ),
        explain: Path = typer.Option(
            None, "--explain", help="write a class activation map overlay PNG per photo here"
        ),
    ) -> None:
        """Classify image files and folders with a model folder (the bundled one by default)."""
        from skyclass.core.bundle import VARIANTS
        from skyclass.core.errors import ImageError, ModelUnavailable
        from skyclass.core.predictor import Predictor
        from skyclass.serve.settings import ALL_CLASSES_UP_TO, default_model_dir

        if variant is not None and variant not in VARIANTS:
            raise _fail(f"--variant must be one of {', '.join(VARIANTS)}")
        files = collect_images(paths)
        folder = resolve_model(model) if model else default_model_dir()
        if not folder.is_dir():
            raise _fail(f"model folder not found: {folder}")
        try:
            predictor = Predictor(folder, variant=variant)
        except ModelUnavailable as exc:
            raise _fail(str(exc)) from None
        n = len(predictor.labels)
        k = min(top_k or (n if n <= ALL_CLASSES_UP_TO else 5), n)
        if not files:
            raise _fail("no image files found in the given folders")
        if explain is not None and not predictor.can_explain:
            raise _fail(
                f"model {predictor.ref.name} cannot explain (no 'cam' output; re-export it)"
            )
        if explain is not None and explain.exists() and not explain.is_dir():
            raise _fail(f"--explain {explain} exists and is not a folder")

        failed = 0
        rows: list[tuple[str, str, float, dict[str, float]]] = []
        for path in files:
            try:
                result = predictor.predict(
                    path.read_bytes(), top_k=k, reject=reject, explain=explain is not None
                )
                overlay = _write_overlay(explain, path, result) if explain is not None else None
            except (ImageError, OSError) as exc:
                failed += 1
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                typer.echo(f"{path}: {reason}", err=True)
                continue
            if as_json:
                line: dict[str, Any] = {
                    "path": str(path),
                    "label": result.label,
                    "confidence": result.confidence,
                    "probabilities": result.probabilities,
                }
                if result.scope is not None:
                    line |= {"in_scope": result.in_scope, "top_guess": result.top_guess}
                    line["scope"] = result.scope.to_dict()
                if overlay is not None:
                    line["explanation"] = str(overlay)
                typer.echo(json.dumps(line))
            else:
                label = result.label or f"none of these (guess: {result.top_guess})"
                rows.append((str(path), label, result.confidence, result.probabilities))

        if not as_json:
            _print_table(rows, predictor.ref.name, predictor.ref.version, predictor.variant)
        if failed:
            typer.echo(f"{failed} of {len(files)} files could not be classified", err=True)
            raise typer.Exit(1)


def _write_overlay(folder: Path, photo: Path, result: Prediction) -> Path:
    """``folder/<photo stem>.cam.png``, written atomically; an existing file is never replaced
    (a numbered name is taken instead)."""
    import os

    assert result.explanation is not None
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / f"{photo.stem}.cam.png"
    n = 1
    while out.exists():
        n += 1
        out = folder / f"{photo.stem}.{n}.cam.png"
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(result.explanation.png)
    os.replace(tmp, out)
    return out


def _print_table(
    rows: list[tuple[str, str, float, dict[str, float]]], name: str, version: str, variant: str
) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{name} {version} ({variant})", title_justify="left")
    table.add_column("path", overflow="fold")
    table.add_column("label", no_wrap=True)
    table.add_column("confidence", justify="right", no_wrap=True)
    table.add_column("others", overflow="fold")
    for path, label, confidence, probs in rows:
        others = ", ".join(f"{c} {p:.2f}" for c, p in probs.items() if c != label)
        table.add_row(path, label, f"{confidence:.3f}", others)
    console = Console()
    if not console.is_terminal:  # piped: one row per line, paths whole
        longest = max((len(r[0]) + sum(len(c) + 6 for c in r[3]) for r in rows), default=0)
        console = Console(width=max(120, longest + 40))
    console.print(table)
