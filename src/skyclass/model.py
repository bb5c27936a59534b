"""MobileNetV2 with an N-class log-softmax head; weight loading; freeze and unfreeze by block."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

log = logging.getLogger(__name__)

#: torchvision's MobileNetV2 ``features`` has 19 children: 0 is the stem conv, 1-17 the inverted
#: residual blocks, 18 the last 1x1 conv to 1280 channels.
NUM_FEATURE_BLOCKS = 19
IMAGENET_WEIGHTS = "imagenet"


def feature_blocks(model: nn.Module) -> nn.Sequential:
    """MobileNetV2's ``features`` (``nn.Module`` attributes are typed ``Tensor | Module``)."""
    return cast(nn.Sequential, model.features)


def classifier_head(model: nn.Module) -> nn.Sequential:
    """MobileNetV2's ``classifier``: Dropout -> Linear -> LogSoftmax."""
    return cast(nn.Sequential, model.classifier)


def linear_head(model: nn.Module) -> nn.Linear:
    """The classifier's Linear layer (weight C x K, bias C) over the pooled features."""
    layers = [m for m in classifier_head(model) if isinstance(m, nn.Linear)]
    if len(layers) != 1:
        raise ValueError(f"expected one Linear layer in the classifier, found {len(layers)}")
    return layers[0]


def build_model(
    num_classes: int,
    *,
    weights: str | Path | None = IMAGENET_WEIGHTS,
    dropout: float = 0.2,
) -> nn.Module:
    """MobileNetV2 whose classifier is Dropout -> Linear(1280, num_classes) -> LogSoftmax.

    ``weights``: a path to a torchvision ``mobilenet_v2`` state_dict (ImageNet, 1000 classes, or a
    full checkpoint state_dict with the same head), ``"imagenet"`` for torchvision's own download
    (needs the internet), or None for random initialisation.
    """
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    if weights == IMAGENET_WEIGHTS:
        model = mobilenet_v2(weights=MobileNet_V2_Weights.IMAGENET1K_V1)
    else:
        model = mobilenet_v2()
        if weights is not None:
            state = torch.load(Path(weights), map_location="cpu", weights_only=True)
            model.load_state_dict(state)
            log.info("loaded backbone weights from %s", weights)
    in_features = model.classifier[-1].in_features
    model.classifier = nn.Sequential(
        nn.Dropout(p=dropout),
        nn.Linear(in_features, num_classes),
        nn.LogSoftmax(dim=1),
    )
    return model


def set_trainable(model: nn.Module, unfrozen_blocks: Iterable[int]) -> None:
    """Freeze all but ``features[i]`` for i in ``unfrozen_blocks``; the head stays trainable.

    Frozen blocks are put in eval mode by :func:`train_mode`, so their BatchNorm statistics stay.
    """
    unfrozen = set(unfrozen_blocks)
    bad = [i for i in unfrozen if not 0 <= i < NUM_FEATURE_BLOCKS]
    if bad:
        raise ValueError(f"feature blocks must be in 0..{NUM_FEATURE_BLOCKS - 1}, got {bad}")
    for i, block in enumerate(feature_blocks(model)):
        for p in block.parameters():
            p.requires_grad = i in unfrozen
    for p in classifier_head(model).parameters():
        p.requires_grad = True


def train_mode(model: nn.Module) -> None:
    """model.train(), except blocks with no trainable parameter, which stay in eval mode."""
    model.train()
    for block in feature_blocks(model):
        if not any(p.requires_grad for p in block.parameters()):
            block.eval()


def load_trained(checkpoint: str | Path) -> tuple[nn.Module, dict]:
    """Rebuild a trained model from a skyclass checkpoint; returns (model in eval mode, checkpoint).

    A checkpoint is a dict with at least ``model`` (state_dict of :func:`build_model`),
    ``class_names`` (list[str]), ``preprocess`` (PreprocessConfig.to_dict()) and optionally
    ``dropout``; training adds optimizer, scheduler, epoch, RNG states, config and metrics.
    """
    ckpt = load_checkpoint(checkpoint)
    model = build_model(len(ckpt["class_names"]), weights=None, dropout=ckpt.get("dropout", 0.2))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt


class CheckpointError(ValueError):
    """A file that is not a checkpoint skyclass will load (unreadable, or it carries code)."""


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a skyclass checkpoint without running any code it may carry.

    ``torch.load(weights_only=True)`` unpickles tensors, dicts, lists, tuples, strings and numbers
    only; a pickle that names any other callable (``os.system``, a class) is refused, never run.
    Checkpoints written by skyclass hold nothing else (RNG states are stored as tensors).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} refused: it is not a plain-tensor checkpoint (it would run code or load "
            f"an object on unpickling: {first[:160]})"
        ) from exc
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__})"
        ) from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a skyclass checkpoint (not a dict)")
    return ckpt
