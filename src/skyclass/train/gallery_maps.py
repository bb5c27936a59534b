"""Class activation maps for the misclassified gallery, from the PyTorch model.

MobileNetV2 ends ``features`` (last map A, N x K x h x w, after its final ReLU6) -> global average
pool -> dropout -> Linear (W: C x K, b), so ``CAM_c = sum_k W_ck A_k`` is exact:
``mean_ij CAM_c[i, j] + b_c`` is the logit of class c (the ONNX ``cam`` output is the same map).
A second small pass over just the gallery's shown files (decoded and transformed as evaluation
does) computes them, on the model's device, in eval mode without gradients; the overlays are
drawn by serving's code (:func:`skyclass.core.explain.cam_overlay`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from skyclass.core.errors import ImageError
from skyclass.core.explain import cam_overlay
from skyclass.core.files import read_regular_file
from skyclass.core.preprocess import PreprocessConfig, decode_image
from skyclass.data.transforms import build_test_transform, eval_input
from skyclass.reporting.html import THUMBNAIL_MAX_BYTES, THUMBNAIL_SIDE
from skyclass.train.reports import GALLERY_LIMIT, CardMaps, shown_misclassified

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import nn


@dataclass(frozen=True)
class PhotoMaps:
    """One photo's class activation maps, and the photo (decoded at thumbnail size) they go on."""

    photo: Image.Image
    cams: np.ndarray  # (C, h, w) float32, one map per class


def class_activation_maps(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) maps of every class for a batch ``x`` already on the model's device, in fp32
    (eval mode, no gradients; the model is left in eval mode)."""
    import torch

    from skyclass.model import feature_blocks, linear_head

    model.eval()
    with torch.no_grad():
        a = feature_blocks(model)(x).float()
        weight = linear_head(model).weight.float()
        return torch.einsum("ck,nkhw->nchw", weight, a)


def _decode(path: Path, pre: PreprocessConfig) -> tuple[Image.Image, np.ndarray] | None:
    """(photo at thumbnail size, model input pixels as evaluation decodes them), or None for a
    file that is no longer a readable image."""
    data = read_regular_file(path, THUMBNAIL_MAX_BYTES)
    if not isinstance(data, bytes):
        return None
    side = (THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    try:
        pixels = eval_input(data, pre)
        photo = decode_image(
            data, draft_size=side if pre.draft else None, background=pre.background
        )
    except ImageError:
        return None
    return photo, pixels


def explain_files(
    model: nn.Module, files: Sequence[Path], pre: PreprocessConfig
) -> list[PhotoMaps | None]:
    """Every class's map for each file (one batch: pass a few files), None where a file cannot
    be decoded any more. Input: :func:`eval_input` + :func:`build_test_transform`, as evaluated."""
    import torch

    decoded = [_decode(Path(f), pre) for f in files]
    ok = [d for d in decoded if d is not None]
    if not ok:
        return [None] * len(files)
    transform = build_test_transform(pre)
    device = next(model.parameters()).device
    x = torch.stack([transform(image=pixels)["image"] for _, pixels in ok]).to(device)
    cams = iter(class_activation_maps(model, x).cpu().numpy())
    return [None if d is None else PhotoMaps(d[0], next(cams)) for d in decoded]


def gallery_maps(
    model: Any,
    files: Sequence[Path],
    targets: Sequence[int],
    probs: np.ndarray,
    labels: Sequence[str],
    pre: PreprocessConfig,
    *,
    limit: int = GALLERY_LIMIT,
    batch_size: int = 32,
) -> dict[int, CardMaps]:
    """Overlays of the predicted and the true class's maps for the images the gallery shows
    (:func:`~skyclass.train.reports.shown_misclassified`), by image index; none for a run with
    no misclassified image (no work either)."""
    order = [int(i) for i in shown_misclassified(targets, probs, limit)]
    maps: dict[int, CardMaps] = {}
    step = max(1, batch_size)
    for start in range(0, len(order), step):
        chunk = order[start : start + step]
        for i, found in zip(
            chunk, explain_files(model, [files[i] for i in chunk], pre), strict=True
        ):
            if found is None:
                continue
            pred, true = int(probs[i].argmax()), int(targets[i])
            maps[i] = CardMaps(
                predicted=_png(found, pred, labels),
                true=_png(found, true, labels),
            )
    return maps


def _png(found: PhotoMaps, k: int, labels: Sequence[str]) -> bytes:
    return cam_overlay(found.photo, found.cams[k], labels[k], side=THUMBNAIL_SIDE).png
