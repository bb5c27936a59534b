"""CLI commands of skyclass.data: ``audit`` and ``split`` (heavy imports stay inside them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from skyclass.cli import cli_options
from skyclass.cli import fail as _fail

EXIT_BAD_INPUT = 2
EXIT_UNREADABLE = 3


def audit(
    ctx: typer.Context,
    data_dir: Path = typer.Argument(..., help="Folder with one subfolder per class."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (refused if it exists)."),
    near_threshold: int = typer.Option(6, help="Max pHash Hamming distance (64 bits)."),
    colour_threshold: float = typer.Option(10.0, help="Max mean 8x8 RGB difference (0-255)."),
    min_side: int = typer.Option(32, help="Short side below this: tiny."),
    max_aspect: float = typer.Option(4.0, help="Long/short side above this: extreme aspect."),
    kmeans_k: int = typer.Option(0, help="Clusters per class; 0 picks k in 2..6 by silhouette."),
    kmeans_iqr: float = typer.Option(3.0, help="Outlier fence: q3 + this * IQR of distances."),
    keep_conflicts: bool = typer.Option(
        False, help="Keep cross-class duplicates in clean.csv (default: leave them out)."
    ),
    workers: int = typer.Option(0, help="Processes; 0 = one per CPU core."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
) -> None:
    """Audit an image folder (never modifies it): audit.json, report.html, clean.csv, plots."""
    from skyclass.data.audit import AuditConfig, AuditInputError, run_audit
    from skyclass.data.report import write_outputs
    from skyclass.outputs import OutputExists, check_output
    from skyclass.progress import progress_bar

    try:
        check_output(out, force)
        config = AuditConfig(
            root=data_dir,
            near_threshold=near_threshold,
            colour_threshold=colour_threshold,
            min_side=min_side,
            max_aspect=max_aspect,
            kmeans_k=kmeans_k or None,
            kmeans_iqr=kmeans_iqr,
            drop_label_conflicts=not keep_conflicts,
            workers=workers,
        )
        with progress_bar(desc="auditing", unit="img", enabled=not cli_options(ctx).quiet) as bar:
            report = run_audit(config, progress=bar.update, total=_set_total(bar))
        write_outputs(report, out, force=force)
    except (AuditInputError, OutputExists) as exc:
        raise _fail(str(exc), exc.exit_code) from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    counts = report.counts()
    n = len(report.files)
    used = sum(r.status == "use" for r in report.clean)
    typer.echo(
        f"audited {n} files in {report.seconds:.1f} s ({n / max(report.seconds, 1e-9):.0f}/s)"
    )
    for check, count in counts.items():
        if count:
            typer.echo(f"  {check:<20} {count}")
    typer.echo(f"clean.csv: {used} to use, {n - used} left out -> {out}")
    unreadable = counts.get("unreadable", 0)
    if unreadable:
        typer.echo(
            f"error: {unreadable} file(s) could not be read (see {out}/audit.json); "
            "the audit is incomplete",
            err=True,
        )
        raise typer.Exit(EXIT_UNREADABLE)


def split(
    manifest: Path = typer.Argument(..., help="CSV with path,label[,group][,status] columns."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (refused if it exists)."),
    val: float = typer.Option(0.10, help="Validation fraction."),
    test: float = typer.Option(0.15, help="Test fraction."),
    seed: int = typer.Option(0, help="Seed: same seed, same split."),
    groups: Path | None = typer.Option(None, help="CSV/TSV naming a group per file."),
    group_column: str = typer.Option("source_repo", help="Column of --groups to group by."),
    subset_prefix: list[str] = typer.Option(
        [],
        metavar="<str>",
        help="Also write test-PREFIX.csv: the test rows whose file name starts with it.",
    ),
    review: Path | None = typer.Option(
        None, help="Filled-in label review sheet (from label-issues): exclude/relabel its files."
    ),
    allow_empty: bool = typer.Option(
        False, "--allow-empty", help="Write a split that leaves a class empty in a part (warns)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
) -> None:
    """Stratified, group-aware split: near duplicates and metadata groups stay on one side."""
    from rich.console import Console
    from rich.table import Table

    from skyclass.data.split import SPLITS, SplitConfig, SplitInputError, make_split, write_split
    from skyclass.outputs import OutputExists, check_output

    try:
        check_output(out, force)
        config = SplitConfig(
            manifest, val, test, seed, groups, group_column, review, allow_empty=allow_empty
        )
        result = make_split(config)
        write_split(result, out, force=force, prefixes=tuple(subset_prefix))
    except (SplitInputError, OutputExists) as exc:
        raise _fail(str(exc), exc.exit_code) from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    summary = result.summary()
    table = Table(title=f"split of {manifest} (seed {seed})")
    table.add_column("class")
    for s in SPLITS:
        table.add_column(s, justify="right")
    empty = summary["empty_parts"]
    for label in summary["labels"]:
        table.add_row(
            label,
            *(
                "[red]0 (empty)[/red]"
                if s in empty.get(label, ())
                else str(summary["splits"][s]["per_class"][label])
                for s in SPLITS
            ),
        )
    table.add_row("[b]all[/b]", *(str(summary["splits"][s]["n"]) for s in SPLITS))
    table.add_row("groups", *(str(summary["splits"][s]["groups"]) for s in SPLITS))
    console = Console()
    console.print(table)
    if summary["per_source"]:
        src = Table(title=f"per {group_column} (class | value)")
        src.add_column("group")
        for s in SPLITS:
            src.add_column(s, justify="right")
        for key, c in summary["per_source"].items():
            src.add_row(key, *(str(c[s]) for s in SPLITS))
        console.print(src)
    if empty:
        typer.echo(f"warning: empty class in a split: {result.empty_message()}", err=True)
    if result.dropped:
        console.print(f"left out {result.dropped} manifest rows whose status is not 'use'")
    if review is not None:
        done = ", ".join(f"{len(p)} {d}" for d, p in result.reviewed.items())
        console.print(f"label review {review}: {done}")
    console.print(f"wrote {out}")


#: This area's commands, by the name the CLI gives them.
COMMANDS = {"audit": audit, "split": split}


def _set_total(bar: Any) -> Any:
    """A ``total`` callback for :func:`run_audit` that sizes a progress bar once it is known."""

    def set_total(n: int) -> None:
        bar.total = n
        if hasattr(bar, "refresh"):
            bar.refresh()

    return set_total
