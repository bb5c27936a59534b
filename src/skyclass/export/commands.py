"""CLI commands of skyclass.export (heavy imports stay inside the commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def export(
    source: str = typer.Argument(
        None,
        help="A run dir (uses checkpoints/best.pt and its data paths) or a checkpoint file.",
        show_default=False,
    ),
    out: Path = typer.Option(..., "--out", help="The model folder to write (models/NAME)."),
    pretrained: str = typer.Option(
        None,
        help="Export a plain pretrained classifier instead of a run: 'imagenet' (the 1000-class "
        "torchvision MobileNetV2; needs --weights, and --data-root for calibration/parity photos).",
    ),
    weights: Path = typer.Option(None, help="State_dict for --pretrained imagenet."),
    name: str = typer.Option(None, help="Model name [default: run dir name]."),
    version: str = typer.Option(None, help="Model version [default: from stage/epoch]."),
    data_root: Path = typer.Option(
        None, help="Image root for manifests [default: the checkpoint's]; or a folder to sample."
    ),
    calibration_manifest: Path = typer.Option(
        None, help="CSV of int8 calibration images [default: the run's train manifest]."
    ),
    calibration_size: int = typer.Option(300, help="Calibration images (stratified sample)."),
    test_manifest: Path = typer.Option(
        None, help="CSV of parity/test images [default: the run's test manifest]."
    ),
    parity_size: int = typer.Option(
        None, help="Cap on parity images [default: the whole test manifest, or 200 sampled]."
    ),
    example: list[Path] = typer.Option(None, help="A photo whose top-5 the card shows."),
    ood_image: list[Path] = typer.Option(
        None, help="A photo of none of the classes; the card says what the model answers."
    ),
    card_notes: Path = typer.Option(
        None, help="A markdown file the card carries as its 'Notes' section (other protocols...)."
    ),
    int8: bool = typer.Option(
        True,
        "--int8/--no-int8",
        help="Also measure int8 and write model.int8.onnx if it meets its bounds.",
    ),
    require_int8: bool = typer.Option(
        False, "--require-int8", help="Fail, writing nothing, if int8 misses its bounds."
    ),
    top_k: int = typer.Option(None, help="top_k in model.json [default: all if <= 10, else 5]."),
    min_int8_agreement: float = typer.Option(
        0.95,
        help="Bound on the lower end of the 95% Wilson interval of int8 vs fp32 top-1 "
        "agreement (fraction): few images need a higher agreement to pass.",
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing model folder."),
    scope: bool = typer.Option(
        True, "--scope/--no-scope", help="Calibrate and write a scope score (scope.npz)."
    ),
    scope_train: Path = typer.Option(None, help="Scope fit photos [default: the run's train]."),
    scope_val: Path = typer.Option(
        None, help="Scope threshold photos (95%% kept) [default: val.csv beside the train one]."
    ),
    scope_test: Path = typer.Option(None, help="Scope figures photos [default: the run's test]."),
    out_of_scope: Path = typer.Option(
        None, help="Folder of out-of-scope photos with a SOURCES.tsv: compare methods, train OE."
    ),
    scope_method: str = typer.Option("auto", help="Scope method, or auto (best measured)."),
    log: str = typer.Option(
        None,
        "--log",
        help="Trackers (tensorboard,mlflow,wandb) to log the model folder into, as an artifact "
        "with its sha256: the source run's tracker runs (its trackers.json).",
    ),
) -> None:
    """Export a trained run (or pretrained ImageNet weights) to a model folder: ONNX fp32 + int8,
    parity.json, MODEL_CARD.md and model.json. Exits non-zero, writing nothing, if fp32 parity
    fails; int8 that misses its bounds is left out of the folder (and said so) unless
    --require-int8."""
    from rich.console import Console
    from rich.table import Table

    from skyclass.export.config import ExportConfig, ExportError, ParityBounds
    from skyclass.export.pipeline import ParityError, int8_left_out_message, run_export
    from skyclass.outputs import OutputExists, check_writable

    err = Console(stderr=True, soft_wrap=True)
    try:
        check_writable(out)  # before any work (ParityError below is imported later)
    except OutputExists as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    trackers = _trackers(log, err)
    try:
        config = ExportConfig(
            out=str(out),
            source=source,
            pretrained=pretrained,
            weights=str(weights) if weights else None,
            name=name,
            version=version,
            data_root=str(data_root) if data_root else None,
            calibration_manifest=str(calibration_manifest) if calibration_manifest else None,
            calibration_size=calibration_size,
            test_manifest=str(test_manifest) if test_manifest else None,
            parity_size=parity_size,
            examples=tuple(str(p) for p in example or ()),
            ood_images=tuple(str(p) for p in ood_image or ()),
            card_notes=str(card_notes) if card_notes else None,
            int8=int8,
            require_int8=require_int8,
            force=force,
            top_k=top_k,
            bounds=ParityBounds(min_int8_agreement=min_int8_agreement),
            scope=scope,
            scope_train=str(scope_train) if scope_train else None,
            scope_val=str(scope_val) if scope_val else None,
            scope_test=str(scope_test) if scope_test else None,
            out_of_scope=str(out_of_scope) if out_of_scope else None,
            scope_method=scope_method,
        )
        with err.status("exporting..."):
            result = run_export(config)
    except ParityError as exc:
        _print_table(exc.report, Console(), Table, title="parity (FAILED, nothing written)")
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    except ExportError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    console = Console()
    _print_table(result.parity, console, Table, title=f"parity: {result.out}")
    for variant, f in result.bundle.files.items():
        console.print(f"{variant}: {result.out / f.path} {f.bytes:,} B sha256 {f.sha256}")
    console.print(f"wrote {result.out} in {result.seconds['total']:.1f} s")
    if result.int8.get("status") == "left_out":
        err.print(f"[yellow]note:[/yellow] {int8_left_out_message(result.int8)}", highlight=False)
    from skyclass.train.trackers.commands import track_export

    digest = track_export(trackers, source, result.out)
    if digest:
        console.print(f"logged to {', '.join(trackers[1:])}: model folder sha256 {digest}")


def _trackers(log: str | None, err: Any) -> Any:
    """The trackers asked for, their extras checked before any work (one line if missing)."""
    from rich.markup import escape

    from skyclass.train.trackers import TrackerUnavailable, require
    from skyclass.train.trackers.commands import wanted

    try:
        trackers = wanted(log)
        require(trackers)
    except TrackerUnavailable as exc:  # the message names skyclass[extra]: not markup
        err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    return trackers


def _print_table(report: Any, console: Any, table_cls: Any, title: str) -> None:
    from skyclass.export.parity import parity_rows

    table = table_cls(title=title)
    for col in ("check", "value", "bound"):
        table.add_column(col)
    for row in parity_rows(report):
        table.add_row(*row)
    console.print(table)


#: This area's commands, by the name the CLI gives them.
COMMANDS = {"export": export}
