"""Experiment (issue 16): outlier exposure while fine-tuning the backbone, not the head alone.

    PATH=/work/main/.venv/bin:$PATH PYTHONPATH=$PWD/src python scripts/scope_oe_training.py \\
        --checkpoint ../fresh1/runs/flying-objects/checkpoints/best.pt [--work /tmp/oe-work] \\
        [--epochs 3] [--lam 0.5] [--threads 2] [--control]

Starts from the flagship's trained weights. The frozen prefix ``features[:14]`` (eval mode, no
grad) is computed ONCE for every photo (test transform; train and out-of-scope photos also
flipped: each step draws one of the two views) and cached in ``--work``. Then ``features[14:]`` and
the classifier are fine-tuned (AdamW, lr 1e-4, BatchNorm kept in eval mode: its running statistics
stay the flagship's; dropout on) with batches of 32 in-scope + 32 out-of-scope photos and the loss
CE(in, balanced class weights) + lam x CE(out, uniform) (Hendrycks et al. 2019; lam 0.5 fixed).

Two folds by out-of-scope source, each holding one aircraft source out: fold A trains on
mahesh-bora (aircraft), afroozsheikh (scenes), chanakya2734 (everyday), zhangtao7750 (insects) and
is measured on burakkurt07 (aircraft), nicknochnack, martinwestin, alexeygrigorev (everyday); fold
B the reverse. Every out-of-scope photo is measured once, by the model that never saw its source
(scenes by fold B, which saw no scene at all). Scores use skyclass.core.scope_methods: energy of
the model's logits, knn_pca on its pooled features (fitted on the train photos), and their minimum
on the val scale (as ``oe_energy_knn_pca``); threshold keeps 95% of in-scope val. The baselines
are the flagship's own features: no OE (energy, knn_pca) and the shipped head-only OE
(``oe_energy_knn_pca``, its OE head trained on the same fold's sources). ``--control`` adds the
same fine-tune with lam = 0 (no outliers), to tell OE from "more fine-tuning". Writes
``--work/results.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PREFIX = 14
FOLD_A = (
    "mahesh-bora/Flying-Object-Detection",
    "afroozsheikh/Intel-Image-Classifier",
    "chanakya2734/Image-classification-using-CNN",
    "zhangtao7750/syn",
)
Arrays = dict[str, np.ndarray]


def load_flagship(checkpoint: Path) -> tuple[Any, tuple[str, ...], Any]:
    from skyclass.core.preprocess import PreprocessConfig
    from skyclass.model import build_model, load_checkpoint

    ckpt = load_checkpoint(checkpoint)
    labels = tuple(str(x) for x in ckpt["class_names"])
    model = build_model(len(labels), weights=None, dropout=float(ckpt.get("dropout", 0.2)))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, labels, PreprocessConfig.from_dict(dict(ckpt["preprocess"]))


def prefix_outputs(model: Any, paths: list[Path], pre: Any, flip: bool) -> Any:
    """features[:14] of each photo (test transform), and of its mirror image when ``flip``."""
    import torch

    from skyclass.data.transforms import build_test_transform, eval_input

    transform = build_test_transform(pre)
    head = model.features[:PREFIX]
    views: list[list[Any]] = [[], []] if flip else [[]]
    for start in range(0, len(paths), 32):
        batch = [eval_input(p.read_bytes(), pre) for p in paths[start : start + 32]]
        x = torch.stack([transform(image=im)["image"] for im in batch])
        with torch.no_grad():
            views[0].append(head(x))
            if flip:
                views[1].append(head(torch.flip(x, dims=[3])))
    return torch.stack([torch.cat(v) for v in views])  # (views, N, C, H, W)


def cached_prefix(work: Path, name: str, compute: Callable[[], Any]) -> Any:
    import torch

    path = work / f"{name}.pt"
    if path.is_file():
        return torch.load(path, weights_only=True)
    started = time.monotonic()
    value = compute()
    print(f"  {name}: {tuple(value.shape)} in {time.monotonic() - started:.0f} s", flush=True)
    tmp = path.with_suffix(".tmp")
    torch.save(value, tmp)
    tmp.replace(path)
    return value


def load_data(model: Any, labels: tuple[str, ...], pre: Any, args: Any) -> dict[str, Any]:
    from skyclass.export.images import read_manifest
    from skyclass.export.scope_data import read_out_of_scope

    index = {label: i for i, label in enumerate(labels)}
    data: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        rows = read_manifest(args.splits / f"{split}.csv", args.data_root)
        flip = split == "train"
        data[split] = cached_prefix(
            args.work,
            split,
            lambda r=rows, f=flip: prefix_outputs(model, [x.path for x in r], pre, f),
        )
        data[f"{split}_y"] = np.array([index[r.label] for r in rows])
    out_rows = read_out_of_scope(args.out_of_scope)
    data["out"] = cached_prefix(
        args.work, "out", lambda: prefix_outputs(model, [r.path for r in out_rows], pre, True)
    )
    data["out_source"] = np.array([r.source for r in out_rows])
    data["out_category"] = np.array([r.category for r in out_rows])
    return data


def tail_outputs(model: Any, prefix: Any) -> Arrays:
    """Logits and pooled 1280-d features of ``features[14:]`` + the head, in eval mode."""
    import torch

    model.eval()
    feats = []
    with torch.no_grad():
        for start in range(0, len(prefix), 64):
            x = model.features[PREFIX:](prefix[start : start + 64])
            feats.append(torch.nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))
        f = torch.cat(feats)
        linear = model.classifier[1]
        logits = linear(f)
    return {"features": f.numpy().astype(np.float32), "logits": logits.numpy().astype(np.float32)}


def fine_tune(model: Any, data: dict[str, Any], out_mask: np.ndarray, args: Any) -> Any:
    """A copy of ``model`` with features[14:] + head trained with the OE loss (lam = args.lam)."""
    import copy

    import torch
    import torch.nn.functional as F

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    tuned = copy.deepcopy(model)
    for p in tuned.parameters():
        p.requires_grad = False
    params = [p for m in (tuned.features[PREFIX:], tuned.classifier) for p in m.parameters()]
    for p in params:
        p.requires_grad = True
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    y = torch.as_tensor(data["train_y"])
    counts = torch.bincount(y).double()
    weight = (len(y) / (len(counts) * counts)).float()
    x_in, x_out = data["train"], data["out"][:, torch.as_tensor(np.flatnonzero(out_mask))]
    n_out, out_order, out_pos = x_out.shape[1], rng.permutation(x_out.shape[1]), 0
    for epoch in range(args.epochs):
        tuned.eval()
        tuned.classifier.train()  # dropout on, BatchNorm statistics frozen
        order = rng.permutation(len(y))
        for start in range(0, len(order), args.batch):
            idx = order[start : start + args.batch]
            if out_pos + args.batch > n_out:
                out_order, out_pos = rng.permutation(n_out), 0
            oidx = out_order[out_pos : out_pos + args.batch]
            out_pos += args.batch
            xi = x_in[torch.as_tensor(rng.integers(0, 2, len(idx))), torch.as_tensor(idx)]
            xo = x_out[torch.as_tensor(rng.integers(0, 2, len(oidx))), torch.as_tensor(oidx)]
            x = torch.cat([xi, xo]) if args.lam > 0 else xi
            f = F.adaptive_avg_pool2d(tuned.features[PREFIX:](x), 1).flatten(1)
            logp = tuned.classifier(f)
            loss = F.nll_loss(logp[: len(idx)], y[idx], weight=weight)
            if args.lam > 0:
                loss = loss + args.lam * (-logp[len(idx) :].mean(dim=1)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"  epoch {epoch + 1}: last loss {loss.item():.4f}", flush=True)
    tuned.eval()
    return tuned


def with_log_probs(o: Arrays) -> Arrays:
    from skyclass.export.scope_eval import with_log_probs as add

    return add(o["logits"], o["features"])


def head_params(model: Any) -> Arrays:
    linear = model.classifier[1]
    w, b = linear.weight.detach().numpy(), linear.bias.detach().numpy()
    return {"head_w": w.astype(np.float32), "head_b": b.astype(np.float32)}


def scorer(
    kind: str, o: dict[str, Arrays], head: Arrays, oe_mask: np.ndarray | None, y: Any
) -> Any:
    """A fitted score function (Arrays -> scores) of ``kind`` for one model's outputs ``o``."""
    from skyclass.core import scope_methods as sm
    from skyclass.export.scope_fit import fit_knn_pca, fit_oe_head, unit_scale

    if kind == "energy":
        return lambda a: sm.energy({}, a)
    if kind == "msp":  # the OE paper's own score
        return lambda a: sm.msp({}, a)
    pca = fit_knn_pca(o["train"]["features"], y, len(head["head_b"]))
    if kind == "knn_pca":
        return lambda a: sm.knn_pca(pca, a)
    if kind.startswith("head_oe"):  # the shipped head-only OE, on this fold's sources
        out_f = o["out"]["features"][oe_mask]
        head = fit_oe_head(o["train"]["features"], y, out_f, head["head_w"], head["head_b"])
        if kind == "head_oe_energy":
            return lambda a: sm.oe_energy(head, a)
    params = head | pca
    if kind == "msp_knn_pca":  # as oe_energy_knn_pca, with MSP in place of the energy
        m_c, m_s = unit_scale(sm.msp({}, o["val"]))
        k_c, k_s = unit_scale(sm.knn_pca(pca, o["val"]))
        return lambda a: np.minimum((sm.msp({}, a) - m_c) / m_s, (sm.knn_pca(pca, a) - k_c) / k_s)
    oe_c, oe_s = unit_scale(sm.oe_energy(params, o["val"]))
    knn_c, knn_s = unit_scale(sm.knn_pca(params, o["val"]))
    scales = {"oe_center": oe_c, "oe_scale": oe_s, "knn_center": knn_c, "knn_scale": knn_s}
    params = params | {k: np.array(v, dtype=np.float64) for k, v in scales.items()}
    return lambda a: sm.oe_energy_knn_pca(params, a)


def measure(
    kind: str, folds: dict[str, tuple[dict[str, Arrays], Arrays]], data: dict[str, Any]
) -> dict[str, Any]:
    """Figures of ``kind`` over both folds: each out-of-scope photo scored by the fold model that
    did not train on its source; AUROC the photo-weighted mean of the two folds' AUROCs."""
    from skyclass.export.scope_fit import auroc, keep_threshold

    in_a = np.isin(data["out_source"], FOLD_A)
    accepted = np.zeros(len(in_a), dtype=bool)
    row: dict[str, Any] = {"method": kind, "folds": {}}
    aurocs, weights = [], []
    for name, (o, head) in folds.items():
        trained_on = in_a if name == "A" else ~in_a
        score = scorer(kind, o, head, trained_on, data["train_y"])
        t = keep_threshold(score(o["val"]))
        held = ~trained_on
        s_out = score({k: v[held] for k, v in o["out"].items()})
        s_test = score(o["test"])
        accepted[held] = s_out >= t
        aurocs.append(auroc(s_test, s_out))
        weights.append(int(held.sum()))
        right = o["test"]["logits"].argmax(axis=1) == data["test_y"]
        row["folds"][name] = {
            "auroc": aurocs[-1],
            "test_kept": float((s_test >= t).mean()),
            "test_accuracy": float(right.mean()),
            "accuracy_accepted": float(right[s_test >= t].mean()),
        }
    row["auroc"] = float(np.average(aurocs, weights=weights))
    cats = data["out_category"]
    row["fpr"] = {c: float(accepted[cats == c].mean()) for c in ("aircraft", "scenes", "everyday")}
    row["fpr_source"] = {
        s: float(accepted[data["out_source"] == s].mean()) for s in np.unique(data["out_source"])
    }
    return row


def model_outputs(model: Any, data: dict[str, Any]) -> dict[str, Arrays]:
    views = {"train": data["train"][0], "val": data["val"][0], "test": data["test"][0]}
    views["out"] = data["out"][0]
    return {k: with_log_probs(tail_outputs(model, v)) for k, v in views.items()}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | score | AUROC (A / B) | aircraft | scenes | everyday | test kept (A / B) "
        "| test acc (A / B) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fa, fb = r["folds"]["A"], r["folds"]["B"]
        lines.append(
            f"| {r['model']} | {r['method']} | {r['auroc']:.3f} ({fa['auroc']:.3f} / "
            f"{fb['auroc']:.3f}) | {r['fpr']['aircraft']:.1%} | {r['fpr']['scenes']:.1%} | "
            f"{r['fpr']['everyday']:.1%} | {fa['test_kept']:.1%} / {fb['test_kept']:.1%} | "
            f"{fa['test_accuracy']:.2%} / {fb['test_accuracy']:.2%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    from skyclass.outputs import write_text_atomic

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/oe-work"))
    p.add_argument("--data-root", type=Path, default=SHARED / "data" / "flying-objects")
    p.add_argument("--splits", type=Path, default=REPO / "docs/data/splits-reviewed")
    p.add_argument("--out-of-scope", type=Path, default=SHARED / "data" / "out-of-scope")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lam", type=float, default=0.5)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--control", action="store_true", help="also fine-tune with lam = 0")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    flagship, labels, pre = load_flagship(args.checkpoint)
    data = load_data(flagship, labels, pre, args)
    print(f"prefix cached/loaded in {time.monotonic() - t0:.0f} s", flush=True)
    base = model_outputs(flagship, data)
    base_folds = {f: (base, head_params(flagship)) for f in ("A", "B")}
    rows = [
        measure(k, base_folds, data) | {"model": "flagship (no OE in training)"}
        for k in ("energy", "knn_pca", "head_oe_energy", "head_oe_energy_knn_pca")
    ]
    print(table(rows), flush=True)
    in_a = np.isin(data["out_source"], FOLD_A)
    variants = [("OE fine-tune", args.lam)] + ([("fine-tune, lam 0", 0.0)] if args.control else [])
    timings = {}
    for label, lam in variants:
        folds = {}
        for fold, mask in (("A", in_a), ("B", ~in_a)):
            t1 = time.monotonic()
            print(f"{label}, fold {fold}", flush=True)
            tuned = fine_tune(flagship, data, mask, _with_lam(args, lam))
            folds[fold] = (model_outputs(tuned, data), head_params(tuned))
            timings[f"{label} {fold}"] = time.monotonic() - t1
            if lam == 0:  # no outliers: one model serves both folds
                folds["B"] = folds["A"]
                break
        for k in ("energy", "knn_pca", "energy_knn_pca", "msp", "msp_knn_pca"):
            rows.append(measure(k, folds, data) | {"model": label})
        result = {"rows": rows, "timings_s": timings, "total_s": time.monotonic() - t0}
        result["args"] = {k: str(v) for k, v in vars(args).items()}
        write_text_atomic(args.work / "results.json", json.dumps(result, indent=1))
        print(table(rows), flush=True)
    print(json.dumps({r["model"] + " " + r["method"]: r["fpr_source"] for r in rows}, indent=1))
    print(f"total {time.monotonic() - t0:.0f} s; timings {timings}")
    return 0


def _with_lam(args: argparse.Namespace, lam: float) -> argparse.Namespace:
    return argparse.Namespace(**(vars(args) | {"lam": lam}))


if __name__ == "__main__":
    raise SystemExit(main())
