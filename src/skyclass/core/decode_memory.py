"""What decoding an image costs in memory, and the steps that keep it small.

Pillow decodes PNG, WebP and TIFF at full size (only JPEG can decode at a reduced scale), so a few
KB can declare hundreds of MB of pixels under the pixel limit. Here: the decoded bytes an image
will take, read from its header (by mode, and by codec where the codec keeps a frame of its own);
the budget checks that refuse an image before anything is allocated; the 16/32-bit and float to
8-bit conversion a band of rows at a time; the whole-factor reduction right after decoding; and
handing freed memory back to the system after a heavy decode.
"""

from __future__ import annotations

import ctypes
import functools
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

import numpy as np
from PIL import Image

from skyclass.core.errors import CorruptImage, DecodeBudgetExceeded

#: Formats the model takes. Pillow reads more (ICO, PSD, EPS...): those are refused.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

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


def decoded_bytes(img: Image.Image) -> int:
    """Bytes that decoding this opened (not yet loaded) image takes, conversions included."""
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
        cost = decoded_bytes(img)
    except Exception:  # not an image, a damaged header, a bomb: decode_image says which
        return 0
    if limits is not None:
        check_budget(img, cost, len(data), limits)
    return cost


def check_budget(img: Image.Image, cost: int, size: int, limits: ImageLimits) -> None:
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


def check_jpeg_length(img: Image.Image, size: int) -> None:
    """A JPEG codes every 8x8 block of its luma with at least one bit (its DC difference), even
    when flat and progressive: fewer bytes than that cannot hold the size its header declares.
    libjpeg pads such a stream with grey without an error; we refuse it as truncated."""
    if img.format != "JPEG":
        return
    blocks = -(-img.width // 8) * -(-img.height // 8)
    if size * 8 < blocks:
        raise CorruptImage(
            f"the JPEG declares {img.width}x{img.height} pixels but holds {size:,} bytes: "
            "it is truncated"
        )


def to_8bit(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float modes -> L, a band of rows at a time (no full-size float copy).

    16-bit data (and 32-bit data above 255) is scaled from 0..65535; float data is taken as 0..255.
    """
    mode = img.mode
    if mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return img
    scale = 255.0 / 65535.0
    if mode == "F" or (mode == "I" and cast(tuple[int, int], img.getextrema())[1] <= 255):
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


def shrink(img: Image.Image, draft_size: tuple[int, int] | None) -> Image.Image:
    """A heavy image reduced by a whole factor, never below twice ``draft_size`` on either side."""
    if draft_size is None or decoded_bytes(img) <= HEAVY_DECODE_BYTES:
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
        return cast(Callable[[int], int], ctypes.CDLL(None).malloc_trim)
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None
