"""hypothesis on preprocessing: any size, mode and format -> the model's tensor, or a typed error.

Images are cut from a real shared photo (so the content is a photo, not noise) and converted to each
mode Pillow can write in each format; arbitrary and mutated bytes go through the same function.
Nothing may raise anything but an ImageError; every tensor is 1x3x224x224 float32 and finite.
"""

from __future__ import annotations

import io
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from skyclass.core.errors import ImageError
from skyclass.core.preprocess import ImageLimits, preprocess
from tests.reliability.corpus import source_photo

MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F")
FORMATS = ("PNG", "TIFF", "JPEG", "WEBP", "GIF", "BMP")
MAX_SIDE = 2000
MAX_PIXELS = 1_000_000  # bounded total, so the property runs in seconds on a busy machine
SETTINGS = settings(
    max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)


@cache
def photo() -> Image.Image:
    return Image.open(source_photo()).convert("RGB")


@cache
def writable() -> tuple[tuple[str, str], ...]:
    """(mode, format) pairs that Pillow writes as-is (a 4x3 image round-trips)."""
    pairs = []
    for mode in MODES:
        for fmt in FORMATS:
            try:
                Image.new(mode, (4, 3)).save(io.BytesIO(), format=fmt)
            except (OSError, KeyError, ValueError, TypeError):
                continue
            pairs.append((mode, fmt))
    return tuple(pairs)


def in_mode(img: Image.Image, mode: str) -> Image.Image:
    """The photo in ``mode``. 16-bit data spans 0..65535 (as I;16, or in a 32-bit I image, as
    16-bit TIFFs and PNGs decode); float data spans 0..255 (Pillow's own F -> L mapping)."""
    if mode in ("I;16", "I", "F"):
        grey = np.asarray(img.convert("L"), dtype=np.float64)
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        scale = 1.0 if mode == "F" else 257.0
        out = Image.fromarray((grey * scale).astype(dtype))
        assert out.mode == mode, out.mode
        return out
    if mode == "PA":
        return img.convert("RGBA").convert("PA")
    return img.convert(mode)


@st.composite
def encoded_images(draw: st.DrawFn) -> tuple[bytes, str, str, tuple[int, int]]:
    mode, fmt = draw(st.sampled_from(writable()))
    width = draw(st.integers(1, MAX_SIDE))
    height = draw(st.integers(1, max(1, min(MAX_SIDE, MAX_PIXELS // width))))
    src = photo()
    left = draw(st.integers(0, src.width // 2))
    top = draw(st.integers(0, src.height // 2))
    crop = src.crop((left, top, src.width, src.height)).resize((width, height))
    buf = io.BytesIO()
    in_mode(crop, mode).save(buf, format=fmt)
    return buf.getvalue(), mode, fmt, (width, height)


def assert_model_input(tensor: np.ndarray) -> None:
    assert tensor.shape == (1, 3, 224, 224)
    assert tensor.dtype == np.float32
    assert np.isfinite(tensor).all()
    # Normalised 8-bit pixels: (0 - 0.485) / 0.229 ... (1 - 0.406) / 0.225.
    assert tensor.min() >= -2.2 and tensor.max() <= 2.7


def test_every_writable_pair_is_exercised() -> None:
    pairs = writable()
    assert len(pairs) >= 25, pairs  # the strategy really spans modes x formats
    assert {m for m, _ in pairs} == set(MODES)


@SETTINGS
@given(encoded_images())
def test_any_size_mode_format_gives_the_model_tensor(
    example: tuple[bytes, str, str, tuple[int, int]],
) -> None:
    data, mode, fmt, size = example
    try:
        tensor = preprocess(data)
    except ImageError as exc:  # a valid image must not be refused
        pytest.fail(f"{fmt} {mode} {size[0]}x{size[1]} refused: {exc.code}: {exc}")
    assert_model_input(tensor)


@SETTINGS
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_give_a_tensor_or_a_typed_error(data: bytes) -> None:
    try:
        tensor = preprocess(data)
    except ImageError as exc:
        assert 400 <= exc.status < 500 and exc.code
        return
    assert_model_input(tensor)


@cache
def small_files() -> dict[str, bytes]:
    img = photo().resize((96, 128))
    out = {}
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP"):
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        out[fmt] = buf.getvalue()
    return out


@SETTINGS
@given(
    st.sampled_from(("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=16),
    st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_mutated_real_files_give_a_tensor_or_a_typed_error(
    fmt: str, flips: list[tuple[int, int]], cut: int | None
) -> None:
    """Real encoded files with bytes overwritten (headers included) and optionally cut short."""
    data = bytearray(small_files()[fmt])
    for at, value in flips:
        data[at % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    try:
        tensor = preprocess(bytes(data), limits=ImageLimits(max_pixels=4_000_000))
    except ImageError as exc:
        assert 400 <= exc.status < 500 and exc.code
        return
    assert_model_input(tensor)


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_bit_depth_keeps_the_picture(mode: str) -> None:
    """16-bit, 32-bit and float images are scaled to 8 bits, not clipped to black or white."""
    grey = photo().convert("L").resize((224, 224))
    buf = io.BytesIO()
    in_mode(grey.convert("RGB"), mode).save(buf, format="TIFF")
    ref = io.BytesIO()
    grey.save(ref, format="PNG")
    diff = np.abs(preprocess(buf.getvalue()) - preprocess(ref.getvalue())).mean()
    assert diff < 0.05, diff
