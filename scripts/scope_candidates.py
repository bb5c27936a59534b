"""More scope-score candidates for the flagship, measured with ``scope_eval``'s protocol (issue 16).

    PYTHONPATH=src python scripts/scope_candidates.py [--model models/flying-objects] \\
        [--work /tmp/scope-candidates] [--data-root ../shared/data/flying-objects] \\
        [--splits docs/data/splits-reviewed] [--out-of-scope ../shared/data/out-of-scope]

Questions: do other feature maps of the same ONNX model (pooled means of inner blocks, max or GeM
pooling of the last map), or the bundled ImageNet model's features (a second opinion that never saw
the drones), tell aircraft from drones better than the shipped ``oe_energy_knn_pca``? Do other
threshold rules lose fewer in-scope photos? Does the int8 variant do better fitted on its own
features? Every ONNX output is computed once (~2 minutes on 2 cores) and cached in ``--work``.

Protocol as ``scope_eval.evaluate``: fit on the train split, threshold keeping 95% of val, FPR on
the out-of-scope photos; anything that learns from out-of-scope photos is measured leave one
source out (AUROC: the photo-weighted mean of the per-source AUROCs against the test split).
Nothing here is tuned on these figures; knobs are the papers' defaults or the shipped ones.
"""

from __future__ import annotations

import argparse
import re
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skyclass.core.scope_methods import knn, knn_pca, l2_normalise, oe_energy, oe_logreg
from skyclass.export.scope_eval import CATEGORIES, Split, with_log_probs
from skyclass.export.scope_fit import (
    auroc,
    fit_knn_pca,
    fit_oe_head,
    fit_oe_logreg,
    keep_threshold,
    unit_scale,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
BLOCKS = (6, 10, 13, 16, 17)  # MobileNetV2 features[i] outputs, pooled (mean over space)
Arrays = dict[str, np.ndarray]
SPLITS = ("train", "val", "test", "out")


# ---- ONNX outputs, computed once ----------------------------------------------------------------


def _session(model: object, threads: int = 2) -> object:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _flagship_graph(path: Path) -> tuple[object, dict[str, str]]:
    """The ONNX model with every pooled tensor the candidates need as an output."""
    import onnx
    from onnx import TensorProto, helper

    from skyclass.export.onnx_outputs import EXTRA_OUTPUTS, add_outputs

    model = onnx.load(str(path))
    if not {o.name for o in model.graph.output} & set(EXTRA_OUTPUTS):
        model = add_outputs(model)
    last = {}
    for node in model.graph.node:
        found = re.match(r"/features/features\.(\d+)/", node.name)
        if found:
            last[int(found.group(1))] = node.output[0]
    wanted = {f"b{b}": last[b] for b in BLOCKS} | {"map": last[18]}
    for tensor in wanted.values():
        model.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    return model, wanted


def _run(session: object, bundle: object, paths: list[Path], names: dict[str, str]) -> Arrays:
    from skyclass.core.preprocess import preprocess

    got: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(paths), 16):
        x = np.concatenate(
            [preprocess(p.read_bytes(), bundle.preprocess) for p in paths[i : i + 16]]
        )
        feed = {session.get_inputs()[0].name: x}
        outs = dict(zip(names, session.run(list(names.values()), feed), strict=True))
        pooled = {k: v.mean(axis=(2, 3)) for k, v in outs.items() if k.startswith("b")}
        if "map" in outs:
            a = outs.pop("map").astype(np.float64)
            pooled |= {"b18_max": a.max(axis=(2, 3)), "b18_gem": np.cbrt((a**3).mean(axis=(2, 3)))}
        for k, v in ({k: v for k, v in outs.items() if not k.startswith("b")} | pooled).items():
            got.setdefault(k, []).append(np.asarray(v, dtype=np.float32))
    return {k: np.concatenate(v) for k, v in got.items()}


def build_cache(args: argparse.Namespace, cache: Path) -> Arrays:
    import onnx

    from skyclass.core.bundle import load_bundle
    from skyclass.export.images import read_manifest
    from skyclass.export.onnx_outputs import add_outputs
    from skyclass.export.scope_data import label_indices, read_out_of_scope

    flagship = load_bundle(args.model)
    imagenet_dir = REPO / "models" / "imagenet-mobilenet-v2"
    imagenet = load_bundle(imagenet_dir)
    graph, wanted = _flagship_graph(args.model / flagship.file("fp32").path)
    flag = _session(graph)
    flag_names = {"logits": "logits", "features": "features", **wanted}
    net = _session(add_outputs(onnx.load(str(imagenet_dir / imagenet.file("fp32").path))))
    int8 = _session(onnx.load(str(args.model / flagship.file("int8").path)))
    data: Arrays = {}
    out_rows = read_out_of_scope(args.out_of_scope)
    for split in SPLITS:
        if split == "out":
            paths = [r.path for r in out_rows]
            data["out_sources"] = np.array([r.source for r in out_rows])
            data["out_categories"] = np.array([r.category for r in out_rows])
        else:
            rows = read_manifest(args.splits / f"{split}.csv", args.data_root)
            paths = [r.path for r in rows]
            data[f"{split}_labels"] = label_indices(rows, flagship.labels)
            data[f"{split}_groups"] = np.array([r.group for r in rows])
        parts = (
            ("", _run(flag, flagship, paths, flag_names)),
            ("in_", _run(net, imagenet, paths, {"features": "features"})),
            ("q8_", _run(int8, flagship, paths, {"logits": "logits", "features": "features"})),
        )
        for prefix, arrays in parts:
            data |= {f"{split}_{prefix}{k}": v for k, v in arrays.items()}
        print(f"cached {split}: {len(paths)} photos", file=sys.stderr, flush=True)
    np.savez(cache, **data)
    return data


def splits(data: Arrays, prefix: str = "") -> dict[str, Split]:
    """Train/val/test/out Splits whose outputs hold every cached array of that variant."""
    out = {}
    for split in SPLITS:
        keys = [k for k in data if k.startswith(f"{split}_")]
        arrays = {k[len(split) + 1 :]: data[k] for k in keys}
        if prefix:  # the int8 variant: its logits and features in the usual names
            arrays |= {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        outputs = arrays | with_log_probs(arrays["logits"], arrays["features"])
        n = len(outputs["logits"])
        labels = arrays.get("labels", np.full(n, -1))
        extra = (arrays["sources"], arrays["categories"]) if split == "out" else ()
        out[split] = Split(outputs, labels, *extra)
    return out


# ---- candidates: each a list of parts, combined by the minimum on the val scale ---------------


@dataclass(frozen=True)
class Part:
    """One score: fitted on train (and on out-of-scope photos when ``oe``), higher = in scope."""

    fit: Callable[[Split, tuple, Split | None], Arrays]
    score: Callable[[Arrays, Arrays], np.ndarray]
    oe: bool = False


def _feat(o: Arrays, keys: tuple[str, ...]) -> np.ndarray:
    return np.concatenate([l2_normalise(o[k]) for k in keys], axis=1) / np.sqrt(len(keys))


def knn_part(*keys: str) -> Part:
    """The ``knn`` score (k = 1, cosine) on these pooled outputs instead of the penultimate."""
    one = np.array(1, dtype=np.int64)
    return Part(
        lambda tr, head, out: {"bank": _feat(tr.outputs, keys), "k": one},
        lambda p, o: knn(p, {"features": _feat(o, keys)}),
    )


def logreg_part(*keys: str) -> Part:
    """The ``oe_logreg`` discriminator on these pooled outputs instead of the penultimate."""

    def fit(tr: Split, head: tuple, out: Split | None) -> Arrays:
        assert out is not None
        return fit_oe_logreg(_feat(tr.outputs, keys), _feat(out.outputs, keys))

    return Part(fit, lambda p, o: oe_logreg(p, {"features": _feat(o, keys)}), oe=True)


def _oe_fit(tr: Split, head: tuple, out: Split | None) -> Arrays:
    assert out is not None
    return fit_oe_head(tr.outputs["features"], tr.labels, out.outputs["features"], *head)


OE_ENERGY = Part(_oe_fit, oe_energy, oe=True)
KNN_PCA = Part(lambda tr, head, out: fit_knn_pca(tr.outputs["features"], tr.labels, 4), knn_pca)
SHIPPED = (OE_ENERGY, KNN_PCA)


def fit_parts(
    parts: tuple[Part, ...], tr: Split, head: tuple, out: Split | None, val: Split
) -> list:
    fitted = [part.fit(tr, head, out) for part in parts]
    scales = [unit_scale(part.score(p, val.outputs)) for part, p in zip(parts, fitted, strict=True)]
    return [fitted, scales]


def score_parts(parts: tuple[Part, ...], model: list, o: Arrays) -> np.ndarray:
    fitted, scales = model
    z = [(part.score(p, o) - c) / d for part, p, (c, d) in zip(parts, fitted, scales, strict=True)]
    return np.min(z, axis=0)


def per_class_threshold(
    scores: np.ndarray, val_scores: np.ndarray, pred: np.ndarray, val_pred: np.ndarray
) -> np.ndarray:
    """Kept when the score passes the threshold of its predicted class (95% of that class's val)."""
    per = np.array(
        [keep_threshold(val_scores[val_pred == c]) for c in range(int(val_pred.max()) + 1)]
    )
    return scores >= per[pred]


@dataclass(frozen=True)
class Run:
    """The splits a candidate is measured on, and those it learns from (int8: fp32's or its own)."""

    s: dict[str, Split]
    fit_on: dict[str, Split]
    head: tuple[np.ndarray, np.ndarray]
    calibration: str = "val"  # val | cross-fit (train folds by group + val) | per-class


def _threshold(
    run: Run, parts: tuple[Part, ...], model: list, out: Split | None, scores: np.ndarray, o: Arrays
) -> np.ndarray:
    """Which of ``scores`` (of outputs ``o``) are kept under the run's calibration rule."""
    val = run.s["val"].outputs
    s_val = score_parts(parts, model, val)
    if run.calibration == "per-class":
        return per_class_threshold(scores, s_val, o["logits"].argmax(1), val["logits"].argmax(1))
    if run.calibration == "cross-fit":
        train = run.fit_on["train"]
        folds = np.array([zlib.crc32(str(g).encode()) % 5 for g in train.outputs["groups"]])
        held = []
        for k in range(5):
            fold = fit_parts(parts, train.subset(folds != k), run.head, out, run.s["val"])
            held.append(score_parts(parts, fold, train.subset(folds == k).outputs))
        s_val = np.concatenate([s_val, *held])
    return scores >= keep_threshold(s_val)


def measure(parts: tuple[Part, ...], run: Run) -> dict[str, float]:
    """One candidate's figures: AUROC, FPR per category, test kept, accuracy on the accepted."""
    s, src = run.s, run.fit_on
    oe = any(part.oe for part in parts)
    out = s["out"]
    accepted = np.zeros(len(out.labels), dtype=bool)
    aurocs, weights = [], []
    for source in np.unique(out.sources) if oe else [None]:
        held = out.sources == source if oe else np.ones(len(out.labels), dtype=bool)
        others = src["out"].subset(src["out"].sources != source) if oe else None
        model = fit_parts(parts, src["train"], run.head, others, s["val"])
        o = out.subset(held).outputs
        scores = score_parts(parts, model, o)
        accepted[held] = _threshold(run, parts, model, others, scores, o)
        aurocs.append(auroc(score_parts(parts, model, s["test"].outputs), scores))
        weights.append(held.sum())
    model = fit_parts(parts, src["train"], run.head, src["out"] if oe else None, s["val"])
    test = s["test"].outputs
    kept = _threshold(
        run, parts, model, src["out"] if oe else None, score_parts(parts, model, test), test
    )
    right = test["logits"].argmax(axis=1) == s["test"].labels
    figures = {c: float(accepted[out.categories == c].mean()) for c in CATEGORIES}
    return {
        "auroc": float(np.average(aurocs, weights=weights)),
        **figures,
        "kept": float(kept.mean()),
        "acc": float(right[kept].mean()),
    }


def candidates() -> list[tuple[str, tuple[Part, ...]]]:
    inner = ("b13", "b16", "b17", "features")
    return [
        ("shipped: OE energy + `knn_pca` (reference)", SHIPPED),
        *[(f"kNN on block {b}'s pooled mean", (knn_part(f"b{b}"),)) for b in BLOCKS],
        ("kNN on blocks 13/16/17 + penultimate", (knn_part(*inner),)),
        ("kNN on the last map, max-pooled", (knn_part("b18_max"),)),
        ("kNN on the last map, GeM (p = 3)", (knn_part("b18_gem"),)),
        ("OE energy + kNN on GeM", (OE_ENERGY, knn_part("b18_gem"))),
        ("OE discriminator on the penultimate", (logreg_part("features"),)),
        ("OE discriminator on blocks 13/16/17 + penultimate", (logreg_part(*inner),)),
        ("shipped + OE discriminator on block 17", (*SHIPPED, logreg_part("b17"))),
        (
            "shipped + OE discriminator on blocks 13/16/17 + penultimate",
            (*SHIPPED, logreg_part(*inner)),
        ),
        ("ImageNet model: kNN on its features", (knn_part("in_features"),)),
        ("ImageNet model: OE discriminator on its features", (logreg_part("in_features"),)),
        ("shipped + ImageNet kNN", (*SHIPPED, knn_part("in_features"))),
        ("shipped + ImageNet OE discriminator", (*SHIPPED, logreg_part("in_features"))),
    ]


def _row(name: str, f: dict[str, float]) -> str:
    cells = [
        f"{f['auroc']:.3f}",
        *(f"{f[c]:.1%}" for c in CATEGORIES),
        f"{f['kept']:.1%}",
        f"{f['acc']:.1%}",
    ]
    return f"| {name} | " + " | ".join(cells) + " |"


def main(argv: list[str] | None = None) -> int:
    from skyclass.core.bundle import load_bundle
    from skyclass.export.scope_calibrate import head_weights

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=REPO / "models" / "flying-objects")
    p.add_argument("--work", type=Path, default=Path("/tmp/scope-candidates"))
    p.add_argument("--data-root", type=Path, default=SHARED / "flying-objects")
    p.add_argument("--splits", type=Path, default=REPO / "docs" / "data" / "splits-reviewed")
    p.add_argument("--out-of-scope", type=Path, default=SHARED / "out-of-scope")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    cache = args.work / "outputs.npz"
    data = dict(np.load(cache)) if cache.is_file() else build_cache(args, cache)
    head = head_weights(args.model / load_bundle(args.model).file("fp32").path)
    fp32, int8 = splits(data), splits(data, "q8_")
    print("| candidate | AUROC | aircraft | scenes | everyday | test kept | accuracy kept |")
    print("|---|---|---|---|---|---|---|")
    for name, parts in candidates():
        print(_row(name, measure(parts, Run(fp32, fp32, head))), flush=True)
    for rule in ("cross-fit", "per-class"):
        print(_row(f"shipped, threshold {rule}", measure(SHIPPED, Run(fp32, fp32, head, rule))))
    print(_row("int8, fitted on fp32 features (shipped)", measure(SHIPPED, Run(int8, fp32, head))))
    print(_row("int8, fitted on its own features", measure(SHIPPED, Run(int8, int8, head))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
