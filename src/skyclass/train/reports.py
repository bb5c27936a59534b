"""Reports: per-class metrics (metrics.json), per-image predictions (predictions.csv), confusion
matrix, misclassified gallery, curves.

Compute first (``classification_metrics``), render after; every file is written atomically.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skyclass.outputs import write_text_atomic
from skyclass.reporting.figures import pyplot, save_figure
from skyclass.reporting.html import (
    VIEWS_CSS,
    image_or_placeholder,
    image_views,
    page,
    png_uri,
    thumbnail_uri,
)
from skyclass.reporting.metrics import classification_metrics


def plot_confusion(
    confusion: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str = ""
) -> Path:
    plt = pyplot()
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
    plt = pyplot()
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


def image_losses(probs: np.ndarray, targets: Sequence[int] | np.ndarray) -> np.ndarray:
    """Each image's negative log-likelihood of its true class (probabilities clipped at 1e-12)."""
    t = np.asarray(targets, dtype=int)
    if not len(t):
        return np.array([], dtype=np.float64)
    return -np.log(np.clip(probs[np.arange(len(t)), t], 1e-12, 1.0))


#: The most misclassified images a gallery shows.
GALLERY_LIMIT = 120


@dataclass(frozen=True)
class CardMaps:
    """A gallery card's class activation map overlays (PNG): of the predicted and the true class."""

    predicted: bytes
    true: bytes


def shown_misclassified(
    targets: Sequence[int] | np.ndarray, probs: np.ndarray, limit: int = GALLERY_LIMIT
) -> np.ndarray:
    """Indices of the misclassified images a gallery shows: highest loss first, at most
    ``limit`` (ties in manifest order)."""
    t = np.asarray(targets, dtype=int)
    if not len(t):
        return np.array([], dtype=int)
    loss = image_losses(probs, t)
    wrong = np.flatnonzero(probs.argmax(1) != t)
    return wrong[np.argsort(-loss[wrong], kind="stable")][:limit]


def _card_image(f: Path, i: int, maps: CardMaps | None, labels: tuple[str, str]) -> str:
    """The card's thumbnail; with maps, a switch between it and the maps."""
    photo = image_or_placeholder(thumbnail_uri(f), f.name)
    if maps is None:
        return photo
    guess, true = labels
    views = [
        ("photo", photo),
        ("map: pred", _map_img(maps.predicted, guess, f.name)),
        ("map: true", _map_img(maps.true, true, f.name)),
    ]
    return image_views(f"card{i}", views)


def _map_img(png: bytes, label: str, name: str) -> str:
    alt = html.escape(f"class activation map of {label} over {name}")
    return f'<img src="{png_uri(png)}" alt="{alt}" title="{html.escape(label)}">'


def write_gallery(
    files: Sequence[Path],
    targets: Sequence[int],
    probs: np.ndarray,
    labels: Sequence[str],
    path: Path,
    *,
    limit: int = GALLERY_LIMIT,
    title: str = "misclassified",
    maps: Mapping[int, CardMaps] | None = None,
) -> Path:
    """HTML gallery of misclassified images, highest loss first (fastai's plot_top_losses):
    embedded thumbnails with true / predicted label and confidence. ``maps``: class activation
    map overlays by image index, shown with a photo / map switch on those cards."""
    t = np.asarray(targets)
    pred = probs.argmax(1) if len(t) else np.array([], dtype=int)
    loss = image_losses(probs, t)
    n_wrong = int(np.count_nonzero(pred != t))
    order = shown_misclassified(t, probs, limit)
    maps = maps or {}
    cards = []
    for i in order:
        f = Path(files[i])
        name = html.escape(f.name)
        true, guess = html.escape(labels[t[i]]), html.escape(labels[pred[i]])
        conf, p_true = float(probs[i, pred[i]]), float(probs[i, t[i]])
        image = _card_image(f, int(i), maps.get(int(i)), (labels[pred[i]], labels[t[i]]))
        cards.append(
            f"<figure>{image}"
            f"<figcaption><b>true</b> {true}<br>"
            f"<b>pred</b> {guess} ({conf:.1%})<br><b>p(true)</b> {p_true:.1%} · "
            f"loss {float(loss[i]):.2f}<br><small>{name}</small></figcaption></figure>"
        )
    body = "\n".join(cards) or "<p>No misclassified images.</p>"
    summary = f"{n_wrong} of {len(t)} misclassified; showing {len(order)}, highest loss first."
    has_maps = any(int(i) in maps for i in order)
    if has_maps:
        summary += " Maps: where the model found evidence for a class (red: most)."
    body = f"<h1>{html.escape(title)}</h1>\n<p>{summary}</p>\n<div class='grid'>\n{body}\n</div>"
    doc = page(title, body, css=VIEWS_CSS if has_maps else "")
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
    maps: Mapping[int, CardMaps] | None = None,
) -> dict[str, Any]:
    """metrics.json, predictions.csv, confusion.png and misclassified.html (with ``maps`` on
    its cards) for one manifest; returns the metrics."""
    preds = probs.argmax(1) if len(targets) else np.array([], dtype=int)
    metrics = classification_metrics(targets, preds, labels).to_dict()
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_predictions(files, targets, probs, labels, out_dir / "predictions.csv")
    plot_confusion(
        metrics["confusion"],
        labels,
        out_dir / "confusion.png",
        title=f"{title}: accuracy {metrics['accuracy']:.2%} (n={metrics['n']})",
    )
    gallery = out_dir / "misclassified.html"
    write_gallery(files, targets, probs, labels, gallery, title=title, maps=maps)
    return metrics
