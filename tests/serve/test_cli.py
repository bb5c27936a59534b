"""``skyclass predict`` and ``skyclass serve`` as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from skyclass.core.predictor import Predictor
from tests.conftest import BUNDLED_MODEL, CLASSES, REPO_ROOT
from tests.serve.support import FIXTURE_IMAGES, SECOND_MODEL, start_server, stop_server

IMAGES = sorted(p for p in FIXTURE_IMAGES.iterdir() if p.suffix in (".jpg", ".png"))


def skyclass(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "skyclass.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_predict_table_for_a_folder() -> None:
    out = skyclass("predict", str(FIXTURE_IMAGES))
    assert out.returncode == 0, out.stderr
    predictor = Predictor(BUNDLED_MODEL)
    for path in IMAGES:  # every image in the folder (recursive), SOURCES.tsv skipped
        assert path.name in out.stdout
        label = predictor.predict(path.read_bytes()).label
        row = next(line for line in out.stdout.splitlines() if path.name in line)
        assert label in row
    assert "SOURCES.tsv" not in out.stdout + out.stderr
    assert "flying-objects" in out.stdout


def test_predict_json_lines_with_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a photo")
    out = skyclass("predict", str(IMAGES[0]), str(bad), str(IMAGES[1]), "--json")
    assert out.returncode == 1
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(IMAGES[0]), str(IMAGES[1])]
    predictor = Predictor(BUNDLED_MODEL)
    for line in lines:
        # the flagship has a scope (issue 16): its verdict is on every line
        assert set(line) == {
            *("path", "label", "confidence", "probabilities"),
            *("in_scope", "top_guess", "scope"),
        }
        assert set(line["probabilities"]) == set(CLASSES)
        expected = predictor.predict(Path(line["path"]).read_bytes())
        assert line["label"] == expected.label and line["in_scope"] == expected.in_scope
        assert expected.scope is not None and line["scope"] == expected.scope.to_dict()
        assert line["probabilities"] == expected.probabilities
    assert f"{bad}: the data is not an image" in out.stderr
    assert "Traceback" not in out.stderr


def test_predict_missing_path_is_one_line_exit_2() -> None:
    out = skyclass("predict", "no/such/photo.jpg")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: no such file or folder: no/such/photo.jpg"
    assert out.stdout == ""


def test_predict_missing_model_dir_is_one_line_exit_2() -> None:
    out = skyclass("predict", str(IMAGES[0]), "--model", "models/nope")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: model folder not found: models/nope"


def test_predict_with_a_named_second_model(second_model: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(BUNDLED_MODEL, models / "flying-objects")
    shutil.copytree(second_model, models / SECOND_MODEL)
    # A name resolves beside the default model (models/NAME under the cwd).
    out = skyclass("predict", str(IMAGES[0]), "--model", SECOND_MODEL, "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    line = json.loads(out.stdout)
    assert line["label"].startswith("kind_") and len(line["probabilities"]) == 5


def test_serve_missing_model_dir_is_one_line_exit_2() -> None:
    out = skyclass("serve", "--model", "/no/such/model", "--port", "0")
    assert out.returncode == 2
    assert out.stderr.strip() == "error: model folder not found: /no/such/model"


def test_serve_prints_the_url_and_serves(tmp_path: Path) -> None:
    proc, url = start_server("--model", str(BUNDLED_MODEL))
    try:
        assert url.startswith("http://127.0.0.1:")
        jpeg = IMAGES[0].read_bytes()
        response = httpx.post(url + "classify", content=jpeg, timeout=30)
        assert response.status_code == 200 and response.json()["label"] in CLASSES
    finally:
        stop_server(proc)


def test_serve_loads_every_model_at_start_and_health_says_why(tmp_path: Path) -> None:
    """Before any request, /health already names the failed model and the scope that is off (the
    server loads every model at start; only the Lambda handler stays lazy)."""
    unscoped = tmp_path / "unscoped"
    shutil.copytree(BUNDLED_MODEL, unscoped)
    (unscoped / "scope.npz").unlink()
    (tmp_path / "broken").mkdir()
    imagenet = REPO_ROOT / "models" / "imagenet-mobilenet-v2"
    args = ("--model", str(imagenet), "--model", str(unscoped), "--model", str(tmp_path / "broken"))
    proc, url = start_server(*args)
    try:
        models = {m["name"]: m for m in httpx.get(url + "health", timeout=10).json()["models"]}
        assert models["imagenet-mobilenet-v2"]["state"] == "loaded"
        assert models["flying-objects"]["state"] == "loaded"
        assert models["flying-objects"]["scope"] == "off: scope file scope.npz is missing"
        assert models["broken"]["state"] == "failed" and models["broken"]["error"]
        listed = {m["name"]: m for m in httpx.get(url + "models", timeout=10).json()["models"]}
        assert listed["flying-objects"]["scope"].startswith("off: ")
    finally:
        stop_server(proc)
    warnings = [line for line in proc.stderr_lines if line.startswith("warning: ")]  # type: ignore[attr-defined]
    assert len(warnings) == 1 and "'broken' is unavailable" in warnings[0]
