"""CLI commands of skyclass.train: lr-find, train, evaluate, label-issues (heavy imports inside)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from skyclass.cli import cli_options
from skyclass.cli import fail as _fail

_OVERRIDE_HELP = "Overrides the config file's value."


def _load(config: Path, **overrides: Any) -> Any:
    from skyclass.train.config import load_config

    return load_config(config, **overrides)


def _user_errors() -> tuple[type[Exception], ...]:
    from skyclass.data.dataset import DataError
    from skyclass.model import CheckpointError
    from skyclass.outputs import OutputExists
    from skyclass.train.config import ConfigError
    from skyclass.train.device import DeviceError
    from skyclass.train.run_state import RunExists

    return (ConfigError, DataError, RunExists, CheckpointError, DeviceError, OutputExists)


_DEVICE_HELP = "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps."


def _forwarded_args(ctx: typer.Context, drop: str) -> list[str]:
    """The command line of this command, rebuilt from its parsed options, without ``drop``."""
    args = [ctx.info_name or "train"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        is_option = any(o.startswith("-") for o in param.opts)
        if param.name == drop or not is_option or value is None:
            continue
        if getattr(param, "is_flag", False):
            if value != param.default:
                args.append(param.opts[0] if value else param.secondary_opts[0])
        elif value != param.default:
            args += [param.opts[0], str(value)]
    return args


def _hand_over(ctx: typer.Context, nproc: int, cfg: Any, device: str | None) -> None:
    """Check, then run this same command under torchrun on ``nproc`` processes."""
    import os

    from skyclass.train.device import probe
    from skyclass.train.launch import check_launch, hand_over
    from skyclass.train.run_state import RunExists

    check_launch(nproc, device or cfg.device, cfg.batch_size, probe(), os.environ)
    fresh = ctx.params.get("resume") is None and not ctx.params.get("force")
    if fresh and cfg.run_dir.exists() and any(cfg.run_dir.iterdir()):
        raise RunExists(f"run dir {cfg.run_dir} exists; use --force to overwrite or --resume")
    code = hand_over(nproc, _forwarded_args(ctx, "nproc_per_node"))
    if code:
        raise _fail("a training process failed (its error is above)", code)


def _bars(ctx: typer.Context, progress: bool) -> bool:
    """Progress bars unless --no-progress or the global -q."""
    return progress and not cli_options(ctx).quiet


def _interrupted(run_dir: Path | None) -> typer.Exit:
    """Ctrl-C: say how to resume this very run, or that it had nothing to resume yet."""
    if run_dir is None:
        return _fail("interrupted", 130)
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return _fail(f"interrupted; resume with: skyclass train --resume {run_dir}", 130)
    return _fail(f"interrupted before the first checkpoint of {run_dir}; nothing to resume", 130)


_LOG_HELP = "Trackers, comma-separated: csv,tensorboard,mlflow,wandb (added to the config's log)."


def _log_list(log: str | None) -> tuple[str, ...]:
    from skyclass.train.trackers import parse_log

    return parse_log(log) if log else ()


def _train_config(
    config: Path | None, resume: Path | None, log: str | None, **overrides: Any
) -> Any:
    """The config to train with: a placeholder when resuming (the run dir holds the real one)."""
    if resume is not None:
        from skyclass.train.config import TrainConfig

        return TrainConfig(
            name="resume", data_root="", train="", val="", log=_log_list(log) or ("csv",)
        )
    if config is None:
        raise _fail("give --config FILE (or --resume RUN_DIR)")
    paths = ("out", "data_root", "train", "val", "test")
    overrides.update({k: str(overrides[k]) if overrides[k] else None for k in paths})
    cfg = _load(config, **overrides)
    return replace(cfg, log=(*cfg.log, *_log_list(log))) if log else cfg


def train(
    ctx: typer.Context,
    config: Path = typer.Option(None, "--config", "-c", help="TOML training config."),
    resume: Path = typer.Option(None, help="Resume the run in this run dir (from last.pt)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing run dir."),
    name: str = typer.Option(None, help=_OVERRIDE_HELP),
    out: Path = typer.Option(None, help="Parent of the run dir. " + _OVERRIDE_HELP),
    weights: str = typer.Option(None, help="Backbone state_dict path or 'imagenet'."),
    data_root: Path = typer.Option(None, help=_OVERRIDE_HELP),
    train_manifest: Path = typer.Option(None, "--train", help=_OVERRIDE_HELP),
    val_manifest: Path = typer.Option(None, "--val", help=_OVERRIDE_HELP),
    test_manifest: Path = typer.Option(None, "--test", help=_OVERRIDE_HELP),
    image_size: int = typer.Option(None, help=_OVERRIDE_HELP),
    batch_size: int = typer.Option(None, help=_OVERRIDE_HELP),
    max_steps: int = typer.Option(None, help="Batches per epoch at most (tiny runs)."),
    epochs_scale: float = typer.Option(None, help="Multiply every stage's epochs."),
    workers: int = typer.Option(None, help="DataLoader workers. " + _OVERRIDE_HELP),
    threads: int = typer.Option(None, help="torch threads. " + _OVERRIDE_HELP),
    seed: int = typer.Option(None, help=_OVERRIDE_HELP),
    device: str = typer.Option(None, help=_DEVICE_HELP + " " + _OVERRIDE_HELP),
    precision: str = typer.Option(None, help="auto, fp32, bf16 or fp16. " + _OVERRIDE_HELP),
    nproc_per_node: int = typer.Option(
        None, help="Processes on this machine, one per device: hands over to torchrun."
    ),
    log: str = typer.Option(None, "--log", help=_LOG_HELP),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Train by progressive unfreezing (LR range test + OneCycle per stage) into runs/NAME."""
    errors = _user_errors()
    from skyclass.outputs import check_writable
    from skyclass.train.fit import fit

    run_dir = resume
    try:
        cfg = _train_config(
            config,
            resume,
            log,
            name=name,
            out=out,
            weights=weights,
            data_root=data_root,
            train=train_manifest,
            val=val_manifest,
            test=test_manifest,
            image_size=image_size,
            batch_size=batch_size,
            max_steps=max_steps,
            epochs_scale=epochs_scale,
            workers=workers,
            num_threads=threads,
            seed=seed,
            device=device,
            precision=precision,
        )
        run_dir = run_dir or cfg.run_dir
        if resume is not None or force or not run_dir.exists():  # else refused below, untouched
            check_writable(run_dir / "checkpoints")
        if nproc_per_node is not None and nproc_per_node > 1:
            _hand_over(ctx, nproc_per_node, cfg, device)
            return
        bars = _bars(ctx, progress)
        result = fit(cfg, resume=resume, force=force, progress=bars, device=device)
    except errors as exc:
        raise _fail(str(exc)) from None
    except KeyboardInterrupt:
        raise _interrupted(run_dir) from None
    if not result.rank:
        _print_summary(result)


def _print_summary(result: Any) -> None:
    s = result.summary
    typer.echo(f"run: {result.run_dir}")
    typer.echo(f"best val accuracy: {s['best_val_accuracy']:.4f} (epoch {s['best_epoch']})")
    if "test_accuracy" in s:
        typer.echo(f"test accuracy: {s['test_accuracy']:.4f}")
    for stage, ips in s["images_per_s"].items():
        typer.echo(f"stage {stage}: {ips:.1f} train images/s, max lr {s['stage_lrs'][stage]:.2e}")
    typer.echo(f"wall time: {s['wall_seconds_this_session']:.0f} s")


def lr_find(
    ctx: typer.Context,
    config: Path = typer.Option(..., "--config", "-c", help="TOML training config."),
    stage: str = typer.Option(None, help="Stage name (default: the first)."),
    checkpoint: Path = typer.Option(None, help="Start from this checkpoint's weights."),
    out: Path = typer.Option(None, help="Output folder (default: OUT/lr-find-NAME)."),
    num_iter: int = typer.Option(None, help="Batches in the sweep."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing output."),
    weights: str = typer.Option(None, help=_OVERRIDE_HELP),
    data_root: Path = typer.Option(None, help=_OVERRIDE_HELP),
    batch_size: int = typer.Option(None, help=_OVERRIDE_HELP),
    device: str = typer.Option(None, help=_DEVICE_HELP + " " + _OVERRIDE_HELP),
    log: str = typer.Option(None, "--log", help=_LOG_HELP),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """LR range test for one stage: writes the curve (PNG, JSON) and prints the suggestion."""
    errors = _user_errors()
    from skyclass.outputs import check_writable
    from skyclass.train.lr_find import run_lr_find

    try:
        cfg = _load(
            config,
            weights=weights,
            data_root=str(data_root) if data_root else None,
            batch_size=batch_size,
            device=device,
        )
        stages = {s.name: s for s in cfg.stages}
        chosen = stages.get(stage) if stage else cfg.stages[0]
        if chosen is None:
            raise _fail(f"unknown stage {stage!r}; config has {', '.join(stages)}")
        folder = out or Path(cfg.out) / f"lr-find-{cfg.name}"
        png = folder / f"lr_find_{chosen.name}.png"
        if png.exists() and not force:
            raise _fail(f"{png} exists; use --force to overwrite")
        check_writable(png)
        from skyclass.train.trackers import require
        from skyclass.train.trackers.commands import track_lr_find, wanted

        trackers = wanted(cfg.log, log)
        require(trackers)
        bars = _bars(ctx, progress)
        result = run_lr_find(
            cfg, chosen, checkpoint=checkpoint, num_iter=num_iter, png=png, progress=bars
        )
        track_lr_find(trackers, folder, cfg.to_dict(), chosen.name, result, png)
    except errors as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"lr-find done ({len(result.lrs)} steps)", err=True)
    typer.echo(f"suggested lr ({result.method}): {result.suggestion:.2e}")
    typer.echo(f"min-loss lr: {result.min_loss_lr:.2e}, steepest: {result.steepest_lr:.2e}")
    typer.echo(f"curve: {png}")


def evaluate(
    ctx: typer.Context,
    target: Path = typer.Argument(..., help="Run dir or checkpoint file."),
    manifest: Path = typer.Argument(..., help="Manifest CSV (path,label,group)."),
    data_root: Path = typer.Option(None, help="Default: the checkpoint's data root."),
    out: Path = typer.Option(None, help="Default: RUN/reports/<manifest stem>."),
    batch_size: int = typer.Option(64, help="Images per forward pass (>= 1)."),
    force: bool = typer.Option(False, "--force", help="Overwrite existing reports."),
    device: str = typer.Option("auto", help=_DEVICE_HELP),
    log: str = typer.Option(
        None, "--log", help=_LOG_HELP.replace(" (added to the config's log)", "")
    ),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Per-class metrics, confusion matrix and misclassified gallery for any manifest."""
    errors = _user_errors()
    from skyclass.outputs import check_writable
    from skyclass.train.evaluation import evaluate_manifest

    if batch_size < 1:
        raise _fail(f"--batch-size must be at least 1, got {batch_size}")
    try:
        if out is not None:
            if out.exists() and not out.is_dir():
                raise _fail(f"--out {out} exists and is not a folder")
            check_writable(out)
        from skyclass.train.trackers import require
        from skyclass.train.trackers.commands import track_evaluate, wanted

        trackers = wanted(log)
        require(trackers)
        metrics, folder = evaluate_manifest(
            target,
            manifest,
            data_root=data_root,
            out_dir=out,
            force=force,
            batch_size=batch_size,
            device=device,
            progress=_bars(ctx, progress),
        )
        track_evaluate(trackers, target, manifest, folder)
    except errors as exc:
        raise _fail(str(exc)) from None
    typer.echo(f"accuracy: {metrics['accuracy']:.4f} (n={metrics['n']})")
    for label, m in metrics["per_class"].items():
        typer.echo(
            f"  {label:20s} precision {m['precision']:.3f} recall {m['recall']:.3f} "
            f"f1 {m['f1']:.3f} support {m['support']}"
        )
    typer.echo(f"reports: {folder}")


def label_issues(
    manifest: Path = typer.Argument(..., help="CSV with path,label[,group] (e.g. clean.csv)."),
    data_root: Path = typer.Option(..., help="Folder the manifest's paths are relative to."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (refused if it exists)."),
    weights: str = typer.Option(
        "imagenet", help="Backbone: a torchvision mobilenet_v2 state_dict, or 'imagenet' (online)."
    ),
    folds: int = typer.Option(5, help="Cross-validation folds (near-duplicate groups kept whole)."),
    seed: int = typer.Option(0, help="Fold assignment seed."),
    threads: int = typer.Option(2, help="torch threads."),
    device: str = typer.Option("auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda[:N], mps."),
    cache_dir: str = typer.Option(".cache/skyclass", help="Decoded-image cache ('' for none)."),
    gallery: bool = typer.Option(True, help="Also write gallery.html (embeds thumbnails)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output folder."),
) -> None:
    """List suspected label errors for review (out-of-fold predictions, confident joint)."""
    from skyclass.outputs import OutputExists, check_output

    try:
        from skyclass.data.label_issues import write_outputs
        from skyclass.train.device import probe, resolve_device
        from skyclass.train.label_issues import LabelIssueConfig, run_label_issues

        check_output(out, force)
        if weights != "imagenet" and not Path(weights).is_file():
            raise _fail(f"weights file not found: {weights}")
        config = LabelIssueConfig(
            manifest,
            data_root,
            weights,
            folds,
            seed,
            threads=threads,
            cache_dir=cache_dir or None,
            device=resolve_device(device, probe()),
        )
        report = run_label_issues(config)
        write_outputs(report, out, force=force, gallery=gallery)
    except ModuleNotFoundError as exc:
        raise _fail(
            f"label-issues needs the train extra ({exc.name} is missing): "
            "pip install 'skyclass[train]'"
        ) from None
    except OutputExists as exc:
        raise _fail(str(exc), exc.exit_code) from None
    except ValueError as exc:  # DataError included: a bad manifest, a class too small for folds
        raise _fail(str(exc)) from None
    per = ", ".join(f"{c} {n}" for c, n in report.summary()["issues_per_label"].items())
    typer.echo(
        f"{len(report.issues)} suspects of {report.n} (out-of-fold accuracy "
        f"{report.oof_accuracy:.1%}; by given label: {per}) -> {out}/review.csv"
    )


#: This area's commands, by the name the CLI gives them.
COMMANDS = {
    "train": train,
    "lr-find": lr_find,
    "evaluate": evaluate,
    "label-issues": label_issues,
}
