"""Faults in the model: missing, corrupt, wrong sha256, absent or bad on S3, an unwritable cache.

Each gives a clear 503 JSON (a live HTTP server and the Lambda handler, v1 and v2 events) or a
one-line CLI message; asked again it answers the same way (it is retried, never crash-loops); once
repaired in place, the very same server or container loads the model and answers 200.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from skyclass.serve.handler import build_handler
from skyclass.serve.settings import ServeSettings
from tests.conftest import BUNDLED_MODEL, CLASSES, REPO_ROOT
from tests.deploy.conftest import Archive, S3Server
from tests.events.make_events import v1, v2
from tests.reliability.conftest import ARTIFACTS, internals_in, lambda_answer
from tests.reliability.corpus import source_photo
from tests.serve.support import start_server, stop_server

JPEG = source_photo().read_bytes()


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "model.json").read_text())


def _write_manifest(folder: Path, data: dict) -> None:
    (folder / "model.json").write_text(json.dumps(data, indent=2))


def _onnx(folder: Path) -> Path:
    return folder / _manifest(BUNDLED_MODEL)["files"]["fp32"]["path"]


def missing_onnx(folder: Path) -> None:
    _onnx(folder).unlink()


def garbage_onnx_same_sha(folder: Path) -> None:
    _onnx(folder).write_bytes(b"\x08\x07garbage, not a protobuf" * 100)


def garbage_onnx_rehashed(folder: Path) -> None:
    """Garbage whose sha256 is recorded: the hash passes, ONNX Runtime must refuse it."""
    garbage = bytes(range(256)) * 64
    _onnx(folder).write_bytes(garbage)
    data = _manifest(folder)
    data["files"]["fp32"].update(sha256=hashlib.sha256(garbage).hexdigest(), bytes=len(garbage))
    _write_manifest(folder, data)


def wrong_sha_in_manifest(folder: Path) -> None:
    data = _manifest(folder)
    data["files"]["fp32"]["sha256"] = "0" * 64
    _write_manifest(folder, data)


def manifest_not_json(folder: Path) -> None:
    (folder / "model.json").write_text('{"name": "half-writ')


def no_folder(folder: Path) -> None:
    shutil.rmtree(folder)


FAULTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing_onnx": (missing_onnx, "model file missing: model.onnx"),
    "garbage_onnx": (garbage_onnx_same_sha, "does not match its sha256"),
    "garbage_onnx_rehashed": (garbage_onnx_rehashed, "could not be loaded"),
    "wrong_sha_in_manifest": (wrong_sha_in_manifest, "does not match its sha256"),
    "manifest_not_json": (manifest_not_json, "is invalid"),
    "no_folder": (no_folder, "model folder not found"),
}


def healthy_copy(folder: Path, name: str) -> Path:
    """The bundled model copied to ``folder``, renamed ``name`` (model.json's name)."""
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(BUNDLED_MODEL, folder)
    data = _manifest(folder)
    data["name"] = name
    _write_manifest(folder, data)
    return folder


def broken_models(root: Path) -> dict[str, Path]:
    """One model folder per fault, named after it (a folder name is the fallback name)."""
    out = {}
    for fault, (breaker, _) in FAULTS.items():
        folder = healthy_copy(root / fault, fault)
        breaker(folder)
        out[fault] = folder
    return out


def check_503(status: int, text: str, fault: str) -> None:
    assert status == 503, text
    body = json.loads(text)
    assert body["code"] == "model_unavailable"
    assert FAULTS[fault][1] in body["error"], body["error"]
    assert fault in body["error"]  # it names the model
    assert not internals_in(text), text


#: ``serve`` refuses a model folder that does not exist and loads every model at start, so a
#: folder cannot be missing when the server first needs it (the Lambda test below covers that).
SERVED_FAULTS = [f for f in FAULTS if f != "no_folder"]


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict]]:
    """The bundled model (default), one broken model per fault and a healthy one whose folder is
    removed once serving, on a live server."""
    root = tmp_path_factory.mktemp("http-faults")
    models = {f: p for f, p in broken_models(root).items() if f in SERVED_FAULTS}
    vanishing = healthy_copy(root / "vanishing", "vanishing")
    args = ["--model", str(BUNDLED_MODEL), "--model", str(vanishing)]
    for folder in models.values():
        args += ["--model", str(folder)]
    proc, url = start_server(*args)
    shutil.rmtree(vanishing)
    try:
        yield url, models
    finally:
        stop_server(proc)
    warned = [line for line in proc.stderr_lines if line.startswith("warning: ")]
    assert len(warned) == len(SERVED_FAULTS), proc.stderr_lines  # one line per broken model


@pytest.mark.parametrize("fault", SERVED_FAULTS)
def test_http_fault_is_503_then_heals_in_place(fault: str, fault_server: tuple[str, dict]) -> None:
    url, models = fault_server
    jpeg = {"Content-Type": "image/jpeg"}
    with httpx.Client(base_url=url, timeout=30) as client:
        before = {m["name"]: m for m in client.get("/health").json()["models"]}[fault]
        assert before["state"] == "failed" and FAULTS[fault][1] in before["error"]  # at start
        for _ in range(2):  # asked again: the same clear answer, the server still up
            response = client.post(f"/classify/{fault}", content=JPEG, headers=jpeg)
            check_503(response.status_code, response.text, fault)
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        state = {m["name"]: m for m in health.json()["models"]}[fault]
        assert state["state"] == "failed" and not internals_in(json.dumps(state))
        assert client.post("/classify", content=JPEG, headers=jpeg).status_code == 200
        healthy_copy(models[fault], fault)  # repaired in place
        healed = client.post(f"/classify/{fault}", content=JPEG, headers=jpeg)
    assert healed.status_code == 200, healed.text
    assert healed.json()["label"] in CLASSES


def test_http_model_whose_folder_vanished_keeps_answering(fault_server: tuple[str, dict]) -> None:
    """Loaded at start, a model whose folder is then removed answers from memory."""
    url, _ = fault_server
    with httpx.Client(base_url=url, timeout=30) as client:
        state = {m["name"]: m for m in client.get("/health").json()["models"]}["vanishing"]
        answer = client.post("/classify/vanishing", content=JPEG)
    assert state["state"] == "loaded"
    assert answer.status_code == 200 and answer.json()["label"] in CLASSES, answer.text


@pytest.mark.parametrize("fault", list(FAULTS))
def test_lambda_fault_is_503_then_heals_in_place(fault: str, tmp_path: Path) -> None:
    folder = broken_models(tmp_path)[fault]
    handler = build_handler(ServeSettings(model_dirs=(folder,)))
    for make in (v1, v2, v1):
        answer = lambda_answer(handler, make("POST", "/classify", JPEG, "image/jpeg", True))
        check_503(answer.status, answer.text, fault)
    (status,) = handler.app.state.registry.status()
    assert status.loads == 3  # retried on each request, never cached as failed for good
    healthy_copy(folder, fault)
    for make in (v1, v2):
        answer = lambda_answer(handler, make("POST", "/classify", JPEG, "image/jpeg", True))
        assert answer.status == 200 and answer.label in CLASSES, answer.text


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "skyclass.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def check_cli_message(result: subprocess.CompletedProcess, code: int, needle: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    """One ``error:`` line last (``serve`` may log the load failure once above it), no traceback."""
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and lines[-1].startswith("error: "), result.stderr
    assert needle in lines[-1] and "Traceback" not in result.stderr


@pytest.mark.parametrize("fault", ["missing_onnx", "garbage_onnx_rehashed", "manifest_not_json"])
def test_cli_serve_refuses_a_broken_default_model(fault: str, tmp_path: Path) -> None:
    folder = broken_models(tmp_path)[fault]
    result = _cli("serve", "--port", "0", "--model", str(folder))
    check_cli_message(result, 1, FAULTS[fault][1])


@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "no_folder"])
def test_cli_predict_refuses_a_broken_model(fault: str, tmp_path: Path) -> None:
    folder = broken_models(tmp_path)[fault]
    result = _cli("predict", "--model", str(folder), str(source_photo()))
    check_cli_message(result, 2, FAULTS[fault][1])
    assert result.stdout == ""


# ---- S3 (moto on 127.0.0.1) ----------------------------------------------------------------------


def s3_handler(s3: S3Server, key: str, sha256: str | None, cache: Path):
    uri = f"s3://{s3.bucket}/{key}"
    return build_handler(ServeSettings(s3_uri=uri, s3_sha256=sha256, model_cache=cache))


def ask(handler, make=v1):
    return lambda_answer(handler, make("POST", "/classify", JPEG, "image/jpeg", True))


def check_s3_503(answer, needle: str) -> None:
    assert answer.status == 503, answer.text
    body = json.loads(answer.text)
    assert body["code"] == "model_unavailable" and needle in body["error"], body
    assert not internals_in(answer.text), answer.text


@pytest.mark.parametrize(
    ("fault", "needle"),
    [
        ("absent", "model archive not found"),
        ("sha_mismatch", "sha256 mismatch"),
        ("not_a_tar_gz", "not a valid tar.gz"),
    ],
)
def test_s3_fault_is_503_then_heals_when_the_object_is_fixed(
    fault: str, needle: str, s3_env: S3Server, model_archive: Archive, tmp_path: Path
) -> None:
    key = f"models/{fault}.tar.gz"
    client = s3_env.client()
    client.delete_object(Bucket=s3_env.bucket, Key=key)
    if fault == "sha_mismatch":  # another archive than the one whose sha256 is configured
        client.put_object(Bucket=s3_env.bucket, Key=key, Body=model_archive.path.read_bytes()[:-9])
    if fault == "not_a_tar_gz":
        client.put_object(Bucket=s3_env.bucket, Key=key, Body=b"<html>503 from a proxy</html>")
    sha = model_archive.sha256 if fault == "sha_mismatch" else None
    cache = tmp_path / "cache"
    handler = s3_handler(s3_env, key, sha, cache)
    for make in (v1, v2, v1):
        check_s3_503(ask(handler, make), needle)
    # Nothing half-downloaded is left to be mistaken for a model.
    assert not cache.exists() or not [p for p in cache.iterdir() if not p.name.startswith(".")]
    client.upload_file(str(model_archive.path), s3_env.bucket, key)  # repaired
    for make in (v1, v2):
        answer = ask(handler, make)
        assert answer.status == 200 and answer.label in CLASSES, answer.text


def test_s3_readonly_cache_is_503_and_cli_says_so(
    s3_env: S3Server, model_archive: Archive, readonly_dir: Path
) -> None:
    key = "models/flying-objects.tar.gz"
    s3_env.client().upload_file(str(model_archive.path), s3_env.bucket, key)
    handler = s3_handler(s3_env, key, model_archive.sha256, readonly_dir)
    for make in (v1, v2):
        check_s3_503(ask(handler, make), "cannot write the model cache")
    env = {
        **os.environ,
        "MODEL_S3_URI": f"s3://{s3_env.bucket}/{key}",
        "MODEL_SHA256": model_archive.sha256,
        "SKYCLASS_MODEL_CACHE": str(readonly_dir),
    }
    result = _cli("serve", "--port", "0", env=env)
    check_cli_message(result, 1, "cannot write the model cache")


def test_fault_table(tmp_path: Path) -> None:
    """What each local fault produces, written for the report (test-artifacts/faults.md)."""
    lines = ["| fault | Lambda v1 answer |", "|---|---|"]
    for fault, folder in broken_models(tmp_path).items():
        handler = build_handler(ServeSettings(model_dirs=(folder,)))
        answer = ask(handler)
        check_503(answer.status, answer.text, fault)
        lines.append(f"| {fault} | {answer.status} {json.loads(answer.text)['error']} |")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "faults.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
