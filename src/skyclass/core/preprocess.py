"""Image decoding and preprocessing in NumPy and Pillow: the one place for it.

Training uses these same functions for its decode and resize steps (wrapped as Albumentations
transforms), so a served image and a test-time training image become the same tensor.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from skyclass.core.decode_memory import (
    HEAVY_DECODE_BYTES,
    check_budget,
    check_jpeg_length,
    decoded_bytes,
    release_freed_memory,
    shrink,
    to_8bit,
)
from skyclass.core.decode_memory import SUPPORTED_FORMATS as SUPPORTED_FORMATS
from skyclass.core.decode_memory import ImageLimits as ImageLimits
from skyclass.core.decode_memory import decode_cost as decode_cost
from skyclass.core.errors import (
    CorruptImage,
    EmptyImage,
    ImageTooLarge,
    NotAnImage,
    UnsupportedFormat,
)

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: File name endings of those formats, for commands that look for images in folders.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")

_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def _whole(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
        if len(self.size) != 2 or not all(_whole(x, 1, 8192) for x in self.size):
            raise ValueError(f"size must be (height, width), 1..8192 pixels, got {self.size!r}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) != 3 or not all(_number(x) for x in values):
                raise ValueError(f"{name} must be 3 finite numbers, got {values!r}")
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std!r}")
        if len(self.background) != 3 or not all(_whole(x, 0, 255) for x in self.background):
            raise ValueError(f"background must be 3 values 0..255, got {self.background!r}")
        if not isinstance(self.draft, bool):
            raise ValueError(f"draft must be true or false, got {self.draft!r}")

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

    Checks size limits from the header before decoding: bytes, pixels, and the memory the decode
    will take (``limits.max_decode_bytes``, a 413). Applies EXIF orientation; takes the first frame
    of animations; composites transparency onto ``background``; maps 16-bit, 32-bit and float modes
    to 8 bits a band of rows at a time. ``draft_size`` (width, height) lets a JPEG decode at 1/2,
    1/4 or 1/8 scale, never below that size, and reduces any other heavy image by a whole factor
    right after decoding (never below twice that size). Raises an
    :class:`~skyclass.core.errors.ImageError` for anything bad.
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
        check_jpeg_length(img, len(data))
        if draft_size is not None and img.format == "JPEG":
            img.draft("RGB", draft_size)
        cost = decoded_bytes(img)
        check_budget(img, cost, len(data), limits)
        img.load()
        img = shrink(to_8bit(img), draft_size)
        if cost > HEAVY_DECODE_BYTES:
            release_freed_memory()
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
