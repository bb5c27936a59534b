"""The hostile corpus, built from real shared photos: each awkward input, its answer.

Each :class:`Hostile` says what ``Predictor.predict`` gets (``image``), what the HTTP app and the
Lambda handler get (``body`` + ``content_type``), and what each must answer: a 4xx with a stable
``code``, or a 200 with a prediction where the image is valid (``code`` None).
"""

from __future__ import annotations

import io
import random
import struct
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tests.conftest import DATA_ROOT, REPO_ROOT
from tests.serve.test_http import bomb_png

BOMBS = REPO_ROOT / "tests" / "fixtures" / "bombs"
#: Issue 14's "small files, huge memory": in the 40 MP limit, refused by the decode budget.
ISSUE_14_BOMBS = {
    "bomb_webp_6300": ("webp_6300.webp", "1.5 KB lossless WebP declaring 6300x6300 RGB"),
    "bomb_png16_6300": ("png16_6300.png", "90 KB flat 16-bit PNG, 6300x6300"),
    "bomb_tiff_int32_6300": ("tif32_6300.tif", "260 KB deflated int32 TIFF, 6300x6300"),
}
#: Heavy but in the budget (and compressed less than 1024x): decoded, reduced, bounded.
IN_BUDGET = ("png16_6300_in_budget.png", "rgb_5600_in_budget.png")
BOUNDARY = "skyclass-hostile-boundary"
SIX_MB = 6 * 1024 * 1024


@dataclass(frozen=True)
class Hostile:
    name: str
    what: str
    image: bytes | None  # what predict() gets; None for a request-shape case (no image in it)
    body: bytes  # what the HTTP app and the Lambda handler get
    content_type: str
    status: int  # expected HTTP/Lambda status
    code: str | None  # expected error code; None: a 200 with a valid prediction
    predict_code: str | None = None  # expected ImageError code from predict(); None: a Prediction
    event_body: str | None = None  # the Lambda event's body as sent (else base64 of ``body``)
    lambda_code: str | None = None  # where the Lambda answer differs from HTTP (bad base64)


def source_photo() -> Path:
    """A real 1200x1600 phone-camera JPEG of the shared set (the first ``cropspray_`` one)."""
    return sorted(DATA_ROOT.glob("*/cropspray_*.jpg"))[0]


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    """A multipart/form-data body; a part with a file name is a file, without one a text field."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        head = f"--{BOUNDARY}\r\nContent-Disposition: {disposition}"
        if filename is not None:
            head += f'; filename="{filename}"\r\nContent-Type: image/jpeg'
        out += (head + "\r\n\r\n").encode() + data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


FORM = f"multipart/form-data; boundary={BOUNDARY}"


def png_with_bad_crc(png: bytes, chunk: bytes) -> bytes:
    """``png`` with the CRC of its first ``chunk`` (b"IHDR", b"IDAT") flipped."""
    at = png.index(chunk)
    (length,) = struct.unpack(">I", png[at - 4 : at])
    crc = at + 4 + length
    return png[:crc] + bytes([png[crc] ^ 0xFF]) + png[crc + 1 :]


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its SOF header declaring width x height (the scan data unchanged)."""
    data = bytearray(jpeg)
    i = 2
    while i < len(data):
        marker, (length,) = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])
        if marker in (0xC0, 0xC1, 0xC2):
            data[i + 5 : i + 9] = struct.pack(">HH", height, width)
            return bytes(data)
        i += 2 + length
    raise ValueError("no SOF marker")


def animated_gif(frames: list[Image.Image]) -> bytes:
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    return buf.getvalue()


def exif_pair(photo: Image.Image) -> tuple[bytes, bytes]:
    """(upright JPEG, the same picture stored sideways with EXIF Orientation 6), as a phone does.

    Orientation 6 means "rotate 90 degrees clockwise to show": the pixels are stored turned 90
    degrees counter-clockwise.
    """
    upright = encode(photo, "JPEG", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways = encode(photo.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif)
    return upright, sideways


def build_corpus() -> list[Hostile]:
    """Every hostile input (awkward formats, sizes, bodies), derived from one real photo."""
    path = source_photo()
    original = path.read_bytes()
    photo = Image.open(path).convert("RGB")
    small = photo.resize((photo.width // 4, photo.height // 4))  # 300x400: fast to re-encode
    png = encode(small, "PNG")
    jpeg = encode(small, "JPEG", quality=90)
    rng = random.Random(5)
    random_bytes = bytes(rng.getrandbits(8) for _ in range(4096))
    _, sideways = exif_pair(small)
    palette = small.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    text = b"Hello! This is a plain text file with a .jpg name.\n" * 20
    html = b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>"
    svg = (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="30000" '
        b'height="30000"><rect width="100%" height="100%" fill="red"/></svg>'
    )
    over = original + b"\0" * (SIX_MB + 1 - len(original))
    b64_junk = "@@ not base64 at all %%% ==="

    def raw(name: str, what: str, data: bytes, code: str | None, status: int = 400) -> Hostile:
        return Hostile(name, what, data, data, "image/jpeg", status if code else 200, code, code)

    def upload(
        name: str, what: str, data: bytes, code: str | None, filename: str = "x.jpg"
    ) -> Hostile:
        body = multipart(("file", filename, data))
        return Hostile(name, what, data, body, FORM, 400 if code else 200, code, code)

    return [
        raw("zero_bytes", "empty body", b"", "empty_body"),
        raw("random_bytes", "4 KiB of random bytes", random_bytes, "not_an_image"),
        upload("text_as_jpg", "plain text uploaded as x.jpg", text, "not_an_image"),
        upload("html_as_jpg", "HTML uploaded as x.jpg", html, "not_an_image"),
        upload("svg_as_jpg", "SVG (30000x30000) uploaded as x.jpg", svg, "not_an_image"),
        raw("jpeg_cut_50", "real JPEG cut at 50%", original[: len(original) // 2], "corrupt_image"),
        raw(
            "png_bad_crc_ihdr",
            "PNG, IHDR CRC flipped",
            png_with_bad_crc(png, b"IHDR"),
            "corrupt_image",
        ),
        # Pillow does not check IDAT CRCs; the compressed pixels are intact, so this is an image.
        raw(
            "png_bad_crc_idat",
            "PNG, IDAT CRC flipped (pixels intact)",
            png_with_bad_crc(png, b"IDAT"),
            None,
        ),
        raw("bomb_png_30000", "8x8 PNG declaring 30000x30000", bomb_png(), "image_too_large", 413),
        raw(
            "jpeg_sof_65000",
            "JPEG whose SOF declares 65000x65000",
            jpeg_with_size(jpeg, 65000, 65000),
            "image_too_large",
            413,
        ),
        raw("cmyk_jpeg", "CMYK JPEG", encode(small.convert("CMYK"), "JPEG"), None),
        raw(
            "png_16bit",
            "16-bit grayscale PNG (I;16)",
            encode(small.convert("L").convert("I;16"), "PNG"),
            None,
        ),
        raw(
            "palette_png_transparent",
            "palette PNG with a transparent index",
            encode(palette, "PNG", transparency=0),
            None,
        ),
        raw(
            "animated_gif",
            "animated GIF, 3 frames",
            animated_gif([small, small.rotate(10), small.rotate(20)]),
            None,
        ),
        raw("webp", "WebP", encode(small, "WEBP", quality=85), None),
        raw("grayscale_jpeg", "grayscale JPEG", encode(small.convert("L"), "JPEG"), None),
        raw("exif_rotated", "JPEG stored sideways, EXIF Orientation 6", sideways, None),
        raw(
            "one_by_one", "1x1 PNG", encode(Image.new("RGB", (1, 1), (120, 140, 200)), "PNG"), None
        ),
        raw("strip_10000x50", "10000x50 PNG strip", encode(small.resize((10000, 50)), "PNG"), None),
        Hostile(
            "over_6mb",
            "real JPEG padded to 6 MiB + 1 byte",
            over,
            over,
            "image/jpeg",
            413,
            "body_too_large",
            "image_too_large",
        ),
        Hostile(
            "multipart_no_file",
            "form with a text field, no file",
            None,
            multipart(("note", None, b"hello")),
            FORM,
            400,
            "no_file",
        ),
        Hostile(
            "multipart_two_files",
            "form with two files",
            None,
            multipart(("a", "a.jpg", jpeg), ("b", "b.jpg", jpeg)),
            FORM,
            400,
            "too_many_files",
        ),
        upload("multipart_empty_file", "form with an empty file", b"", "empty_body"),
        Hostile(
            "invalid_base64",
            "text that is not base64 (Lambda: isBase64Encoded)",
            b64_junk.encode(),
            b64_junk.encode(),
            "image/jpeg",
            400,
            "not_an_image",
            "not_an_image",
            event_body=b64_junk,
            lambda_code="bad_base64",
        ),
        Hostile(
            "wrong_content_type",
            "real JPEG sent as text/plain",
            jpeg,
            jpeg,
            "text/plain",
            415,
            "unsupported_media_type",
            None,
        ),
        upload(
            "filename_traversal",
            'real JPEG uploaded as "../../etc/passwd"',
            jpeg,
            None,
            filename="../../etc/passwd",
        ),
        raw(
            "path_as_body", "a body that is a file path string", str(path).encode(), "not_an_image"
        ),
        *(
            raw(name, what, (BOMBS / file).read_bytes(), "decode_budget_exceeded", 413)
            for name, (file, what) in ISSUE_14_BOMBS.items()
        ),
    ]
