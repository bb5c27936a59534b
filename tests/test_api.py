"""``from skyclass import load_model``: the Python API on real photos, torch-free, lazy."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import skyclass
from skyclass.core.errors import ImageTooLarge, ModelUnavailable, NotAnImage
from skyclass.core.predictor import Predictor
from skyclass.core.preprocess import ImageLimits
from tests.conftest import BUNDLED_MODEL, CLASSES, REPO_ROOT, shared_images

PHOTOS = [shared_images(c, 2)[1] for c in CLASSES]


@pytest.fixture(scope="module")
def model() -> skyclass.Model:
    return skyclass.load_model(BUNDLED_MODEL)


def test_import_does_no_work_and_the_api_never_imports_torch() -> None:
    probe = (
        "import sys, skyclass\n"
        "heavy = ('onnxruntime', 'numpy', 'PIL', 'torch', 'typer', 'skyclass.api')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "model = skyclass.load_model()\n"
        f"print(model.predict({str(PHOTOS[0])!r}).label)\n"
        "print('torch' in sys.modules, 'skyclass.serve.app' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    imported, label, after = done.stdout.splitlines()
    assert imported == "[]"
    assert label in CLASSES
    assert after == "False False"


def test_predict_takes_a_path_bytes_a_pil_image_and_an_array(model: skyclass.Model) -> None:
    reference = Predictor(BUNDLED_MODEL)
    for photo in PHOTOS:
        expected = reference.predict(photo.read_bytes())
        by_path = model.predict(photo)
        assert by_path == expected
        assert model.predict(str(photo)) == expected
        assert model.predict(photo.read_bytes()) == expected
        # Decoded already: no JPEG draft decoding, so probabilities differ slightly at most.
        rgb = Image.open(photo).convert("RGB")
        for decoded in (rgb, np.asarray(rgb)):
            got = model.predict(decoded)
            assert got.label == expected.label
            assert got.confidence == pytest.approx(expected.confidence, abs=0.05)


def test_pil_modes_and_arrays_decode_as_files_do(model: skyclass.Model) -> None:
    rgb = Image.open(PHOTOS[1]).convert("RGB")
    png = io.BytesIO()
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    rgba.save(png, format="PNG")
    from_file = model.predict(png.getvalue())
    assert model.predict(rgba).probabilities == pytest.approx(from_file.probabilities)
    gray = rgb.convert("L")
    assert model.predict(np.asarray(gray)).label == model.predict(gray).label
    with pytest.raises(TypeError, match="uint8"):
        model.predict(np.asarray(rgb, dtype=np.float32))
    with pytest.raises(TypeError, match="shape"):
        model.predict(np.zeros((4, 4, 2), dtype=np.uint8))
    with pytest.raises(TypeError, match="not int"):
        model.predict(3)


def test_predict_batch_matches_one_by_one(model: skyclass.Model) -> None:
    inputs: list[object] = [*PHOTOS, PHOTOS[0].read_bytes(), Image.open(PHOTOS[1]).convert("RGB")]
    batch = model.predict_batch(inputs)
    assert len(batch) == len(inputs)
    for got, image in zip(batch, inputs, strict=True):
        assert got == model.predict(image)
    assert model.predict_batch([]) == []
    top2 = model.predict_batch(PHOTOS[:2], top_k=2)
    assert all(len(p.probabilities) == 2 for p in top2)


def test_bad_inputs_raise_typed_errors(model: skyclass.Model, tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    with pytest.raises(NotAnImage):
        model.predict(text)
    with pytest.raises(FileNotFoundError):
        model.predict(tmp_path / "missing.jpg")
    huge = tmp_path / "huge.jpg"
    with huge.open("wb") as fh:
        fh.truncate(ImageLimits().max_bytes + 1)
    with pytest.raises(ImageTooLarge):
        model.predict(huge)
    with pytest.raises(ModelUnavailable, match="not found"):
        skyclass.load_model(tmp_path / "no-model")


def test_load_model_by_name_default_and_variant(model: skyclass.Model) -> None:
    default = skyclass.load_model()
    assert default.name == model.name == "flying-objects" and default.labels == CLASSES
    int8 = skyclass.load_model("flying-objects", variant="int8")
    assert int8.predictor.variant == "int8"
    assert int8.predict(PHOTOS[0]).label == model.predict(PHOTOS[0]).label
    assert "flying-objects" in repr(model)


def test_the_readme_example_runs_as_written(capsys: pytest.CaptureFixture[str]) -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## The Python API", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    png = next((REPO_ROOT / "tests" / "fixtures" / "images").glob("*.png"))
    for name, real in (("photo.jpg", PHOTOS[2]), ("a.jpg", PHOTOS[0]), ("b.png", png)):
        assert f'"{name}"' in code
        code = code.replace(f'"{name}"', repr(str(real)))
    scope: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert len(scope["predictions"]) == 2  # type: ignore[arg-type]
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split()[0] in CLASSES and printed[1] == str(CLASSES)
