"""Image decoding and preprocessing in NumPy and Pillow: the one place for it.

Training uses these same functions for its decode and resize steps (wrapped as Albumentations
transforms), so a served image and a test-time training image become the same tensor.
"""

from __future__ import annotations

import ctypes
import functools
import io
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from skyclass.core.errors import (
    CorruptImage,
    DecodeBudgetExceeded,
    EmptyImage,
    ImageTooLarge,
    NotAnImage,
    UnsupportedFormat,
)

log = logging.getLogger(__name__)

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
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**kwargs)


#: Bytes per pixel that decoding an image of each mode costs here, conversions included: Pillow
#: keeps RGB, RGBA, CMYK... as 4 bytes a pixel; 16-bit images add their 8-bit copy (1), 32-bit
#: ones too; palette images are expanded to RGB(A) (4) before they can be reduced, 1-bit to L.
_DECODE_COST = {
    "1": 2,
    "L": 1,
    "P": 5,
    "I;16": 3,
    "I;16L": 3,
    "I;16B": 3,
    "I;16N": 3,
    "I": 5,
    "F": 5,
}
#: Codecs that decode a whole frame into a buffer of their own before Pillow copies it (libwebp).
_CODEC_COPIES = {"WEBP": 2}
#: Above this many decoded bytes an image is "heavy": reduced right after decoding, its freed memory
#: handed back to the system, and (in the app) decoded one at a time.
HEAVY_DECODE_BYTES = 32 * 1024 * 1024
#: Rows converted at a time from 16/32-bit and float modes (bounds the float32 scratch band).
_BAND_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class ImageLimits:
    """Bounds checked before any pixel is decoded.

    ``max_decode_bytes`` is the memory a decode may take (see :func:`decode_cost`): a 1.5 KB WebP
    or a 90 KB 16-bit PNG can declare 40 MP, under ``max_pixels`` yet hundreds of MB once decoded.
    A heavy image (over 32 MiB decoded) whose data is ``max_expansion`` times smaller than its
    decoded pixels is a decompression bomb, not a photo (photos compress 2-50x), and is refused too.
    """

    max_bytes: int = 6 * 1024 * 1024
    max_pixels: int = 40_000_000
    formats: tuple[str, ...] = field(default=SUPPORTED_FORMATS)
    max_decode_bytes: int = 128 * 1024 * 1024
    max_expansion: int = 1024


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


def _cost(img: Image.Image) -> int:
    width, height = img.size
    copies = _CODEC_COPIES.get(img.format or "", 1)
    return width * height * _DECODE_COST.get(img.mode, 4) * copies


def decode_cost(
    data: bytes, draft_size: tuple[int, int] | None = None, limits: ImageLimits | None = None
) -> int:
    """Bytes that decoding ``data`` will take, from its header alone (0 when it has none we read).

    JPEGs count at the scale ``draft_size`` lets them decode at. With ``limits``, an image over
    the decode budget raises :class:`DecodeBudgetExceeded` here, before anything is decoded.
    """
    try:
        img = Image.open(io.BytesIO(data), formats=list(SUPPORTED_FORMATS))
        if draft_size is not None and img.format == "JPEG":
            img.draft("RGB", draft_size)
        cost = _cost(img)
    except Exception:  # not an image, a damaged header, a bomb: decode_image says which
        return 0
    if limits is not None:
        _check_budget(img, cost, len(data), limits)
    return cost


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
        if draft_size is not None and img.format == "JPEG":
            img.draft("RGB", draft_size)
        cost = _cost(img)
        _check_budget(img, cost, len(data), limits)
        img.load()
        img = _shrink(_to_8bit(img), draft_size)
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


def _check_budget(img: Image.Image, cost: int, size: int, limits: ImageLimits) -> None:
    what = f"this {img.width}x{img.height} {img.format} ({img.mode}) image"
    if cost > limits.max_decode_bytes:
        raise DecodeBudgetExceeded(
            f"decoding {what} would take {cost / 2**20:,.0f} MiB; "
            f"the limit is {limits.max_decode_bytes / 2**20:,.0f} MiB"
        )
    if cost > HEAVY_DECODE_BYTES and cost > size * limits.max_expansion:
        raise DecodeBudgetExceeded(
            f"{what} declares {cost / 2**20:,.0f} MiB of pixels in {size:,} bytes "
            f"(over {limits.max_expansion}x): a decompression bomb"
        )


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float modes -> L, a band of rows at a time (no full-size float copy).

    16-bit data (and 32-bit data above 255) is scaled from 0..65535; float data is taken as 0..255.
    """
    mode = img.mode
    if mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return img
    scale = 255.0 / 65535.0
    if mode == "F" or (mode == "I" and img.getextrema()[1] <= 255):  # type: ignore[index]
        scale = 1.0
    width, height = img.size
    out = np.empty((height, width), dtype=np.uint8)
    rows = max(1, _BAND_BYTES // (4 * width))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        band = np.array(img.crop((0, top, width, bottom)), dtype=np.float32)  # a writable copy
        if scale != 1.0:
            band *= np.float32(scale)
        np.nan_to_num(band, copy=False)
        np.rint(band, out=band)
        np.clip(band, 0, 255, out=band)
        out[top:bottom] = band
    return Image.fromarray(out)


def _shrink(img: Image.Image, draft_size: tuple[int, int] | None) -> Image.Image:
    """A heavy image reduced by a whole factor, never below twice ``draft_size`` on either side."""
    if draft_size is None or _cost(img) <= HEAVY_DECODE_BYTES:
        return img
    factor = min(img.width // (2 * draft_size[0]), img.height // (2 * draft_size[1]))
    if factor < 2:
        return img
    if img.mode == "1":
        img = img.convert("L")
    elif img.mode == "P":
        has_alpha = "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
    return img.reduce(factor)


def release_freed_memory() -> None:
    """Hand memory freed by a large decode back to the system (glibc keeps it otherwise)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None


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
