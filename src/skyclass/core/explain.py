"""Class activation maps as an overlay PNG over the photo (NumPy + Pillow, no torch).

The model's ``cam`` output is ``CAM_c = sum_k W_ck A_k`` over the last feature map (exact for
global average pooling + a linear head; see :mod:`skyclass.export.onnx_outputs`). The map of the
predicted class is min-max scaled, upsampled to the photo (the model saw it resized to a square,
so the map covers the whole photo), coloured and blended over it.
"""

from __future__ import annotations

import base64
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: Long side of the overlay image, in pixels (smaller photos are not enlarged).
OVERLAY_SIDE = 256
ALPHA = 0.5


class CannotExplain(ValueError):
    """An explanation was asked of a model that has no ``cam`` output. Maps to a 422."""

    status: int = 422
    code: str = "cannot_explain"


@dataclass(frozen=True)
class Explanation:
    """The overlay PNG for one class, and where the map peaks (fractions of width and height)."""

    label: str
    png: bytes
    width: int
    height: int
    peak: tuple[float, float]  # (x, y)

    def to_dict(self) -> dict[str, object]:
        return {
            "label": self.label,
            "method": "cam",
            "png_base64": base64.b64encode(self.png).decode("ascii"),
            "width": self.width,
            "height": self.height,
            "peak": {"x": self.peak[0], "y": self.peak[1]},
        }


def peak_of(cam: np.ndarray) -> tuple[float, float]:
    """Centre of the map's highest cell, as (x, y) fractions of the map's width and height."""
    h, w = cam.shape
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return (float((col + 0.5) / w), float((row + 0.5) / h))


def _palette() -> list[int]:
    """256 RGB entries of a blue-cyan-yellow-red ramp ("jet"-like), low to high."""
    v = np.linspace(0.0, 1.0, 256)
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return [int(x) for x in (np.stack([r, g, b], axis=-1) * 255).round().reshape(-1)]


def overlay(photo: Image.Image, cam: np.ndarray, *, side: int = OVERLAY_SIDE) -> Image.Image:
    """``cam`` (h, w) blended over ``photo`` (RGB), long side at most ``side``."""
    scale = min(1.0, side / max(photo.size))
    size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
    base = photo.resize(size, Image.Resampling.BILINEAR) if size != photo.size else photo
    lo, hi = float(cam.min()), float(cam.max())
    norm = (cam - lo) / (hi - lo) if hi > lo else np.zeros_like(cam)
    levels = Image.fromarray(np.round(255 * norm).astype(np.uint8), mode="L")
    heat = levels.resize(size, Image.Resampling.BILINEAR).convert("P")
    heat.putpalette(_palette())  # a 256-entry lookup: no per-pixel float maths
    return Image.blend(base.convert("RGB"), heat.convert("RGB"), ALPHA)


def cam_overlay(
    photo: Image.Image, cam: np.ndarray, label: str, *, side: int = OVERLAY_SIDE
) -> Explanation:
    """The overlay PNG of ``cam`` (h, w, the map of class ``label``) over ``photo``, long side at
    most ``side`` (serving's answers; the misclassified gallery asks for thumbnail size)."""
    image = overlay(photo, cam, side=side)
    return Explanation(label, encode_png(image), image.width, image.height, peak_of(cam))


def encode_png(image: Image.Image, level: int = 1) -> bytes:
    """An 8-bit RGB PNG with the Up filter on every row, deflated at ``level``.

    Pillow tries every PNG filter on every row: 7.5 ms for a 256 x 192 overlay on this machine,
    against 1.9 ms here for a file of the same size (80 KB; overlays are smooth from row to row).
    """
    pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    h, w, _ = pixels.shape
    rows = pixels.reshape(h, w * 3)
    raw = np.empty((h, w * 3 + 1), dtype=np.uint8)
    raw[:, 0] = 2  # filter type Up: each byte minus the byte above it (mod 256)
    raw[:, 1:] = rows
    raw[1:, 1:] -= rows[:-1]
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8 bits, RGB, deflate, no interlace
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), level)),
            _png_chunk(b"IEND", b""),
        )
    )


def _png_chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
