"""Helpers for the serving tests: fixture images, a second real model folder, a real server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from skyclass.core.bundle import ModelBundle, ModelFile, load_bundle, sha256_file, write_bundle
from tests.conftest import BUNDLED_MODEL, REPO_ROOT

FIXTURE_IMAGES = REPO_ROOT / "tests" / "fixtures" / "images"
SECOND_MODEL = "second-test-model"
SECOND_LABELS = tuple(f"kind_{i:02d}" for i in range(24))


def flagship_version() -> str:
    return json.loads((BUNDLED_MODEL / "model.json").read_text())["version"]


#: Tests that need the flagship to be right about a photo: skipped only while it is the placeholder.
needs_trained_model = pytest.mark.skipif(
    flagship_version() == "0.0.0-untrained",
    reason="models/flying-objects is the untrained placeholder (version 0.0.0-untrained)",
)


def fixture_image(prefix: str) -> Path:
    (path,) = sorted(FIXTURE_IMAGES.glob(f"{prefix}*"))
    return path


def build_second_model(folder: Path) -> Path:
    """A real, tiny-to-make second model: the flagship's network with a fixed 4->24 head on top.

    A valid bundle (ONNX checked by ONNX Runtime, sha256 in model.json) with 24 classes, so top-k
    and label-listing rules for bigger models are exercised without the ImageNet export.
    """
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    flagship = load_bundle(BUNDLED_MODEL)
    graph_model = onnx.load(str(BUNDLED_MODEL / flagship.file("fp32").path))
    graph = graph_model.graph
    rng = np.random.default_rng(7)
    weight = rng.normal(0, 2.0, size=(flagship.num_classes, len(SECOND_LABELS))).astype(np.float32)
    graph.initializer.append(numpy_helper.from_array(weight, "second_head_w"))
    graph.node.extend(
        [
            helper.make_node("MatMul", [flagship.output_name, "second_head_w"], ["second_logits"]),
            helper.make_node("LogSoftmax", ["second_logits"], ["second_log_probs"], axis=1),
        ]
    )
    del graph.output[:]
    graph.output.append(
        helper.make_tensor_value_info(
            "second_log_probs", TensorProto.FLOAT, ["batch", len(SECOND_LABELS)]
        )
    )
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / "model.onnx"
    onnx.save(graph_model, str(onnx_path))
    bundle = ModelBundle(
        root=folder,
        name=SECOND_MODEL,
        version="9.9.9-test",
        labels=SECOND_LABELS,
        preprocess=flagship.preprocess,
        files={"fp32": ModelFile("model.onnx", sha256_file(onnx_path), onnx_path.stat().st_size)},
        input_name=flagship.input_name,
        output_name="second_log_probs",
        top_k=5,
    )
    write_bundle(bundle)
    return folder


def start_server(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """``skyclass serve --port 0 ARGS`` in a subprocess; returns it and the URL it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "skyclass.cli", "serve", "--port", "0", *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"http://\S+/", line)
    if not match:
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise AssertionError(f"server did not start: {line!r} {err[-2000:]!r}")
    url = match.group(0)
    # One log line per request goes to stderr: read it as it comes, so the pipe never fills up
    # and blocks the server; the lines are kept on proc.stderr_lines.
    lines: list[str] = []
    threading.Thread(target=lines.extend, args=(proc.stderr,), daemon=True).start()
    proc.stderr_lines = lines  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not answer /health within 30 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
