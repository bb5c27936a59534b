"""The model side of ``skyclass label-issues``: embed every photo, then out-of-fold probabilities.

Every file of a manifest is embedded once by the frozen ImageNet backbone (the 1,280-d pooled
``features`` output, averaged with its mirror image); a logistic regression is fitted K times, each
time without one fold, so every file gets class probabilities from a model that never saw it. Folds
keep the manifest's ``group`` (near duplicates) together, or a mislabeled photo's copy would vouch
for its wrong label. The confident-learning rule that turns those probabilities into suspects lives
in :mod:`skyclass.data.label_issues` and takes probabilities only.

The embedding runs the backbone through ONNX Runtime: on CPU it is several times faster than eager
PyTorch for this fixed, frozen network (``benchmarks`` measures both side by side). The ONNX file is
exported once per weights file and kept in the cache folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skyclass.data.label_issues import (
    LabelIssue,
    LabelIssueReport,
    check_folds,
    class_thresholds,
    find_issues,
)

log = logging.getLogger(__name__)

EMBED_INPUT = "image"
EMBED_OUTPUT = "embedding"
ENGINES = ("auto", "onnxruntime", "torch")


@dataclass(frozen=True)
class LabelIssueConfig:
    manifest: Path
    data_root: Path
    weights: str
    folds: int = 5
    seed: int = 0
    image_size: int = 224
    batch_size: int = 32
    threads: int = 2
    #: Inverse regularisation of the logistic regression (sklearn's C).
    c: float = 0.5
    cache_dir: str | None = ".cache/skyclass"
    #: "onnxruntime" (CPU; several times faster than eager PyTorch there), "torch" (any device), or
    #: "auto": onnxruntime on the CPU, torch on an accelerator.
    engine: str = "auto"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.folds < 2:
            raise ValueError(f"folds must be >= 2, got {self.folds}")
        if self.c <= 0:
            raise ValueError(f"c must be > 0, got {self.c}")
        if self.batch_size < 1 or self.threads < 1:
            raise ValueError("batch_size and threads must be >= 1")


def backbone_module(weights: str) -> Any:
    """The frozen backbone as one module: image batch -> mean of pooled features over the image
    and its mirror (N, 1280)."""
    import torch
    from torch import nn

    from skyclass.model import build_model, feature_blocks

    features = feature_blocks(build_model(2, weights=weights).eval())

    class MirrorEmbedding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = features

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.features(x).mean(dim=(2, 3))
            b = self.features(torch.flip(x, dims=[3])).mean(dim=(2, 3))
            return (a + b) / 2

    return MirrorEmbedding().eval()


def _weights_tag(weights: str, image_size: int) -> str:
    import torch

    h = hashlib.sha256(f"{torch.__version__}|{image_size}|".encode())
    path = Path(weights)
    if path.is_file():
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    else:
        h.update(weights.encode())
    return h.hexdigest()[:24]


def backbone_onnx(weights: str, image_size: int, cache_dir: str | None) -> bytes:
    """The backbone exported to ONNX (dynamic batch), cached per weights file and torch version."""
    import io
    import warnings

    import torch

    cache = (
        Path(cache_dir) / f"embed-{_weights_tag(weights, image_size)}.onnx" if cache_dir else None
    )
    if cache is not None and cache.is_file():
        return cache.read_bytes()
    module = backbone_module(weights)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(2, 3, image_size, image_size),),
            buf,  # type: ignore[arg-type]  # a file object works; torch's hint names paths only
            input_names=[EMBED_INPUT],
            output_names=[EMBED_OUTPUT],
            dynamic_axes={EMBED_INPUT: {0: "batch"}, EMBED_OUTPUT: {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    data = buf.getvalue()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, cache)
    return data


def _batch_runner(config: LabelIssueConfig) -> Callable[[np.ndarray], np.ndarray]:
    """A function: float32 NCHW batch -> (N, 1280) embeddings, on the configured engine."""
    engine = config.engine
    if engine == "auto":
        engine = "onnxruntime" if config.device == "cpu" else "torch"
    if engine == "torch":
        import torch

        torch.set_num_threads(config.threads)
        module = backbone_module(config.weights).to(config.device)

        def run_torch(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return module(torch.from_numpy(x).to(config.device)).float().cpu().numpy()

        return run_torch
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(
        backbone_onnx(config.weights, config.image_size, config.cache_dir),
        options,
        providers=["CPUExecutionProvider"],
    )
    return lambda x: session.run([EMBED_OUTPUT], {EMBED_INPUT: x})[0]


def embed(files: Sequence[Path], config: LabelIssueConfig, *, progress: bool = True) -> np.ndarray:
    """Frozen backbone embeddings (N, 1280): pooled ``features`` of the image and its mirror."""
    from skyclass.core.preprocess import PreprocessConfig
    from skyclass.data.dataset import load_images
    from skyclass.data.transforms import build_test_transform, eval_cache_tag, eval_input
    from skyclass.progress import progress_bar

    pre = PreprocessConfig(size=(config.image_size, config.image_size))
    images = load_images(
        files,
        lambda b: eval_input(b, pre),
        tag=eval_cache_tag(pre),
        cache_dir=config.cache_dir,
        progress=progress,
        desc="decode",
    )
    run = _batch_runner(config)
    tf = build_test_transform(pre)
    out = []
    steps = range(0, len(images), config.batch_size)
    for s in progress_bar(steps, desc="embed", unit="batch", enabled=progress):
        batch = images[s : s + config.batch_size]
        out.append(run(np.stack([tf(image=im)["image"].numpy() for im in batch])))
    return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)


def out_of_fold_probs(
    x: np.ndarray, y: np.ndarray, groups: Sequence[str], folds: int, seed: int, c: float
) -> np.ndarray:
    """Class probabilities for every row from a logistic regression fitted without its fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    k = int(y.max()) + 1
    check_folds(y, folds)
    probs = np.zeros((len(y), k))
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_idx, held_idx in splitter.split(x, y, groups=list(groups)):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
        clf.fit(x[fit_idx], y[fit_idx])
        held = clf.predict_proba(x[held_idx])
        probs[np.ix_(held_idx, clf[-1].classes_)] = held
    return probs


def run_label_issues(config: LabelIssueConfig, *, progress: bool = True) -> LabelIssueReport:
    """Embed, cross-validate, and list the suspects of ``config.manifest``."""
    from skyclass.data.dataset import class_names_from_root, read_manifest

    names = class_names_from_root(config.data_root)
    manifest = read_manifest(config.manifest, config.data_root, names)
    y = np.array(manifest.targets(names))
    groups = [g or p for g, p in zip(manifest.groups, manifest.paths, strict=True)]
    check_folds(y, config.folds)
    x = embed(manifest.files(), config, progress=progress)
    probs = out_of_fold_probs(x, y, groups, config.folds, config.seed, config.c)
    order, suggested, joint = find_issues(probs, y)
    t = class_thresholds(probs, y)
    issues = [
        LabelIssue(
            path=manifest.paths[i],
            label=names[y[i]],
            suggested=names[j],
            p_given=round(float(probs[i, y[i]]), 4),
            p_suggested=round(float(probs[i, j]), 4),
        )
        for i, j in zip(order, suggested, strict=True)
    ]
    cfg = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()}
    return LabelIssueReport(
        config=cfg,
        class_names=names,
        n=len(y),
        oof_accuracy=round(float((probs.argmax(1) == y).mean()), 4),
        thresholds={n: round(float(v), 4) for n, v in zip(names, t, strict=True)},
        confident_joint=joint.tolist(),
        issues=issues,
    )
