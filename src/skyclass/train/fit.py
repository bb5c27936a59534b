"""The orchestrator: data checks, stages (LR range test + OneCycle), checkpoints, resume, reports.

Reproducibility: every epoch reseeds torch (dropout), the augmentation RNG and the sampler from
``seed`` and the global epoch number, so a run resumed from ``last.pt`` sees the same data order
and augmentations as an uninterrupted one, and its weights come out bit-identical.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from skyclass.core.preprocess import PreprocessConfig
from skyclass.data.dataset import (
    DataError,
    ImageDataset,
    Manifest,
    class_names_from_root,
    load_images,
    read_manifest,
)
from skyclass.data.transforms import (
    build_test_transform,
    build_train_transform,
    eval_cache_tag,
    eval_input,
    train_cache_tag,
    train_input,
)
from skyclass.train.config import TrainConfig, config_from_dict
from skyclass.train.sampling import source_balanced_weights

log = logging.getLogger(__name__)

METRICS_COLUMNS = (
    "epoch",
    "stage",
    "stage_epoch",
    "max_lr",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "train_images_per_s",
    "val_images_per_s",
    "seconds",
)


class RunExists(FileExistsError):
    """The run dir exists and neither --force nor --resume was given."""


@dataclass(frozen=True)
class Data:
    class_names: tuple[str, ...]
    train: Manifest
    val: Manifest
    test: Manifest | None
    #: Per training photo, how likely an epoch draws it (None = each once per epoch).
    train_weights: tuple[float, ...] | None = None


@dataclass(frozen=True)
class FitResult:
    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_val_accuracy: float
    history: tuple[dict[str, Any], ...]
    summary: dict[str, Any]


def preprocess_config(config: TrainConfig) -> PreprocessConfig:
    return PreprocessConfig(size=(config.image_size, config.image_size))


def check_data(config: TrainConfig) -> Data:
    """Read and check every manifest before any work; raises DataError with a one-line reason."""
    names = class_names_from_root(config.data_root)
    train = read_manifest(config.train, config.data_root, names)
    val = read_manifest(config.val, config.data_root, names)
    test = read_manifest(config.test, config.data_root, names) if config.test else None
    missing = sorted(set(names) - set(train.labels))
    if missing:
        raise DataError(f"{config.train}: no training images for class(es) {', '.join(missing)}")
    weights = None
    if config.source_balance:
        weights = tuple(
            source_balanced_weights(
                train.labels, _sources_of(train, config), config.source_balance
            ).tolist()
        )
    return Data(class_names=tuple(names), train=train, val=val, test=test, train_weights=weights)


def _sources_of(manifest: Manifest, config: TrainConfig) -> list[str]:
    """Each manifest row's source from ``config.sources``; every row must have one."""
    from skyclass.data.split import SplitInputError, read_groups

    assert config.sources is not None
    try:
        table = read_groups(Path(config.sources), config.source_column)
    except SplitInputError as exc:
        raise DataError(f"sources: {exc}") from exc
    missing = [p for p in manifest.paths if p not in table]
    if missing:
        raise DataError(
            f"{config.sources}: no source for {len(missing)} training file(s), e.g. {missing[0]}"
        )
    return [table[p] for p in manifest.paths]


def _seed_for(config: TrainConfig, global_epoch: int, salt: int = 0) -> int:
    return (config.seed * 1_000_003 + global_epoch * 7_919 + salt) % (2**31)


def _train_loader(
    ds: ImageDataset, config: TrainConfig, seed: int, weights: Sequence[float] | None = None
) -> Any:
    """One epoch's loader: every photo once in a seeded order, or, with ``weights``, len(ds)
    seeded draws with replacement."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

    torch.manual_seed(seed)
    ds.reseed(seed)
    generator = torch.Generator().manual_seed(seed)
    if weights is None:
        sampler: Any = RandomSampler(ds, generator=generator)
    else:
        sampler = WeightedRandomSampler(
            list(weights), num_samples=len(ds), replacement=True, generator=generator
        )

    def init_worker(worker_id: int) -> None:
        info = torch.utils.data.get_worker_info()
        if info is not None:
            cast(ImageDataset, info.dataset).reseed(seed + 1 + worker_id)

    return DataLoader(
        _as_dataset(ds),
        batch_size=config.batch_size,
        sampler=sampler,
        drop_last=len(ds) > config.batch_size,
        num_workers=config.workers,
        worker_init_fn=init_worker if config.workers > 0 else None,
    )


class ViewDataset:
    """Cached prefix features: ``views[v, i]`` is view v of item i; ``reseed`` picks, for each
    item, which view this epoch sees."""

    def __init__(self, views: Any, targets: list[int]) -> None:
        import torch

        self.views = views
        self.targets = list(targets)
        self.choice = torch.zeros(len(targets), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.views[self.choice[i], i], self.targets[i]

    def reseed(self, seed: int) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        self.choice = torch.randint(self.views.shape[0], (len(self.targets),), generator=g)


def prefix_features(
    model: Any, ds: ImageDataset, block: int, batch_size: int, desc: str, progress: bool
) -> Any:
    """Outputs of ``model.features[:block]`` (eval mode, no grad) for every item of ``ds``."""
    import torch
    from torch.utils.data import DataLoader

    from skyclass.progress import progress_bar

    model.eval()
    out = []
    loader = DataLoader(_as_dataset(ds), batch_size=batch_size, shuffle=False, num_workers=0)
    with torch.no_grad():
        for x, _ in progress_bar(loader, desc=desc, unit="batch", enabled=progress):
            out.append(model.features[:block](x))
    return torch.cat(out)


def _eval_loader(ds: ImageDataset, config: TrainConfig) -> Any:
    from torch.utils.data import DataLoader

    return DataLoader(
        _as_dataset(ds), batch_size=config.eval_batch_size, shuffle=False, num_workers=0
    )


def _as_dataset(ds: ImageDataset) -> Any:
    """``ds`` for a DataLoader: a map-style dataset by protocol (``__getitem__``, ``__len__``),
    not a ``torch.utils.data.Dataset`` subclass, so typed as one here."""
    return ds


def _write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    from skyclass.outputs import write_text_atomic

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRICS_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    write_text_atomic(path, buf.getvalue())


def prepare_run_dir(config: TrainConfig, *, force: bool) -> Path:
    run_dir = config.run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        if not force:
            raise RunExists(f"run dir {run_dir} exists; use --force to overwrite or --resume")
        shutil.rmtree(run_dir)
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "reports").mkdir(parents=True, exist_ok=True)
    return run_dir


def fit(
    config: TrainConfig,
    *,
    resume: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
) -> FitResult:
    """Train all stages of ``config`` (or resume the run in ``resume``) and write reports."""
    import torch

    from skyclass.model import build_model, set_trainable
    from skyclass.outputs import write_text_atomic
    from skyclass.train.checkpoint import load_checkpoint, rng_state, save_checkpoint
    from skyclass.train.loop import evaluate, train_one_epoch
    from skyclass.train.lr_find import lr_find, plot_lr_find
    from skyclass.train.reports import plot_curves, write_eval_reports
    from skyclass.train.reproducibility import make_deterministic, run_environment
    from skyclass.train.schedule import (
        first_trainable_block,
        make_optimizer,
        make_scheduler,
        steps_per_epoch,
    )

    wall_start = time.perf_counter()
    ckpt: dict[str, Any] | None = None
    if resume is not None:
        last = Path(resume) / "checkpoints" / "last.pt"
        if not last.is_file():
            raise DataError(f"nothing to resume: {last} not found")
        ckpt = load_checkpoint(last)
        # The resumed run's own config, with its run dir where it is now.
        config = replace(
            config_from_dict(ckpt["config"]),
            out=str(Path(resume).parent),
            name=Path(resume).name,
        )
    data = check_data(config)
    if ckpt is not None:
        if tuple(ckpt["class_names"]) != data.class_names:
            raise DataError(f"classes changed since the checkpoint: {ckpt['class_names']}")
        run_dir = config.run_dir
    else:
        if config.weights not in (None, "imagenet") and not Path(config.weights).is_file():
            raise DataError(f"weights file not found: {config.weights}")
        run_dir = prepare_run_dir(config, force=force)
        write_text_atomic(run_dir / "config.json", config.to_json())
    make_deterministic(config.seed, config.num_threads)
    pre = preprocess_config(config)
    names = list(data.class_names)

    train_imgs = load_images(
        data.train.files(),
        lambda b: train_input(b, pre, config.augment),
        tag=train_cache_tag(pre, config.augment),
        cache_dir=config.cache_dir,
        memory_budget_mb=config.cache_memory_mb,
        progress=progress,
        desc="decode train",
    )
    test_tag = eval_cache_tag(pre)
    val_imgs = load_images(
        data.val.files(),
        lambda b: eval_input(b, pre),
        tag=test_tag,
        cache_dir=config.cache_dir,
        memory_budget_mb=config.cache_memory_mb,
        progress=progress,
        desc="decode val",
    )
    train_ds = ImageDataset(
        train_imgs, data.train.targets(names), build_train_transform(pre, config.augment)
    )
    test_tf = build_test_transform(pre)
    val_ds = ImageDataset(val_imgs, data.val.targets(names), test_tf)
    val_loader = _eval_loader(val_ds, config)

    torch.manual_seed(config.seed)
    model = build_model(len(names), weights=config.weights, dropout=config.dropout)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)

    # Frozen-prefix cache: K augmented views of each training image through features[:block].
    start_block = 0
    train_src: Any = train_ds
    class_weights = None
    if config.class_weights == "balanced":
        counts = torch.bincount(torch.tensor(train_ds.targets), minlength=len(names)).float()
        class_weights = counts.sum() / (len(names) * counts.clamp(min=1))
        log.info("class weights: %s", dict(zip(names, class_weights.tolist(), strict=True)))
    if config.feature_cache_views:
        from torch.utils.data import DataLoader, TensorDataset

        start_block = config.feature_cache_block
        t0 = time.perf_counter()
        views = []
        for v in range(config.feature_cache_views):
            train_ds.reseed(_seed_for(config, 100_000 + v, salt=31))
            views.append(
                prefix_features(
                    model,
                    train_ds,
                    start_block,
                    config.eval_batch_size,
                    f"cache view {v + 1}/{config.feature_cache_views}",
                    progress,
                )
            )
        train_src = ViewDataset(torch.stack(views), train_ds.targets)
        val_x = prefix_features(
            model, val_ds, start_block, config.eval_batch_size, "cache val", progress
        )
        val_loader = DataLoader(
            TensorDataset(val_x, torch.tensor(val_ds.targets)), batch_size=config.eval_batch_size
        )
        cache_seconds = time.perf_counter() - t0
        log.info("prefix cache: %d views in %.0f s", config.feature_cache_views, cache_seconds)
    else:
        cache_seconds = 0.0

    history: list[dict[str, Any]] = list(ckpt["history"]) if ckpt else []
    best_acc: float = ckpt["best_val_accuracy"] if ckpt else -1.0
    stage_lrs: dict[str, float] = dict(ckpt["stage_lrs"]) if ckpt else {}
    done_stage = ckpt["stage_index"] if ckpt else -1
    done_in_stage = ckpt["stage_epoch"] if ckpt else 0
    stage_epochs = [config.stage_epochs(s) for s in config.stages]
    data_paths = {
        "root": str(config.data_root),
        "train": str(config.train),
        "val": str(config.val),
        "test": str(config.test) if config.test else None,
    }
    n_steps = steps_per_epoch(len(train_ds), config.batch_size, config.max_steps)

    def payload(si: int, ep: int, g: int, optimizer: Any, scheduler: Any, row: dict) -> dict:
        return {
            "model": model.state_dict(),
            "class_names": names,
            "preprocess": pre.to_dict(),
            "dropout": config.dropout,
            "arch": "mobilenet_v2",
            "epoch": g,
            "stage": config.stages[si].name,
            "stage_index": si,
            "stage_epoch": ep,
            "config": config.to_dict(),
            "data": data_paths,
            "metrics": row,
            "best_val_accuracy": best_acc,
            "history": history,
            "stage_lrs": stage_lrs,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
        }

    for si, stage in enumerate(config.stages):
        n_ep = stage_epochs[si]
        if n_ep == 0 or si < done_stage or (si == done_stage and done_in_stage >= n_ep):
            continue
        set_trainable(model, stage.unfreeze)
        k = first_trainable_block(model)
        before = sum(stage_epochs[:si])
        start_ep = done_in_stage if si == done_stage else 0
        if stage.name not in stage_lrs:
            if stage.lr is not None:
                stage_lrs[stage.name] = stage.lr
            else:
                seed = _seed_for(config, before, salt=17)
                loader = _train_loader(train_src, config, seed, data.train_weights)
                res = lr_find(
                    model,
                    loader,
                    config=config.lr_find,
                    stage=stage,
                    first_trainable=k,
                    start_block=start_block,
                    num_iter=config.lr_find.num_iter,
                    progress=progress,
                )
                plot_lr_find(
                    res, run_dir / "reports" / f"lr_find_{stage.name}.png", f"stage {stage.name}"
                )
                write_text_atomic(
                    run_dir / "reports" / f"lr_find_{stage.name}.json",
                    json.dumps(res.to_dict(), indent=1) + "\n",
                )
                stage_lrs[stage.name] = res.suggestion
        max_lr = stage_lrs[stage.name]
        optimizer = make_optimizer(model, stage, max_lr)
        scheduler = make_scheduler(optimizer, stage, max_lr, n_ep * n_steps)
        if si == done_stage and ckpt is not None:
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
        log.info(
            "stage %s: blocks %s, %d epochs, max lr %.2e", stage.name, stage.unfreeze, n_ep, max_lr
        )
        for ep in range(start_ep, n_ep):
            g = before + ep
            loader = _train_loader(train_src, config, _seed_for(config, g), data.train_weights)
            desc = f"{stage.name} {ep + 1}/{n_ep}"
            tm = train_one_epoch(
                model,
                loader,
                optimizer,
                scheduler,
                first_trainable=k,
                start_block=start_block,
                max_steps=config.max_steps,
                channels_last=config.channels_last,
                class_weights=class_weights,
                label_smoothing=config.label_smoothing,
                mixup_alpha=config.mixup_alpha,
                desc=desc,
                progress=progress,
            )
            vm = evaluate(
                model,
                val_loader,
                start_block=start_block,
                channels_last=config.channels_last,
                desc="val",
                progress=progress,
            )
            row = {
                "epoch": g + 1,
                "stage": stage.name,
                "stage_epoch": ep + 1,
                "max_lr": max_lr,
                "train_loss": tm.loss,
                "train_accuracy": tm.accuracy,
                "val_loss": vm.loss,
                "val_accuracy": vm.accuracy,
                "train_images_per_s": tm.images_per_s,
                "val_images_per_s": vm.images_per_s,
                "seconds": tm.seconds + vm.seconds,
            }
            history.append(row)
            log.info(
                "epoch %d (%s): train loss %.3f acc %.3f | val loss %.3f acc %.3f | %.1f img/s",
                g + 1, desc, tm.loss, tm.accuracy, vm.loss, vm.accuracy, tm.images_per_s,
            )  # fmt: skip
            if vm.accuracy > best_acc:
                best_acc = vm.accuracy
                save_checkpoint(
                    run_dir / "checkpoints" / "best.pt",
                    payload(si, ep + 1, g + 1, optimizer, scheduler, row),
                )
            save_checkpoint(
                run_dir / "checkpoints" / "last.pt",
                payload(si, ep + 1, g + 1, optimizer, scheduler, row),
            )
            _write_metrics_csv(run_dir / "metrics.csv", history)

    # Reports from the best checkpoint.
    best_path = run_dir / "checkpoints" / "best.pt"
    plot_curves(history, run_dir / "reports" / "curves.png")
    summary: dict[str, Any] = {
        "run": config.name,
        "best_val_accuracy": best_acc,
        "epochs": len(history),
        "stage_lrs": stage_lrs,
        "images_per_s": _stage_speeds(history),
        "wall_seconds_this_session": time.perf_counter() - wall_start,
        "feature_cache_seconds": cache_seconds,
        "environment": run_environment(config.workers),
    }
    eval_ckpt = load_checkpoint(best_path)
    model.load_state_dict(eval_ckpt["model"])
    summary["best_epoch"] = eval_ckpt["epoch"]
    for split, manifest in (("val", data.val), ("test", data.test)):
        if manifest is None:
            continue
        imgs = (
            val_imgs
            if split == "val"
            else load_images(
                manifest.files(),
                lambda b: eval_input(b, pre),
                tag=test_tag,
                cache_dir=config.cache_dir,
                memory_budget_mb=config.cache_memory_mb,
                progress=progress,
                desc=f"decode {split}",
            )
        )
        ds = ImageDataset(imgs, manifest.targets(names), test_tf)
        ev = evaluate(model, _eval_loader(ds, config), desc=split, progress=progress)
        m = write_eval_reports(
            run_dir / "reports" / manifest.source.stem,
            files=manifest.files(),
            targets=ev.targets.tolist(),
            probs=ev.probs,
            labels=names,
            title=f"{config.name} on {manifest.source.name}",
        )
        summary[f"{split}_accuracy"] = m["accuracy"]
        summary[f"{split}_recall"] = {c: v["recall"] for c, v in m["per_class"].items()}
    summary["wall_seconds_this_session"] = time.perf_counter() - wall_start
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return FitResult(
        run_dir=run_dir,
        best_checkpoint=best_path,
        last_checkpoint=run_dir / "checkpoints" / "last.pt",
        best_val_accuracy=best_acc,
        history=tuple(history),
        summary=summary,
    )


def _stage_speeds(history: list[dict[str, Any]]) -> dict[str, float]:
    speeds: dict[str, list[float]] = {}
    for row in history:
        speeds.setdefault(row["stage"], []).append(row["train_images_per_s"])
    return {k: sum(v) / len(v) for k, v in speeds.items()}


def resolve_checkpoint(target: str | Path) -> tuple[Path, Path]:
    """RUN_DIR or checkpoint file -> (checkpoint, reports dir)."""
    target = Path(target)
    if target.is_dir():
        ckpt = target / "checkpoints" / "best.pt"
        if not ckpt.is_file():
            raise DataError(f"no checkpoints/best.pt in {target}")
        return ckpt, target / "reports"
    if not target.is_file():
        raise DataError(f"checkpoint or run dir not found: {target}")
    if target.parent.name == "checkpoints":
        return target, target.parent.parent / "reports"
    return target, target.parent / "reports"


def evaluate_manifest(
    target: str | Path,
    manifest_path: str | Path,
    *,
    data_root: str | Path | None = None,
    out_dir: str | Path | None = None,
    force: bool = False,
    batch_size: int = 64,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], Path]:
    """Evaluate a checkpoint on any manifest; writes metrics.json, confusion.png and
    misclassified.html into ``<reports>/<manifest stem>/``. Returns (metrics, that dir)."""
    import torch

    from skyclass.model import load_trained
    from skyclass.outputs import atomic_dir
    from skyclass.train.loop import evaluate
    from skyclass.train.reports import same_images_as, write_eval_reports

    ckpt_path, reports = resolve_checkpoint(target)
    manifest_path = Path(manifest_path)
    out = Path(out_dir) if out_dir else reports / manifest_path.stem
    if out_dir and out.exists() and any(out.iterdir()) and not force:
        raise RunExists(f"reports dir {out} exists; use --force to overwrite")
    model, ckpt = load_trained(ckpt_path)
    names = list(ckpt["class_names"])
    root = Path(data_root) if data_root else Path(ckpt.get("data", {}).get("root") or ".")
    manifest = read_manifest(manifest_path, root, names)
    # The run's own reports/<stem> (train writes one per split) is replaced when it reports on
    # the same images: re-evaluating is idempotent. Another manifest of that stem needs --force.
    own = [names[t] for t in manifest.targets(names)]
    stale = out.exists() and any(out.iterdir())
    if stale and not force and not same_images_as(out, manifest.files(), own):
        raise RunExists(
            f"reports dir {out} holds a report of other images (another {out.name}.csv?); "
            "use --out DIR, or --force to replace it"
        )
    pre = PreprocessConfig.from_dict(ckpt["preprocess"])
    config = ckpt.get("config") or {}
    torch.set_num_threads(int(config.get("num_threads", 2)))
    cache = cache_dir if cache_dir is not None else config.get("cache_dir")
    imgs = load_images(
        manifest.files(),
        lambda b: eval_input(b, pre),
        tag=eval_cache_tag(pre),
        cache_dir=cache,
        progress=progress,
        desc="decode",
    )
    ds = ImageDataset(imgs, manifest.targets(names), build_test_transform(pre))
    from torch.utils.data import DataLoader

    res = evaluate(
        model, DataLoader(_as_dataset(ds), batch_size=batch_size), desc="eval", progress=progress
    )
    with atomic_dir(out, force=True) as tmp:  # replaces a stale report in one rename
        metrics = write_eval_reports(
            tmp,
            files=manifest.files(),
            targets=res.targets.tolist(),
            probs=res.probs,
            labels=names,
            title=f"{ckpt_path.parent.parent.name} on {manifest_path.name}",
        )
    return metrics, out
