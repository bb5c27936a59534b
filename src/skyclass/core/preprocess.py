"""Image decoding and preprocessing in NumPy and Pillow: the one place for it.

Training uses these same functions for its decode and resize steps (wrapped as Albumentations
transforms), so a served image and a test-time training image become the same tensor.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from skyclass.core.errors import (
    CorruptImage,
    EmptyImage,
    ImageTooLarge,
    NotAnImage,
    UnsupportedFormat,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Formats the model takes. Pillow reads more (ICO, PSD, EPS...): those are refused.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
#: File name endings of those formats, for commands that look for images in folders.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")

_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes the model's input; travels with the model (checkpoint and model.json).

    size is (height, width). Resizing is Pillow's (antialiased) resampling; JPEGs are decoded at a
    reduced scale first when ``draft`` is on (never below ``size``), which training also does.
    """

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    draft: bool = True
    background: tuple[int, int, int] = (255, 255, 255)

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATION:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be (height, width), got {self.size!r}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown preprocess keys: {sorted(unknown)}")
        kwargs: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**kwargs)


@dataclass(frozen=True)
class ImageLimits:
    """Bounds checked before any pixel is decoded."""

    max_bytes: int = 6 * 1024 * 1024
    max_pixels: int = 40_000_000
    formats: tuple[str, ...] = field(default=SUPPORTED_FORMATS)


def _open(data: bytes, limits: ImageLimits) -> Image.Image:
    if not data:
        raise EmptyImage("the image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(
            f"the image is {len(data):,} bytes; the limit is {limits.max_bytes:,} bytes"
        )
    try:
        return Image.open(io.BytesIO(data), formats=list(limits.formats))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge("the image declares more pixels than allowed") from exc
    except UnidentifiedImageError:
        pass
    except Exception as exc:  # a header that Pillow recognised but could not parse
        raise CorruptImage("the image header is damaged") from exc
    # A supported format's signature that Pillow would not open: a damaged header (bad CRC...).
    damaged = _signature_format(data)
    if damaged in limits.formats:
        raise CorruptImage(f"the {damaged} header is damaged")
    # Not one of ours: is it an image in some other format, or not an image at all?
    try:
        other = Image.open(io.BytesIO(data))
        fmt = other.format
    except Exception:
        fmt = None
    if fmt:
        raise UnsupportedFormat(
            f"{fmt} images are not supported; send one of {', '.join(limits.formats[:5])}"
        )
    raise NotAnImage("the data is not an image in a format we know")


_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


def _signature_format(data: bytes) -> str | None:
    """The format named by the file's magic bytes, whatever follows them."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES if data.startswith(magic)), None)


def decode_image(
    data: bytes,
    *,
    draft_size: tuple[int, int] | None = None,
    limits: ImageLimits | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Decode bytes into an upright 8-bit RGB image.

    Checks size limits from the header before decoding; applies EXIF orientation; takes the first
    frame of animations; composites transparency onto ``background``; maps 16-bit and other modes to
    8-bit RGB. ``draft_size`` (width, height) lets a JPEG decode at 1/2, 1/4 or 1/8 scale, never
    below that size. Raises an :class:`~skyclass.core.errors.ImageError` for anything bad.
    """
    limits = limits or ImageLimits()
    img = _open(data, limits)
    width, height = img.size
    if width < 1 or height < 1:
        raise CorruptImage("the image has no pixels")
    if width * height > limits.max_pixels:
        raise ImageTooLarge(
            f"the image is {width}x{height} pixels; the limit is {limits.max_pixels:,} pixels"
        )
    try:
        if draft_size is not None and img.format == "JPEG":
            img.draft("RGB", draft_size)
        img.load()
        img = ImageOps.exif_transpose(img) or img
        return _to_rgb(img, background)
    except (ImageTooLarge, CorruptImage):
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge("the image declares more pixels than allowed") from exc
    except Exception as exc:  # truncated data, bad CRC, broken stream, ...
        raise CorruptImage("the image data is truncated or damaged") from exc


def _to_rgb(img: Image.Image, background: tuple[int, int, int]) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 / 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 1.0
        arr8 = np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if mode == "F":
        arr8 = np.clip(np.rint(np.nan_to_num(np.asarray(img))), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img.convert("RGB")


def resize_image(
    img: Image.Image, size: tuple[int, int], interpolation: str = "bilinear"
) -> Image.Image:
    """Resize to (height, width) with Pillow's antialiased resampling."""
    height, width = size
    if img.size == (width, height):
        return img
    return img.resize((width, height), _INTERPOLATION[interpolation])


def normalize(
    pixels: np.ndarray,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> np.ndarray:
    """uint8 HWC RGB -> float32 CHW: ``(x - 255*mean) / (255*std)``, as Albumentations does."""
    mean_px = np.asarray(mean, dtype=np.float32) * 255.0
    inv_std = np.reciprocal(np.asarray(std, dtype=np.float32) * 255.0)
    out = (pixels.astype(np.float32) - mean_px) * inv_std
    return np.ascontiguousarray(out.transpose(2, 0, 1))


def load_resized(
    data: bytes,
    size: tuple[int, int],
    *,
    interpolation: str = "bilinear",
    draft: bool = True,
    limits: ImageLimits | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Decode and resize to (height, width): uint8 HWC RGB. Shared by serving and training."""
    # Square request: the image may still be rotated by its EXIF orientation after decoding.
    side = max(size)
    draft_size = (side, side) if draft else None
    img = decode_image(data, draft_size=draft_size, limits=limits, background=background)
    return np.asarray(resize_image(img, size, interpolation), dtype=np.uint8)


def preprocess(
    data: bytes, config: PreprocessConfig | None = None, limits: ImageLimits | None = None
) -> np.ndarray:
    """Image bytes -> the model's input, float32 of shape (1, 3, height, width)."""
    config = config or PreprocessConfig()
    pixels = load_resized(
        data,
        config.size,
        interpolation=config.interpolation,
        draft=config.draft,
        limits=limits,
        background=config.background,
    )
    return normalize(pixels, config.mean, config.std)[None]
