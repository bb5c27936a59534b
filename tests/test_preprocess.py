"""The serving preprocessing on real photos and on the awkward images people actually send."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from skyclass.core.errors import (
    CorruptImage,
    EmptyImage,
    ImageTooLarge,
    NotAnImage,
    UnsupportedFormat,
)
from skyclass.core.preprocess import (
    ImageLimits,
    PreprocessConfig,
    decode_image,
    load_resized,
    normalize,
    preprocess,
)
from tests.conftest import shared_images


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo() -> bytes:
    return shared_images("large_quadcopters", 1, prefix="cropspray_")[0].read_bytes()


@pytest.fixture(scope="module")
def photo_rgb(photo: bytes) -> Image.Image:
    return decode_image(photo)


def test_real_photo_becomes_normalised_tensor(photo: bytes) -> None:
    x = preprocess(photo)
    assert x.shape == (1, 3, 224, 224)
    assert x.dtype == np.float32
    assert np.isfinite(x).all()
    # ImageNet normalisation of 8-bit pixels stays inside these bounds, and a photo spans them.
    assert -2.2 < x.min() < -0.5 and 0.5 < x.max() < 2.7


def test_normalize_matches_the_formula() -> None:
    pixels = np.array([[[0, 128, 255]]], dtype=np.uint8)
    out = normalize(pixels)
    expected = (np.array([0, 128, 255]) / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array(
        [0.229, 0.224, 0.225]
    )
    np.testing.assert_allclose(out[:, 0, 0], expected, atol=1e-6)


def test_draft_decode_stays_close_to_full_decode(photo: bytes) -> None:
    drafted = load_resized(photo, (224, 224), draft=True).astype(np.float32)
    full = load_resized(photo, (224, 224), draft=False).astype(np.float32)
    assert drafted.shape == full.shape == (224, 224, 3)
    assert np.abs(drafted - full).mean() < 3.0  # a few grey levels on average, no shift


def test_draft_never_goes_below_target(photo_rgb: Image.Image, photo: bytes) -> None:
    big = decode_image(photo, draft_size=(512, 512))
    assert min(big.size) >= 512 or big.size == photo_rgb.size


def test_exif_rotated_photo_is_upright(photo_rgb: Image.Image) -> None:
    # A phone stores pixels sideways and says so in EXIF (orientation 6 = rotate 90 CW to show).
    sideways = photo_rgb.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    data = _encode(sideways, "JPEG", quality=95, exif=exif.tobytes())
    upright = decode_image(data)
    assert upright.size == photo_rgb.size
    a = np.asarray(upright.resize((64, 64)), dtype=np.float32)
    b = np.asarray(photo_rgb.resize((64, 64)), dtype=np.float32)
    assert np.abs(a - b).mean() < 8.0


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("CMYK", "JPEG"), ("RGBA", "PNG"), ("P", "GIF"), ("I;16", "PNG"), ("LA", "PNG")],
)
def test_any_mode_becomes_rgb(photo_rgb: Image.Image, mode: str, fmt: str) -> None:
    small = photo_rgb.resize((120, 90))
    if mode == "I;16":
        arr = (np.asarray(small.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        img = Image.fromarray(arr)
        img = img.convert("I;16") if img.mode != "I;16" else img
    else:
        img = small.convert(mode)
    out = decode_image(_encode(img, fmt))
    assert out.mode == "RGB" and out.size == (120, 90)
    if mode == "I;16":  # 16-bit scaled down, not clipped to white
        grey = np.asarray(small.convert("L"), dtype=np.float32)
        assert np.abs(np.asarray(out)[..., 0].astype(np.float32) - grey).max() <= 1.0


def test_transparency_is_composited_on_white() -> None:
    img = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    out = np.asarray(decode_image(_encode(img, "PNG")))
    assert (out == 255).all()


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50)
    out = np.asarray(decode_image(buf.getvalue()))
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


def test_tiny_and_strip_images_are_valid() -> None:
    assert preprocess(_encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG")).shape == (1, 3, 224, 224)
    strip = _encode(Image.new("RGB", (10000, 50), (200, 10, 10)), "JPEG")
    assert preprocess(strip).shape == (1, 3, 224, 224)


def test_config_roundtrip() -> None:
    cfg = PreprocessConfig(size=(64, 96))
    assert PreprocessConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown preprocess keys"):
        PreprocessConfig.from_dict({**cfg.to_dict(), "colour": "blue"})
    assert preprocess(_encode(Image.new("RGB", (300, 200)), "PNG"), cfg).shape == (1, 3, 64, 96)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_bad_inputs_raise_typed_errors(photo: bytes) -> None:
    with pytest.raises(EmptyImage):
        preprocess(b"")
    with pytest.raises(NotAnImage):
        preprocess(np.random.default_rng(0).bytes(3000))
    with pytest.raises(NotAnImage):
        preprocess(b"<html><body>not a photo</body></html>")
    with pytest.raises(NotAnImage):
        preprocess(b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>')
    with pytest.raises(CorruptImage):
        preprocess(photo[: len(photo) // 2])
    with pytest.raises(ImageTooLarge) as bomb:
        preprocess(_png_header_only(30000, 30000))
    assert bomb.value.status == 413
    with pytest.raises(ImageTooLarge):
        preprocess(photo, limits=ImageLimits(max_bytes=1000))
    ico = _encode(Image.new("RGB", (32, 32)), "ICO")
    with pytest.raises(UnsupportedFormat) as unsupported:
        preprocess(ico)
    assert unsupported.value.status == 415


def test_png_with_bad_crc_is_corrupt() -> None:
    data = bytearray(_encode(Image.new("RGB", (50, 50), (1, 2, 3)), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 8] ^= 0xFF  # flip a byte inside the compressed pixel data
    with pytest.raises(CorruptImage):
        preprocess(bytes(data))
