"""The Lambda artifact from a real `npm run package`, run as Lambda and serverless-offline do."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, shared_images
from tests.deploy.conftest import free_port

DEPLOY = REPO_ROOT / "deploy"
ZIP = DEPLOY / ".serverless" / "skyclass.zip"
VENV_BIN = REPO_ROOT / ".venv" / "bin"
pytestmark = pytest.mark.slow


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any AWS settings, the venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(REPO_ROOT / ".venv")
    env["SLS_TELEMETRY_DISABLED"] = "1"
    env["SLS_NOTIFICATIONS_MODE"] = "off"
    env.update(extra)
    return env


def newest_input() -> float:
    inputs = [
        DEPLOY / n for n in ("serverless.yml", "requirements-lambda.txt", "package-lock.json")
    ]
    inputs += list((DEPLOY / "plugins").glob("*.js"))
    inputs += list((REPO_ROOT / "src" / "skyclass" / "serve").rglob("*"))
    inputs += list((REPO_ROOT / "models" / "flying-objects").rglob("*"))
    return max(p.stat().st_mtime for p in inputs if p.is_file())


@pytest.fixture(scope="session")
def node_modules() -> Path:
    if not (DEPLOY / "node_modules" / ".bin" / "serverless").exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=DEPLOY,
            check=True,
            timeout=600,
        )
    return DEPLOY / "node_modules"


@pytest.fixture(scope="session")
def artifact(node_modules: Path) -> Path:
    """`npm run package` with no AWS credentials; skipped while the zip is newer than its inputs."""
    if not ZIP.is_file() or ZIP.stat().st_mtime < newest_input():
        proc = subprocess.run(
            ["npm", "run", "package"],
            cwd=DEPLOY,
            env=clean_env(
                AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent"
            ),
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "Service packaged" in proc.stdout + proc.stderr
        assert "skyclass: model flying-objects" in proc.stdout + proc.stderr
    return ZIP


def test_artifact_sizes_contents_and_real_events(artifact: Path):
    proc = subprocess.run(
        [sys.executable, str(DEPLOY / "check_artifact.py"), str(artifact)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "v1 event -> 200" in out and "v2 event -> 200" in out
    assert "empty body -> 400" in out
    assert "model flying-objects" in out
    assert "artifact OK" in out


def test_checker_fails_on_a_bad_artifact(tmp_path: Path, artifact: Path):
    """The checker must say no: an artifact with torch inside and no working handler."""
    import zipfile

    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("torch/__init__.py", "")
        zf.writestr("skyclass/__init__.py", "")
    proc = subprocess.run(
        [sys.executable, str(DEPLOY / "check_artifact.py"), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "torch must not be in the artifact" in proc.stderr
    assert "handler failed in a clean interpreter" in proc.stderr


@contextlib.contextmanager
def run_offline(command: list[str], env: dict[str, str], name: str) -> Iterator[str]:
    """serverless-offline started by ``command`` (+ free ports) in deploy/, until /health answers
    (any status: a handler that cannot start answers 502); stopped at the end."""
    http_port, lambda_port = free_port(), free_port()
    log = open(DEPLOY / f".serverless-offline-{name}.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [*command, "--httpPort", str(http_port), "--lambdaPort", str(lambda_port)],
        cwd=DEPLOY,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=30) as response:
                    if response.status == 200:
                        break
            except urllib.error.HTTPError:
                break  # it answered: the handler runs (and says why it cannot)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(
                    "serverless-offline did not start:\n" + Path(log.name).read_text()[-3000:]
                )
            time.sleep(1)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def offline(node_modules: Path) -> Iterator[str]:
    """serverless-offline on 127.0.0.1 (free ports) running the real handler; stopped at the end."""
    command = ["npx", "serverless", "offline", "start", "--host", "127.0.0.1"]
    with run_offline(command, clean_env(), "test") as base:
        yield base


def documented_env(**extra: str) -> dict[str, str]:
    """A shell as a newcomer has it: no venv active or on PATH, no AWS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    paths = env.get("PATH", "").split(os.pathsep)
    env["PATH"] = os.pathsep.join(p for p in paths if not p.rstrip("/").endswith(".venv/bin"))
    env.update(SLS_TELEMETRY_DISABLED="1", SLS_NOTIFICATIONS_MODE="off", **extra)
    return env


def test_npm_run_offline_as_documented_answers_multipart(node_modules: Path):
    """`npm run offline` from a plain shell finds the project's .venv itself (issue 18: the system
    python3.11 without mangum made every request a 504 after 15 s)."""
    assert (VENV_BIN / "python3").exists(), "the project's .venv (scripts/test.sh makes it)"
    photo = shared_images("winged_drones", 1)[0]
    body, ctype = multipart("file", photo.name, photo.read_bytes())
    with run_offline(["npm", "run", "offline", "--"], documented_env(), "npm") as base:
        status, _headers, answer = post(f"{base}/classify", body, ctype)
    assert status == 200, answer
    assert answer["model"]["name"] == "flying-objects" and "label" in answer
    assert "skyclass: handler Python from" in (DEPLOY / ".serverless-offline-npm.log").read_text()


def test_a_handler_that_cannot_start_answers_502_with_the_reason(
    node_modules: Path, tmp_path: Path
):
    """A Python without skyclass's dependencies: a 502 JSON naming the missing module, at once."""
    bare = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    env = documented_env(VIRTUAL_ENV=str(bare))
    photo = shared_images("flying_birds", 1)[0]
    body, ctype = multipart("file", photo.name, photo.read_bytes())
    with run_offline(["npm", "run", "offline", "--"], env, "bare") as base:
        started = time.monotonic()
        status, headers, answer = post(f"{base}/classify", body, ctype)
        seconds = time.monotonic() - started
    assert status == 502, answer
    assert answer["code"] == "handler_unavailable"
    assert "No module named" in answer["error"]
    assert headers.get("access-control-allow-origin") in ("*", "https://example.org")
    assert seconds < 14  # not the 15 s Lambda timeout


def post(url: str, body: bytes, content_type: str) -> tuple[int, dict[str, str], dict]:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": content_type, "Origin": "https://example.org"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return (
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                json.loads(response.read()),
            )
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, json.loads(err.read())


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def test_offline_multipart_jpeg_is_classified_with_cors(offline: str):
    labels = json.loads((REPO_ROOT / "models" / "flying-objects" / "model.json").read_text())[
        "labels"
    ]
    photo = shared_images("small_quadcopters", 1)[0]
    body, ctype = multipart("image", photo.name, photo.read_bytes())
    status, headers, answer = post(f"{offline}/classify", body, ctype)
    assert status == 200, answer
    assert answer["label"] in labels
    assert set(answer["probabilities"]) == set(labels)
    assert abs(sum(answer["probabilities"].values()) - 1) < 1e-3
    assert answer["model"]["name"] == "flying-objects"
    assert headers.get("access-control-allow-origin") in ("*", "https://example.org")


def test_offline_errors_carry_cors_headers(offline: str):
    status, headers, answer = post(f"{offline}/classify", b"", "image/jpeg")
    assert status == 400 and "error" in answer
    assert headers.get("access-control-allow-origin") in ("*", "https://example.org")
    body, ctype = multipart("image", "notes.jpg", b"this is not a jpeg at all")
    status, headers, answer = post(f"{offline}/classify", body, ctype)
    assert 400 <= status < 500 and "error" in answer
    assert headers.get("access-control-allow-origin") in ("*", "https://example.org")
