"""Where the explanation points: real drone photos pasted at known places onto a real sky photo.

Measured on the flagship (docs/scope/flying-objects.md): pasted whole drone photos are found at
every position for these two; pasted bird crops (small dark birds from ddt_ video frames) are NOT
found (the bird class's map lights up the sky around them): the flagship's bird evidence is
context, which the explanation shows. This test asserts what was measured, for drones.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from skyclass.core.predictor import Predictor
from tests.composites import DRONES, POSITIONS, composite_jpeg, drone, inside_paste, sky
from tests.conftest import BUNDLED_MODEL, DATA_ROOT


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(BUNDLED_MODEL, threads=1)


@pytest.mark.parametrize("drone_name", DRONES)
def test_cam_peak_is_on_the_pasted_drone(predictor: Predictor, drone_name: str) -> None:
    background, crop = sky(), drone(drone_name)
    for at in POSITIONS:
        jpeg = composite_jpeg(background, crop, at)
        answer = predictor.predict(jpeg, explain=True, reject=False)
        assert answer.explanation is not None
        assert inside_paste(answer.explanation.peak, at), (drone_name, at, answer.explanation.peak)


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
