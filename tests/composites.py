"""Real drone photos pasted at known places onto a real sky photo: where an explanation must point.

Shared by the ONNX explanation tests (tests/scope/test_cam.py) and the gallery's PyTorch maps
(tests/train/test_gallery_maps.py). Measured on the flagship (docs/scope/flying-objects.md):
pasted whole drone photos are found at every one of ``POSITIONS`` for ``DRONES``.
"""

from __future__ import annotations

import io

from PIL import Image

from tests.conftest import DATA_ROOT, OUT_OF_SCOPE

CANVAS = 576
SIDE = 200
POSITIONS = [(0.05, 0.05), (0.6, 0.05), (0.05, 0.6), (0.6, 0.6), (0.3, 0.3)]
DRONES = [
    "large_quadcopters/cropspray_G02_DJI_Agras_T16_2023-05-09_12-33-25_i0.jpg",
    "large_quadcopters/cropspray_G02_DJI_Agras_T20_2021-07-31_12-44-00_i1.jpg",
]


def sky() -> Image.Image:
    """The sky of a real cloudy sea photo (its top 40%), as the background."""
    photo = Image.open(OUT_OF_SCOPE / "intel_20893.jpg").convert("RGB")
    return photo.crop((0, 0, photo.width, int(photo.height * 0.4))).resize((CANVAS, CANVAS))


def drone(name: str) -> Image.Image:
    """A real drone photo (a ``DRONES`` entry), resized to ``SIDE`` x ``SIDE``."""
    return Image.open(DATA_ROOT / name).convert("RGB").resize((SIDE, SIDE))


def composite_jpeg(background: Image.Image, crop: Image.Image, at: tuple[float, float]) -> bytes:
    """``crop`` pasted on ``background`` with its top-left corner at ``at`` (fractions), as JPEG."""
    canvas = background.copy()
    canvas.paste(crop, (int(at[0] * CANVAS), int(at[1] * CANVAS)))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def inside_paste(peak: tuple[float, float], at: tuple[float, float]) -> bool:
    """Whether a peak (x, y fractions) falls inside the crop pasted at ``at``."""
    box = SIDE / CANVAS
    return at[0] <= peak[0] <= at[0] + box and at[1] <= peak[1] <= at[1] + box
