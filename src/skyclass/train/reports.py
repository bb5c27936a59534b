"""Reports: per-class metrics (metrics.json), per-image predictions (predictions.csv), confusion
matrix, misclassified gallery, curves.

Compute first (``classification_metrics``), render after; every file is written atomically.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skyclass.outputs import write_text_atomic


def save_figure(fig: Any, path: Path) -> Path:
    """savefig to a temp file then os.replace; closes the figure."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.tight_layout()
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=110)
    finally:
        plt.close(fig)
    os.replace(tmp, path)
    return path


def classification_metrics(
    targets: Sequence[int], preds: Sequence[int], labels: Sequence[str]
) -> dict[str, Any]:
    """{"accuracy", "labels", "per_class": {label: {precision, recall, f1, support}},
    "confusion" (rows = true, columns = predicted), "n"}."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    t, p = np.asarray(targets), np.asarray(preds)
    idx = list(range(len(labels)))
    prec, rec, f1, sup = precision_recall_fscore_support(t, p, labels=idx, zero_division=0)
    cm = confusion_matrix(t, p, labels=idx)
    return {
        "accuracy": float((t == p).mean()) if len(t) else float("nan"),
        "labels": list(labels),
        "per_class": {
            label: {
                "precision": float(prec[i]),
                "recall": float(rec[i]),
                "f1": float(f1[i]),
                "support": int(sup[i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion": cm.tolist(),
        "n": len(t),
    }


def plot_confusion(
    confusion: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str = ""
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(1.4 * len(labels) + 2.5, 1.2 * len(labels) + 2))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    top = cm.max() if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            color = "white" if cm[i, j] > top / 2 else "black"
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=color)
    return save_figure(fig, path)


def plot_curves(history: Sequence[dict[str, Any]], path: Path) -> Path:
    """Loss and accuracy per epoch (train and val), stage boundaries marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    a1.plot(epochs, [r["val_loss"] for r in history], "o-", label="val")
    a1.set_ylabel("loss")
    a2.plot(epochs, [r["train_accuracy"] for r in history], "o-", label="train")
    a2.plot(epochs, [r["val_accuracy"] for r in history], "o-", label="val")
    a2.set_ylabel("accuracy")
    for ax in (a1, a2):
        prev = None
        for r in history:
            if prev is not None and r["stage"] != prev:
                ax.axvline(r["epoch"] - 0.5, color="grey", ls=":")
            prev = r["stage"]
        ax.set_xlabel("epoch")
        ax.legend()
    return save_figure(fig, path)


def thumbnail_b64(file: Path, side: int = 160) -> str:
    from PIL import Image

    from skyclass.core.preprocess import decode_image

    img = decode_image(file.read_bytes(), draft_size=(side, side))
    img.thumbnail((side, side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def image_losses(probs: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """Each image's negative log-likelihood of its true class (probabilities clipped at 1e-12)."""
    t = np.asarray(targets, dtype=int)
    if not len(t):
        return np.array([], dtype=np.float64)
    return -np.log(np.clip(probs[np.arange(len(t)), t], 1e-12, 1.0))


def write_gallery(
    files: Sequence[Path],
    targets: Sequence[int],
    probs: np.ndarray,
    labels: Sequence[str],
    path: Path,
    *,
    limit: int = 120,
    title: str = "misclassified",
) -> Path:
    """HTML gallery of misclassified images, highest loss first (fastai's plot_top_losses):
    embedded thumbnails with true / predicted label and confidence."""
    t = np.asarray(targets)
    pred = probs.argmax(1) if len(t) else np.array([], dtype=int)
    loss = image_losses(probs, t)
    wrong = np.flatnonzero(pred != t)
    order = wrong[np.argsort(-loss[wrong], kind="stable")][:limit]
    cards = []
    for i in order:
        f = Path(files[i])
        try:
            src = f"data:image/jpeg;base64,{thumbnail_b64(f)}"
        except Exception:
            src = ""
        name = html.escape(f.name)
        true, guess = html.escape(labels[t[i]]), html.escape(labels[pred[i]])
        conf, p_true = float(probs[i, pred[i]]), float(probs[i, t[i]])
        cards.append(
            f'<figure><img src="{src}" alt="{name}"><figcaption><b>true</b> {true}<br>'
            f"<b>pred</b> {guess} ({conf:.1%})<br><b>p(true)</b> {p_true:.1%} · "
            f"loss {float(loss[i]):.2f}<br><small>{name}</small></figcaption></figure>"
        )
    body = "\n".join(cards) or "<p>No misclassified images.</p>"
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:1em}} .g{{display:flex;flex-wrap:wrap;gap:10px}}
figure{{margin:0;width:180px;border:1px solid #ccc;padding:6px;font-size:12px}}
img{{max-width:168px;max-height:168px;display:block;margin:auto}}
small{{word-break:break-all;color:#666}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{len(wrong)} of {len(t)} misclassified; showing {len(order)}, highest loss first.</p>
<div class="g">
{body}
</div></body></html>
"""
    return write_text_atomic(path, doc)


def write_predictions(
    files: Sequence[Path],
    targets: Sequence[int],
    probs: np.ndarray,
    labels: Sequence[str],
    path: Path,
) -> Path:
    """One row per image: file, true and predicted label, confidence, loss and every class's
    probability, in manifest order, for analysis beyond the summary (by source, by size, ...)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(
        ["file", "label", "predicted", "confidence", "loss", *(f"p_{c}" for c in labels)]
    )
    losses = image_losses(probs, targets)
    for f, t, p, loss in zip(files, targets, probs, losses, strict=True):
        k = int(p.argmax())
        writer.writerow(
            [str(f), labels[t], labels[k], f"{p[k]:.6f}", f"{loss:.6f}", *(f"{x:.6f}" for x in p)]
        )
    return write_text_atomic(path, buf.getvalue())


def same_images_as(report_dir: Path, files: Sequence[Path], labels: Sequence[str]) -> bool:
    """Whether ``report_dir`` holds a report of exactly these images with these labels, in this
    order (its predictions.csv, as :func:`write_predictions` writes it): the same manifest."""
    try:
        with (report_dir / "predictions.csv").open(newline="", encoding="utf-8") as fh:
            rows = [(r["file"], r["label"]) for r in csv.DictReader(fh)]
    except (OSError, KeyError, csv.Error, UnicodeDecodeError):
        return False
    return rows == [(str(f), label) for f, label in zip(files, labels, strict=True)]


def write_eval_reports(
    out_dir: Path,
    *,
    files: Sequence[Path],
    targets: Sequence[int],
    probs: np.ndarray,
    labels: Sequence[str],
    title: str,
) -> dict[str, Any]:
    """metrics.json, predictions.csv, confusion.png and misclassified.html for one manifest;
    returns the metrics."""
    preds = probs.argmax(1) if len(targets) else np.array([], dtype=int)
    metrics = classification_metrics(targets, preds, labels)
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_predictions(files, targets, probs, labels, out_dir / "predictions.csv")
    plot_confusion(
        metrics["confusion"],
        labels,
        out_dir / "confusion.png",
        title=f"{title}: accuracy {metrics['accuracy']:.2%} (n={metrics['n']})",
    )
    write_gallery(files, targets, probs, labels, out_dir / "misclassified.html", title=title)
    return metrics
