"""CLI commands of skyclass.train: lr-find, train, evaluate (heavy imports inside the commands)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from skyclass.cli import fail as _fail

_OVERRIDE_HELP = "Overrides the config file's value."


def _load(config: Path, **overrides: Any) -> Any:
    from skyclass.train.config import load_config

    return load_config(config, **overrides)


def _user_errors() -> tuple[type[Exception], ...]:
    from skyclass.data.dataset import DataError
    from skyclass.model import CheckpointError
    from skyclass.train.config import ConfigError
    from skyclass.train.fit import RunExists

    return (ConfigError, DataError, RunExists, CheckpointError)


def register(app: typer.Typer) -> None:
    """Add this area's commands to the skyclass CLI."""

    @app.command("train")
    def train(
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
        progress: bool = typer.Option(True, help="Show progress bars."),
    ) -> None:
        """Train by progressive unfreezing (LR range test + OneCycle per stage) into runs/NAME."""
        errors = _user_errors()
        from skyclass.train.fit import fit

        try:
            if resume is not None:
                from skyclass.train.config import TrainConfig

                cfg: Any = TrainConfig(name="resume", data_root="", train="", val="")
            else:
                if config is None:
                    raise _fail("give --config FILE (or --resume RUN_DIR)")
                cfg = _load(
                    config,
                    name=name,
                    out=str(out) if out else None,
                    weights=weights,
                    data_root=str(data_root) if data_root else None,
                    train=str(train_manifest) if train_manifest else None,
                    val=str(val_manifest) if val_manifest else None,
                    test=str(test_manifest) if test_manifest else None,
                    image_size=image_size,
                    batch_size=batch_size,
                    max_steps=max_steps,
                    epochs_scale=epochs_scale,
                    workers=workers,
                    num_threads=threads,
                    seed=seed,
                )
            result = fit(cfg, resume=resume, force=force, progress=progress)
        except errors as exc:
            raise _fail(str(exc)) from None
        except KeyboardInterrupt:
            raise _fail("interrupted; resume with --resume RUN_DIR", 130) from None
        s = result.summary
        typer.echo(f"run: {result.run_dir}")
        typer.echo(f"best val accuracy: {s['best_val_accuracy']:.4f} (epoch {s['best_epoch']})")
        if "test_accuracy" in s:
            typer.echo(f"test accuracy: {s['test_accuracy']:.4f}")
        for stage, ips in s["images_per_s"].items():
            typer.echo(
                f"stage {stage}: {ips:.1f} train images/s, max lr {s['stage_lrs'][stage]:.2e}"
            )
        typer.echo(f"wall time: {s['wall_seconds_this_session']:.0f} s")

    @app.command("lr-find")
    def lr_find_cmd(
        config: Path = typer.Option(..., "--config", "-c", help="TOML training config."),
        stage: str = typer.Option(None, help="Stage name (default: the first)."),
        checkpoint: Path = typer.Option(None, help="Start from this checkpoint's weights."),
        out: Path = typer.Option(None, help="Output folder (default: OUT/lr-find-NAME)."),
        num_iter: int = typer.Option(None, help="Batches in the sweep."),
        force: bool = typer.Option(False, "--force", help="Overwrite existing output."),
        weights: str = typer.Option(None, help=_OVERRIDE_HELP),
        data_root: Path = typer.Option(None, help=_OVERRIDE_HELP),
        batch_size: int = typer.Option(None, help=_OVERRIDE_HELP),
        progress: bool = typer.Option(True, help="Show progress bars."),
    ) -> None:
        """LR range test for one stage: writes the curve (PNG, JSON) and prints the suggestion."""
        errors = _user_errors()
        try:
            cfg = _load(
                config,
                weights=weights,
                data_root=str(data_root) if data_root else None,
                batch_size=batch_size,
            )
            stages = {s.name: s for s in cfg.stages}
            chosen = stages.get(stage) if stage else cfg.stages[0]
            if chosen is None:
                raise _fail(f"unknown stage {stage!r}; config has {', '.join(stages)}")
            folder = out or Path(cfg.out) / f"lr-find-{cfg.name}"
            png = folder / f"lr_find_{chosen.name}.png"
            if png.exists() and not force:
                raise _fail(f"{png} exists; use --force to overwrite")
            result = _run_lr_find(cfg, chosen, checkpoint, num_iter, png, progress)
        except errors as exc:
            raise _fail(str(exc)) from None
        typer.echo(f"suggested lr ({result.method}): {result.suggestion:.2e}")
        typer.echo(f"min-loss lr: {result.min_loss_lr:.2e}, steepest: {result.steepest_lr:.2e}")
        typer.echo(f"curve: {png}")

    @app.command("evaluate")
    def evaluate_cmd(
        target: Path = typer.Argument(..., help="Run dir or checkpoint file."),
        manifest: Path = typer.Argument(..., help="Manifest CSV (path,label,group)."),
        data_root: Path = typer.Option(None, help="Default: the checkpoint's data root."),
        out: Path = typer.Option(None, help="Default: RUN/reports/<manifest stem>."),
        batch_size: int = typer.Option(64),
        force: bool = typer.Option(False, "--force", help="Overwrite existing reports."),
        progress: bool = typer.Option(True, help="Show progress bars."),
    ) -> None:
        """Per-class metrics, confusion matrix and misclassified gallery for any manifest."""
        errors = _user_errors()
        from skyclass.train.fit import evaluate_manifest

        try:
            metrics, folder = evaluate_manifest(
                target,
                manifest,
                data_root=data_root,
                out_dir=out,
                force=force,
                batch_size=batch_size,
                progress=progress,
            )
        except errors as exc:
            raise _fail(str(exc)) from None
        typer.echo(f"accuracy: {metrics['accuracy']:.4f} (n={metrics['n']})")
        for label, m in metrics["per_class"].items():
            typer.echo(
                f"  {label:20s} precision {m['precision']:.3f} recall {m['recall']:.3f} "
                f"f1 {m['f1']:.3f} support {m['support']}"
            )
        typer.echo(f"reports: {folder}")


def _run_lr_find(
    cfg: Any, stage: Any, checkpoint: Path | None, num_iter: int | None, png: Path, progress: bool
) -> Any:
    from skyclass.data.dataset import DataError, ImageDataset, load_images
    from skyclass.data.transforms import build_train_transform, train_cache_tag, train_input
    from skyclass.model import build_model, load_checkpoint, set_trainable
    from skyclass.outputs import write_text_atomic
    from skyclass.train.fit import _train_loader, check_data, preprocess_config
    from skyclass.train.lr_find import lr_find, plot_lr_find
    from skyclass.train.reproducibility import make_deterministic
    from skyclass.train.schedule import first_trainable_block

    data = check_data(cfg)
    make_deterministic(cfg.seed, cfg.num_threads)
    pre = preprocess_config(cfg)
    model = build_model(len(data.class_names), weights=cfg.weights, dropout=cfg.dropout)
    if checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        if "model" not in ckpt:
            raise DataError(f"{checkpoint} is not a skyclass checkpoint (no 'model' state)")
        state = ckpt["model"]
        model.load_state_dict(state)
    set_trainable(model, stage.unfreeze)
    n = num_iter or cfg.lr_find.num_iter
    # Only the images the sweep will see are decoded.
    files = data.train.files()
    targets = data.train.targets(list(data.class_names))
    imgs = load_images(
        files,
        lambda b: train_input(b, pre, cfg.augment),
        tag=train_cache_tag(pre, cfg.augment),
        cache_dir=cfg.cache_dir,
        progress=progress,
        desc="decode train",
    )
    ds = ImageDataset(imgs, targets, build_train_transform(pre, cfg.augment))
    result = lr_find(
        model,
        _train_loader(ds, cfg, cfg.seed, data.train_weights),
        config=cfg.lr_find,
        stage=stage,
        first_trainable=first_trainable_block(model),
        num_iter=n,
        progress=progress,
    )
    plot_lr_find(result, png, f"stage {stage.name}")
    write_text_atomic(png.with_suffix(".json"), json.dumps(result.to_dict(), indent=1) + "\n")
    print(f"lr-find done ({len(result.lrs)} steps)", file=sys.stderr)
    return result
