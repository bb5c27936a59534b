"""The model-folder door (issue 14): a model.json that parses but does not fit, or is no model.json.

Each bad folder is refused with a one-line reason by ``load_bundle`` / ``Predictor``; served beside
the flagship by one real ``skyclass serve``, it is marked failed with that reason in /health and
/models, answers 503, and never takes the flagship or /models down; ``predict`` says one line.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from skyclass.core.errors import ModelUnavailable
from skyclass.core.predictor import Predictor
from tests.conftest import BUNDLED_MODEL, REPO_ROOT
from tests.serve.support import fixture_image, start_server, stop_server

Edit = Callable[[dict[str, Any]], Any]


def _set(path: str, value: Any) -> Edit:
    def edit(data: dict[str, Any]) -> dict[str, Any]:
        node = data
        *parents, last = path.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
        return data

    return edit


def _nested(depth: int) -> Edit:
    return lambda _: "[" * depth + "]" * depth


#: name -> (what it does to the flagship's model.json, words the reason must contain)
BAD_FOLDERS: dict[str, tuple[Edit, str]] = {
    "manifest-list": (lambda _: [], "JSON object, not list"),
    "manifest-null": (lambda _: None, "JSON object, not NoneType"),
    "files-list-only": (lambda _: {"files": []}, "schema_version"),
    "files-list": (_set("files", []), "files must be an object"),
    "nested-deep": (_nested(200_000), "nested too deeply"),
    "input-name": (_set("input.name", "pixels"), "input 'pixels'"),
    # not "logits": since the scope score, the ONNX file has a logits output too
    "output-name": (_set("output.name", "scores"), "output 'scores'"),
    "input-size": (_set("preprocess.size", [224, 224]), "height 288"),
    "labels-five": (_set("labels", ["a", "b", "c", "d", "e"]), "4 classes"),
    "mean-two": (_set("preprocess.mean", [0.5, 0.5]), "mean must be 3"),
    "std-zero": (_set("preprocess.std", [0.229, 0.0, 0.225]), "std must be positive"),
    "std-nan": (_set("preprocess.std", [math.nan, 0.2, 0.2]), "std must be 3 finite"),
    "size-float": (_set("preprocess.size", [288.5, 288]), "size must be"),
    "path-absolute": (_set("files.fp32.path", "/etc/passwd"), "not inside the model folder"),
    "path-dotdot": (
        _set("files.fp32.path", "../flying-objects/model.onnx"),
        "not inside the model folder",
    ),
    "name-slash": (_set("name", "evil/../../x"), "no slashes"),
    "labels-twice": (
        _set("labels", ["flying_birds", "flying_birds", "small", "winged"]),
        "labels appear twice: flying_birds",
    ),
    "manifest-2mb": (_set("padding", "x" * 2_000_000), "over 1,048,576 bytes"),
}


def make_folder(root: Path, name: str, edit: Edit) -> Path:
    """The flagship's folder (ONNX files linked, not copied) with ``edit`` applied to model.json."""
    folder = root / name
    folder.mkdir()
    data = json.loads((BUNDLED_MODEL / "model.json").read_text())
    for entry in data["files"].values():
        (folder / entry["path"]).symlink_to((BUNDLED_MODEL / entry["path"]).resolve())
    data["name"] = name
    changed = edit(data)
    text = changed if isinstance(changed, str) else json.dumps(changed)
    (folder / "model.json").write_text(text)
    return folder


@pytest.fixture(scope="module")
def bad_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-models")
    return {name: make_folder(root, name, edit) for name, (edit, _) in BAD_FOLDERS.items()}


@pytest.mark.parametrize("name", list(BAD_FOLDERS))
def test_predictor_refuses_with_one_line_reason(name: str, bad_folders: dict[str, Path]) -> None:
    with pytest.raises(ModelUnavailable) as caught:
        Predictor(bad_folders[name])
    reason = str(caught.value)
    assert BAD_FOLDERS[name][1] in reason, reason
    assert "\n" not in reason and len(reason) < 400, reason


@pytest.fixture(scope="module")
def crowded_server(bad_folders: dict[str, Path]) -> Iterator[str]:
    """The flagship (default) and every bad folder, in one real server."""
    args = ["--model", str(BUNDLED_MODEL)]
    for folder in bad_folders.values():
        args += ["--model", str(folder)]
    proc, url = start_server(*args)
    try:
        yield url
    finally:
        stop_server(proc)


def test_bad_folders_never_take_the_others_down(
    crowded_server: str, bad_folders: dict[str, Path]
) -> None:
    jpeg = fixture_image("bisky_").read_bytes()
    raw = {"Content-Type": "image/jpeg"}
    with httpx.Client(base_url=crowded_server, timeout=60) as client:
        before = client.get("/models")  # nothing loaded but the default: /models still answers
        assert before.status_code == 200 and len(before.json()["models"]) == len(BAD_FOLDERS) + 1
        for name in BAD_FOLDERS:  # named by model.json, or by the folder ([], null, "evil/..")
            answer = client.post(f"/classify/{name}", content=jpeg, headers=raw)
            assert answer.status_code == 503, (name, answer.text)
            assert answer.json()["code"] == "model_unavailable"
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        states = {m["name"]: m for m in health.json()["models"]}
        models = client.get("/models")
        assert models.status_code == 200
        listed = {m["name"]: m for m in models.json()["models"]}
        for name, (_, words) in BAD_FOLDERS.items():
            assert states[name]["state"] == "failed", (name, states[name])
            assert words in states[name]["error"], (name, states[name]["error"])
            assert listed[name]["state"] == "failed" and words in listed[name]["error"]
        ok = client.post("/classify", content=jpeg, headers=raw)
        assert ok.status_code == 200 and ok.json()["model"]["name"] == "flying-objects"


@pytest.mark.parametrize("name", ["std-zero", "labels-five", "manifest-list"])
def test_predict_says_one_line(name: str, bad_folders: dict[str, Path]) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "skyclass.cli",
            "predict",
            str(fixture_image("bisky_")),
            "--model",
            str(bad_folders[name]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and BAD_FOLDERS[name][1] in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "nan" not in done.stdout.lower()
