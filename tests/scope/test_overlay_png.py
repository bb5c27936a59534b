"""The explanation's PNG encoder: a standard PNG that decodes to exactly the overlay's pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from skyclass.core.explain import cam_overlay, encode_png, overlay
from skyclass.core.preprocess import decode_image
from tests.conftest import CLASSES, shared_images


@pytest.mark.parametrize("cls", CLASSES)
def test_overlay_png_decodes_to_the_overlay_pixels(cls: str) -> None:
    photo = decode_image(shared_images(cls, 1)[0].read_bytes(), background=(255, 255, 255))
    cam = np.random.default_rng(1).random((9, 9)).astype(np.float32)
    image = overlay(photo, cam)
    png = encode_png(image)
    decoded = Image.open(io.BytesIO(png))
    decoded.load()  # checks every chunk's CRC and the zlib stream
    assert decoded.format == "PNG" and decoded.mode == "RGB" and decoded.size == image.size
    assert np.array_equal(np.asarray(decoded), np.asarray(image))
    explanation = cam_overlay(photo, cam, cls)
    assert explanation.png == png and (explanation.width, explanation.height) == image.size


def test_png_of_odd_sizes_and_extreme_pixels() -> None:
    """1x1, one row, one column, and rows that wrap around (255 above 0) round-trip exactly."""
    rng = np.random.default_rng(0)
    for h, w in ((1, 1), (1, 7), (7, 1), (5, 3)):
        pixels = rng.choice(np.array([0, 1, 254, 255], dtype=np.uint8), size=(h, w, 3))
        decoded = Image.open(io.BytesIO(encode_png(Image.fromarray(pixels, "RGB"))))
        assert np.array_equal(np.asarray(decoded), pixels)
