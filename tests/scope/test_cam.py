"""Where the explanation points: real drone photos pasted at known places onto a real sky photo.

Measured on the flagship (docs/scope/flying-objects.md): pasted whole drone photos are found at
every position for these two; pasted bird crops (small dark birds from ddt_ video frames) are NOT
found (the bird class's map lights up the sky around them): the flagship's bird evidence is
context, which the explanation shows. This test asserts what was measured, for drones.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from skyclass.core.predictor import Predictor
from tests.conftest import BUNDLED_MODEL, DATA_ROOT
from tests.scope.support import OUT_OF_SCOPE

CANVAS = 576
SIDE = 200
POSITIONS = [(0.05, 0.05), (0.6, 0.05), (0.05, 0.6), (0.6, 0.6), (0.3, 0.3)]
DRONES = [
    "large_quadcopters/cropspray_G02_DJI_Agras_T16_2023-05-09_12-33-25_i0.jpg",
    "large_quadcopters/cropspray_G02_DJI_Agras_T20_2021-07-31_12-44-00_i1.jpg",
]


def _sky() -> Image.Image:
    """The sky of a real cloudy sea photo (its top 40%), as the background."""
    photo = Image.open(OUT_OF_SCOPE / "intel_20893.jpg").convert("RGB")
    return photo.crop((0, 0, photo.width, int(photo.height * 0.4))).resize((CANVAS, CANVAS))


def _drone(name: str) -> Image.Image:
    return Image.open(DATA_ROOT / name).convert("RGB").resize((SIDE, SIDE))


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(BUNDLED_MODEL, threads=1)


@pytest.mark.parametrize("drone", DRONES)
def test_cam_peak_is_on_the_pasted_drone(predictor: Predictor, drone: str) -> None:
    sky, crop = _sky(), _drone(drone)
    for x, y in POSITIONS:
        canvas = sky.copy()
        canvas.paste(crop, (int(x * CANVAS), int(y * CANVAS)))
        buf = io.BytesIO()
        canvas.save(buf, format="JPEG", quality=92)
        answer = predictor.predict(buf.getvalue(), explain=True, reject=False)
        assert answer.explanation is not None
        px, py = answer.explanation.peak
        box = SIDE / CANVAS
        assert x <= px <= x + box and y <= py <= y + box, (drone, (x, y), (px, py))


def test_predict_explain_writes_overlays(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from skyclass.cli import build_app

    photo = DATA_ROOT / "flying_birds" / "bisky_Flying_Birds_2.jpg"
    out = tmp_path / "cams"
    runner = CliRunner()
    args = ["predict", str(photo), str(photo), "--json", "--explain", str(out)]
    result = runner.invoke(build_app(), [*args, "--model", str(BUNDLED_MODEL)])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert written == ["bisky_Flying_Birds_2.2.cam.png", "bisky_Flying_Birds_2.cam.png"]
    assert Image.open(out / written[1]).format == "PNG"
    lines = [line for line in result.output.splitlines() if line.startswith("{")]
    assert '"in_scope": true' in lines[0] and '"explanation"' in lines[0]
