"""CLI commands of skyclass.export (heavy imports stay inside the commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

_Path = Path | None
Source = Annotated[
    str | None,
    typer.Argument(
        help="A run dir (uses checkpoints/best.pt and its data paths) or a checkpoint file.",
        show_default=False,
    ),
]
Out = Annotated[Path, typer.Option("--out", help="The model folder to write (models/NAME).")]
Pretrained = Annotated[
    str | None,
    typer.Option(
        help="Export a plain pretrained classifier instead of a run: 'imagenet' (the 1000-class "
        "torchvision MobileNetV2; needs --weights, and --data-root for calibration/parity photos)."
    ),
]
Weights = Annotated[_Path, typer.Option(help="State_dict for --pretrained imagenet.")]
Name = Annotated[str | None, typer.Option(help="Model name [default: run dir name].")]
Version = Annotated[str | None, typer.Option(help="Model version [default: from stage/epoch].")]
DataRoot = Annotated[
    _Path,
    typer.Option(
        help="Image root for manifests [default: the checkpoint's]; or a folder to sample."
    ),
]
CalibrationManifest = Annotated[
    _Path, typer.Option(help="CSV of int8 calibration images [default: the run's train manifest].")
]
CalibrationSize = Annotated[int, typer.Option(help="Calibration images (stratified sample).")]
TestManifest = Annotated[
    _Path, typer.Option(help="CSV of parity/test images [default: the run's test manifest].")
]
ParitySize = Annotated[
    int | None,
    typer.Option(help="Cap on parity images [default: the whole test manifest, or 200 sampled]."),
]
Example = Annotated[
    list[Path] | None, typer.Option(metavar="<path>", help="A photo whose top-5 the card shows.")
]
OodImage = Annotated[
    list[Path] | None,
    typer.Option(
        metavar="<path>",
        help="A photo of none of the classes; the card says what the model answers.",
    ),
]
CardNotes = Annotated[
    _Path,
    typer.Option(
        help="A markdown file the card carries as its 'Notes' section (other protocols...)."
    ),
]
Int8 = Annotated[
    bool,
    typer.Option(
        "--int8/--no-int8",
        help="Also measure int8 and write model.int8.onnx if it meets its bounds.",
    ),
]
RequireInt8 = Annotated[
    bool,
    typer.Option("--require-int8", help="Fail, writing nothing, if int8 misses its bounds."),
]
TopK = Annotated[
    int | None, typer.Option(help="top_k in model.json [default: all if <= 10, else 5].")
]
MinInt8Agreement = Annotated[
    float,
    typer.Option(
        help="Bound on the lower end of the 95% Wilson interval of int8 vs fp32 top-1 "
        "agreement (fraction): few images need a higher agreement to pass."
    ),
]
Force = Annotated[bool, typer.Option("--force", help="Replace an existing model folder.")]
Scope = Annotated[
    bool,
    typer.Option("--scope/--no-scope", help="Calibrate and write a scope score (scope.npz)."),
]
ScopeTrain = Annotated[_Path, typer.Option(help="Scope fit photos [default: the run's train].")]
ScopeVal = Annotated[
    _Path,
    typer.Option(help="Scope threshold photos (95% kept) [default: val.csv beside the train one]."),
]
ScopeTest = Annotated[_Path, typer.Option(help="Scope figures photos [default: the run's test].")]
OutOfScope = Annotated[
    _Path,
    typer.Option(
        help="Folder of out-of-scope photos with a SOURCES.tsv: compare methods, train OE."
    ),
]
ScopeMethod = Annotated[str, typer.Option(help="Scope method, or auto (best measured).")]
Log = Annotated[
    str | None,
    typer.Option(
        "--log",
        help="Trackers (tensorboard,mlflow,wandb) to log the model folder into, as an artifact "
        "with its sha256: the source run's tracker runs (its trackers.json).",
    ),
]


def _text(path: Path | None) -> str | None:
    return str(path) if path else None


def export(
    out: Out,
    source: Source = None,
    pretrained: Pretrained = None,
    weights: Weights = None,
    name: Name = None,
    version: Version = None,
    data_root: DataRoot = None,
    calibration_manifest: CalibrationManifest = None,
    calibration_size: CalibrationSize = 300,
    test_manifest: TestManifest = None,
    parity_size: ParitySize = None,
    example: Example = None,
    ood_image: OodImage = None,
    card_notes: CardNotes = None,
    int8: Int8 = True,
    require_int8: RequireInt8 = False,
    top_k: TopK = None,
    min_int8_agreement: MinInt8Agreement = 0.95,
    force: Force = False,
    scope: Scope = True,
    scope_train: ScopeTrain = None,
    scope_val: ScopeVal = None,
    scope_test: ScopeTest = None,
    out_of_scope: OutOfScope = None,
    scope_method: ScopeMethod = "auto",
    log: Log = None,
) -> None:
    """Export a trained run (or pretrained ImageNet weights) to a model folder: ONNX fp32 + int8,
    parity.json, MODEL_CARD.md and model.json. Exits non-zero, writing nothing, if fp32 parity
    fails; int8 that misses its bounds is left out of the folder (and said so) unless
    --require-int8."""
    from rich.console import Console

    from skyclass.export.config import ExportConfig, ExportError, ParityBounds
    from skyclass.outputs import OutputExists, check_writable

    err = Console(stderr=True, soft_wrap=True)
    try:
        check_writable(out)  # before any work
    except OutputExists as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    trackers = _trackers(log, err)
    try:
        config = ExportConfig(
            out=str(out),
            source=source,
            pretrained=pretrained,
            weights=_text(weights),
            name=name,
            version=version,
            data_root=_text(data_root),
            calibration_manifest=_text(calibration_manifest),
            calibration_size=calibration_size,
            test_manifest=_text(test_manifest),
            parity_size=parity_size,
            examples=tuple(str(p) for p in example or ()),
            ood_images=tuple(str(p) for p in ood_image or ()),
            card_notes=_text(card_notes),
            int8=int8,
            require_int8=require_int8,
            force=force,
            top_k=top_k,
            bounds=ParityBounds(min_int8_agreement=min_int8_agreement),
            scope=scope,
            scope_train=_text(scope_train),
            scope_val=_text(scope_val),
            scope_test=_text(scope_test),
            out_of_scope=_text(out_of_scope),
            scope_method=scope_method,
        )
    except ExportError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    _run(config, err, trackers)


def _run(config: Any, err: Any, trackers: Any) -> None:
    """Run the export, print its parity table and files; one line and exit 1 on failure."""
    from rich.console import Console
    from rich.table import Table

    from skyclass.export.config import ExportError
    from skyclass.export.pipeline import ParityError, int8_left_out_message, run_export

    try:
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

    digest = track_export(trackers, config.source, result.out)
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
