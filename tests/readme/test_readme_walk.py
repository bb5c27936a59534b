"""The README's road, walked as written (issue 18): a copy of the project beside a small copy of
the shared photos, its commands in order, each exiting 0 and writing what the README says.

- serve-only: ``bash scripts/serve.sh`` makes ``.venv`` (``pip install -e .``, no torch) and
  serves every bundled model; from that environment each training command answers with the one
  line naming the extra to install.
- train: the README's training commands in order on a tiny config (64 px, 2 steps). They run in
  this test session's interpreter, which has the ``train`` extra installed (a fresh torch install
  takes minutes), against the copy's sources (PYTHONPATH), from the copy's root.
- wheel: ``pip wheel`` of the copy, installed in a fresh venv: ``predict`` and ``serve`` answer
  with the bundled model, from any working directory.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    CLASSES,
    DATA_ROOT,
    OUT_OF_SCOPE,
    REPO_ROOT,
    WEIGHTS,
    shared_images,
    tiny_toml,
)

pytestmark = pytest.mark.slow

INSTALL_TRAIN = "pip install -e '.[train]'"
PIP_WHEEL = (sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation")
WEIGHTS_ARG = "../shared/weights/mobilenet_v2_imagenet.pth"
PHOTOS_PER_CLASS = 12
#: The config a user writes for a tiny run, with the README's relative paths.
TINY_CONFIG = tiny_toml(
    stages=({"name": "head", "epochs": 1, "lr": 1e-3, "unfreeze": []},),
    out="runs",
    data_root="../shared/data/flying-objects",
    train="splits/train.csv",
    val="splits/val.csv",
    test="splits/test.csv",
    weights=WEIGHTS_ARG,
    num_threads=None,
    cache_dir=".cache/skyclass",
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.pop("SKYCLASS_MODELS", None)
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 600):
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ROOT/project`` (the tracked files of this checkout, as a clone has them) beside
    ``ROOT/shared`` (12 real photos per class, their SOURCES.tsv rows, the shared weights)."""
    root = tmp_path_factory.mktemp("walk")
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        src = REPO_ROOT / name
        if src.is_file() and not name.startswith("deploy/"):
            (root / "project" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / "project" / name)
    data = root / "shared" / "data" / "flying-objects"
    chosen = set()
    for cls in CLASSES:
        (data / cls).mkdir(parents=True)
        for photo in shared_images(cls, PHOTOS_PER_CLASS):
            shutil.copy2(photo, data / cls / photo.name)
            chosen.add(photo.name)
    with (DATA_ROOT / "SOURCES.tsv").open(encoding="utf-8") as fh:
        lines = fh.readlines()
    keep = [ln for ln in lines[1:] if ln.split("\t")[0] in chosen]
    (data / "SOURCES.tsv").write_text(lines[0] + "".join(keep), encoding="utf-8")
    _copy_out_of_scope(root / "shared" / "data" / "out-of-scope")
    (root / "shared" / "weights").mkdir()
    os.symlink(WEIGHTS, root / "shared" / "weights" / WEIGHTS.name)
    return root


def _copy_out_of_scope(folder: Path, per_source: int = 3) -> None:
    """The first ``per_source`` photos of each out-of-scope source, with their SOURCES.tsv rows."""
    lines = (OUT_OF_SCOPE / "SOURCES.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    taken: dict[str, int] = {}
    keep = []
    for line in sorted(lines[1:]):
        file, source = line.split("\t")[1:3]
        if taken.get(source, 0) < per_source:
            taken[source] = taken.get(source, 0) + 1
            keep.append(line)
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(OUT_OF_SCOPE / file, folder / file)
    (folder / "SOURCES.tsv").write_text(lines[0] + "".join(keep), encoding="utf-8")


@pytest.fixture(scope="module")
def serve_only(walk: Path) -> Iterator[tuple[Path, str]]:
    """``bash scripts/serve.sh --port 0`` in the copy (it makes .venv, then serves): bin, URL."""
    project = walk / "project"
    log = (walk / "serve-sh.log").open("w")
    proc = subprocess.Popen(
        ["bash", "scripts/serve.sh", "--port", "0"],
        cwd=project,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        url = _wait_for_url(proc, walk / "serve-sh.log", timeout=420)
        yield project / ".venv" / "bin", url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


def _wait_for_url(proc: subprocess.Popen, log: Path, timeout: float) -> str:
    """The http://127.0.0.1:PORT the server printed, once /health answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        for word in log.read_text().split():
            if word.startswith("http://127.0.0.1:") and not word.endswith(":0"):
                url = word.rstrip("/.,")
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=10) as r:
                        if r.status == 200:
                            return url
                except OSError:
                    pass
        time.sleep(0.5)
    pytest.fail(f"no server URL within {timeout} s:\n{log.read_text()[-3000:]}")


def _classify(url: str, photo: Path, model: str = "") -> dict:
    boundary = "skyclass-walk"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{photo.name}"'
            "\r\nContent-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{url}/classify{'/' + model if model else ''}",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())


def test_serve_sh_serves_every_bundled_model(serve_only: tuple[Path, str]) -> None:
    venv_bin, url = serve_only
    with urllib.request.urlopen(f"{url}/models", timeout=30) as r:
        listed = json.loads(r.read())
    text = json.dumps(listed)
    assert "flying-objects" in text and "imagenet-mobilenet-v2" in text
    photo = shared_images("small_quadcopters", 1)[0]
    assert _classify(url, photo)["model"]["name"] == "flying-objects"  # still the default
    assert _classify(url, photo, "imagenet-mobilenet-v2")["model"]["name"] == (
        "imagenet-mobilenet-v2"
    )
    # serve-only: no torch in that environment
    probe = _run([str(venv_bin / "python"), "-c", "import torch"], venv_bin, _env())
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "../shared/data/flying-objects", "--out", "audit/"],
        [
            *("label-issues", "docs/data/audit/clean.csv"),
            *("--data-root", "../shared/data/flying-objects", "--out", "l/"),
        ],
        ["lr-find", "--config", "configs/flying-objects.toml"],
        ["train", "--config", "configs/flying-objects.toml"],
        ["evaluate", "runs/flying-objects", "docs/data/splits-reviewed/test.csv"],
        ["export", "runs/flying-objects", "--out", "models/x"],
    ],
    ids=lambda a: a[0],
)
def test_serve_only_training_commands_name_the_extra(
    serve_only: tuple[Path, str], args: list[str]
) -> None:
    venv_bin, _url = serve_only
    project = venv_bin.parents[1]
    proc = _run([str(venv_bin / "skyclass"), *args], project, _env(), timeout=120)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout + proc.stderr
    assert lines[0].startswith(f"error: skyclass {args[0]} needs the training extras")
    assert lines[0].endswith(INSTALL_TRAIN)
    assert not (project / "audit").exists() and not (project / "models" / "x").exists()


def test_readme_training_road_in_order(walk: Path) -> None:
    """audit -> label-issues -> split --review -> lr-find -> train -> evaluate -> export ->
    predict, with the README's arguments (a tiny config in place of the flagship's)."""
    project = walk / "project"
    (project / "configs" / "tiny.toml").write_text(TINY_CONFIG, encoding="utf-8")
    env = _env(PYTHONPATH=str(project / "src"))
    data = "../shared/data/flying-objects"
    steps = [
        (["audit", data, "--out", "audit/"], ["audit/report.html", "audit/clean.csv"]),
        (
            [
                *("label-issues", "audit/clean.csv", "--data-root", data),
                *("--out", "label-review/", "--weights", WEIGHTS_ARG),
            ],
            ["label-review/review.csv", "label-review/gallery.html"],
        ),
        (
            ["split", "audit/clean.csv", "--out", "splits/", "--review", "label-review/review.csv"],
            ["splits/train.csv", "splits/val.csv", "splits/test.csv"],
        ),
        (["lr-find", "--config", "configs/tiny.toml"], []),
        (["train", "--config", "configs/tiny.toml"], ["runs/tiny/checkpoints/best.pt"]),
        (
            ["evaluate", "runs/tiny", "splits/test.csv"],
            ["runs/tiny/reports/test/metrics.json", "runs/tiny/reports/test/predictions.csv"],
        ),
        (
            [
                *("export", "runs/tiny", "--out", "exported/tiny"),
                *("--out-of-scope", "../shared/data/out-of-scope"),
            ],
            [
                f"exported/tiny/{f}"
                for f in ("model.onnx", "model.json", "MODEL_CARD.md", "scope.npz")
            ],
        ),
    ]
    for args, outputs in steps:
        proc = _run([sys.executable, "-m", "skyclass", *args], project, env, timeout=900)
        assert proc.returncode == 0, f"skyclass {args[0]}:\n{proc.stdout[-2000:]}{proc.stderr}"
        for out in outputs:
            assert (project / out).is_file(), f"skyclass {args[0]} did not write {out}"
    with (project / "splits" / "test.csv").open(encoding="utf-8") as fh:
        photo = project / data / next(csv.DictReader(fh))["path"]
    proc = _run(
        [
            sys.executable,
            "-m",
            "skyclass",
            "predict",
            str(photo),
            "--json",
            "--model",
            "exported/tiny",
        ],
        project,
        env,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["label"] in CLASSES


def test_wheel_serves_the_bundled_models_out_of_the_box(walk: Path) -> None:
    project, dist, venv = walk / "project", walk / "dist", walk / "wheel-venv"
    env = _env()
    build = _run(
        [*PIP_WHEEL, "-w", str(dist), str(project)],
        walk,
        env,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("skyclass-*.whl")
    assert _run([sys.executable, "-m", "venv", str(venv)], walk, env).returncode == 0
    install = _run(  # constraints.txt: the pins a user of the clone gets
        [str(venv / "bin" / "pip"), "install", "-q", "-c", "constraints.txt", str(wheel)],
        project,
        env,
    )
    assert install.returncode == 0, install.stderr
    elsewhere = walk / "elsewhere"  # no models/ folder here: they come from the package
    elsewhere.mkdir()
    photo = shared_images("flying_birds", 1)[0]
    for model, n_labels in (("flying-objects", 4), ("imagenet-mobilenet-v2", 1000)):
        proc = _run(
            [str(venv / "bin" / "skyclass"), "predict", str(photo), "--json", "--model", model],
            elsewhere,
            env,
        )
        assert proc.returncode == 0, proc.stderr
        answer = json.loads(proc.stdout.splitlines()[-1])
        assert (answer["label"] in CLASSES) == (n_labels == 4), answer["label"]
    log_path = walk / "wheel-serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(venv / "bin" / "skyclass"), "serve", "--port", "0"],
            cwd=elsewhere,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            url = _wait_for_url(proc, log_path, timeout=120)
            answer = _classify(url, photo)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert answer["model"]["name"] == "flying-objects" and answer["label"] in CLASSES
