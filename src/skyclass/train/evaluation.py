"""The evaluate chain, one for ``skyclass evaluate`` and for a run's final reports: decode a
manifest, run the model, write metrics.json, predictions.csv, confusion.png and misclassified.html
(class activation maps on its cards) into a report folder that appears whole (built beside it,
then renamed into place)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skyclass.core.preprocess import PreprocessConfig
from skyclass.data.dataset import DataError, ImageDataset, Manifest, read_manifest
from skyclass.data.transforms import build_test_transform
from skyclass.train.context import decode_eval
from skyclass.train.run_state import RunExists
from skyclass.train.runtime import Runtime


def evaluate_to_reports(
    model: Any,
    manifest: Manifest,
    *,
    names: list[str],
    pre: PreprocessConfig,
    out_dir: Path,
    title: str,
    batch_size: int,
    cache_dir: str | Path | None,
    runtime: Runtime | None = None,
    images: list[Any] | None = None,
    desc: str = "eval",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``manifest`` and write its report folder ``out_dir`` (replacing it);
    returns the metrics. ``images``: the manifest's decoded images when already at hand."""
    from skyclass.outputs import atomic_dir
    from skyclass.train import loop
    from skyclass.train.gallery_maps import gallery_maps
    from skyclass.train.loaders import eval_loader
    from skyclass.train.reports import write_eval_reports

    if images is None:
        images = decode_eval(manifest, pre, cache_dir, progress, f"decode {desc}")
    ds = ImageDataset(images, manifest.targets(names), build_test_transform(pre))
    loader = eval_loader(ds, batch_size, runtime)
    res = loop.evaluate(model, loader, desc=desc, progress=progress, runtime=runtime)
    files, targets = manifest.files(), res.targets.tolist()
    # A second small pass, over the gallery's shown images only: their class activation maps.
    maps = gallery_maps(model, files, targets, res.probs, names, pre, batch_size=batch_size)
    with atomic_dir(out_dir, force=True) as tmp:
        metrics = write_eval_reports(
            tmp,
            files=files,
            targets=targets,
            probs=res.probs,
            labels=names,
            title=title,
            maps=maps,
        )
    return metrics


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
    device: str = "auto",
    progress: bool = True,
) -> tuple[dict[str, Any], Path]:
    """Evaluate a checkpoint on any manifest (fp32, on ``device``); writes the report folder
    ``<reports>/<manifest stem>/`` (or ``out_dir``). Returns (metrics, that dir)."""
    import torch

    from skyclass.model import load_trained
    from skyclass.train.device import probe
    from skyclass.train.reports import same_images_as
    from skyclass.train.runtime import resolve_runtime

    runtime = resolve_runtime(
        device=device, precision="fp32", threads=None, sync_bn=False, environ={}, acc=probe()
    )
    ckpt_path, reports = resolve_checkpoint(target)
    manifest_path = Path(manifest_path)
    out = Path(out_dir) if out_dir else reports / manifest_path.stem
    if out.exists() and not out.is_dir():
        raise RunExists(f"{out} exists and is not a folder")
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
    config = ckpt.get("config") or {}
    threads = config.get("num_threads")
    torch.set_num_threads(int(threads or runtime.threads))
    metrics = evaluate_to_reports(
        model.to(runtime.device),
        manifest,
        names=names,
        pre=PreprocessConfig.from_dict(ckpt["preprocess"]),
        out_dir=out,
        title=f"{ckpt_path.parent.parent.name} on {manifest_path.name}",
        batch_size=batch_size,
        cache_dir=cache_dir if cache_dir is not None else config.get("cache_dir"),
        runtime=runtime,
        progress=progress,
    )
    return metrics, out
