"""Albumentations train and test pipelines, built from one PreprocessConfig (timm-factory style).

Both start from ``skyclass.core.preprocess.load_resized``: Pillow decode (with JPEG draft), EXIF
transpose, RGB, antialiased resize. The test pipeline resizes straight to the model size, exactly as
serving does; the train pipeline resizes to ``AugmentConfig.cache_size`` (decoded once and cached),
then crops, cuts out, flips, rotates and jitters. Normalize -> ToTensorV2 ends both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from skyclass.core.preprocess import PreprocessConfig, load_resized


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation; probabilities are per image."""

    cache_size: int = 512
    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] = (0.75, 1.3333333333333333)
    cutout_p: float = 0.5
    cutout_holes: tuple[int, int] = (1, 3)
    cutout_size: tuple[float, float] = (0.08, 0.25)
    hflip_p: float = 0.5
    rotate_limit: float = 15.0
    rotate_p: float = 0.5
    #: Modest colour jitter: sources differ in colour cast and exposure; the class does not.
    color_jitter_p: float = 0.3
    color_jitter: float = 0.2
    hue_jitter: float = 0.02

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"augment.crop_scale must satisfy 0 < lo <= hi <= 1, got {lo, hi}")
        for name in ("cutout_p", "hflip_p", "rotate_p", "color_jitter_p"):
            p = getattr(self, name)
            if not 0 <= p <= 1:
                raise ValueError(f"augment.{name} must be in [0, 1], got {p}")
        if self.cache_size < 32:
            raise ValueError(f"augment.cache_size must be >= 32, got {self.cache_size}")


def eval_cache_tag(pre: PreprocessConfig) -> str:
    """The decoded-image cache tag of :func:`eval_input` under ``pre`` (one tag, every caller):
    every setting the decoded pixels depend on."""
    bg = "-".join(map(str, pre.background))
    return f"test-{pre.size[0]}x{pre.size[1]}-{pre.interpolation}-{pre.draft}-bg{bg}"


def train_cache_tag(pre: PreprocessConfig, aug: AugmentConfig) -> str:
    """The decoded-image cache tag of :func:`train_input` under ``pre`` and ``aug``."""
    bg = "-".join(map(str, pre.background))
    return f"train-{aug.cache_size}-{pre.interpolation}-{pre.draft}-bg{bg}"


def eval_input(data: bytes, pre: PreprocessConfig) -> np.ndarray:
    """Image bytes -> uint8 HWC at the model size, exactly as serving decodes and resizes."""
    return load_resized(
        data,
        pre.size,
        interpolation=pre.interpolation,
        draft=pre.draft,
        background=pre.background,
    )


def train_input(data: bytes, pre: PreprocessConfig, aug: AugmentConfig) -> np.ndarray:
    """Image bytes -> uint8 HWC at ``aug.cache_size`` (square): what the train pipeline crops."""
    side = aug.cache_size
    return load_resized(
        data,
        (side, side),
        interpolation=pre.interpolation,
        draft=pre.draft,
        background=pre.background,
    )


def _normalize_to_tensor(pre: PreprocessConfig) -> list[Any]:
    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    return [A.Normalize(mean=pre.mean, std=pre.std, max_pixel_value=255.0), ToTensorV2()]


def build_test_transform(pre: PreprocessConfig) -> Any:
    """uint8 HWC from :func:`eval_input` -> float32 CHW tensor (Normalize -> ToTensorV2)."""
    import albumentations as A

    return A.Compose(_normalize_to_tensor(pre))


def build_train_transform(pre: PreprocessConfig, aug: AugmentConfig, seed: int = 0) -> Any:
    """uint8 HWC from :func:`train_input` -> augmented float32 CHW tensor at ``pre.size``.

    RandomResizedCrop -> CoarseDropout (CutOut) -> HorizontalFlip -> Rotate -> ColorJitter ->
    Normalize -> ToTensorV2. Reseed per epoch with ``transform.set_random_seed`` for a
    reproducible data stream.
    """
    import albumentations as A
    import cv2

    fill = tuple(round(m * 255) for m in pre.mean)
    steps: list[Any] = [
        A.RandomResizedCrop(
            size=pre.size,
            scale=aug.crop_scale,
            ratio=aug.crop_ratio,
            interpolation=cv2.INTER_LINEAR,
            area_for_downscale="image",
        ),
        A.CoarseDropout(
            num_holes_range=aug.cutout_holes,
            hole_height_range=aug.cutout_size,
            hole_width_range=aug.cutout_size,
            fill=fill,
            p=aug.cutout_p,
        ),
        A.HorizontalFlip(p=aug.hflip_p),
        A.Rotate(
            limit=aug.rotate_limit,
            border_mode=cv2.BORDER_REFLECT_101,
            p=aug.rotate_p,
        ),
    ]
    if aug.color_jitter_p > 0:
        j = aug.color_jitter
        steps.append(
            A.ColorJitter(
                brightness=(1 - j, 1 + j),
                contrast=(1 - j, 1 + j),
                saturation=(1 - j, 1 + j),
                hue=(-aug.hue_jitter, aug.hue_jitter),
                p=aug.color_jitter_p,
            )
        )
    return A.Compose(steps + _normalize_to_tensor(pre), seed=seed)
