"""Artifact size: the Lambda zip and its unzipped size, skyclass vs a torch-based handler.

skyclass's number is the artifact that really ships, ``deploy/.serverless/skyclass.zip`` from
``npm run package``, when it is there. Otherwise, and always for the torch handler, the artifact is
built the way serverless-python-requirements builds it without Docker: ``pip install --target``
of the requirements, the same generic ``slim`` rules for both (no .pyc/__pycache__, .dist-info,
tests, .pyi), the handler code and the model beside them, then one zip. Builds go to
``benchmarks/work/artifacts/`` and are reused while their inputs are unchanged.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.context import REPO, Context, short
from benchmarks.report import Row, mb, na, times, verdict
from benchmarks.stats import ratio

#: The seed's requirements.txt named torch, torchvision and requests_toolbelt; the peer here
#: parses multipart with the standard library, so it needs only the first two (and Pillow).
PEER_REQUIREMENTS = ("torch==2.13.0+cpu", "torchvision==0.28.0", "pillow")

#: serverless-python-requirements' ``slim`` defaults plus the generic patterns deploy/ adds;
#: applied alike to both builds (skyclass's own onnxruntime-specific patterns are not).
SLIM_DIRS = ("__pycache__", "tests", "testing")
SLIM_DIR_SUFFIXES = (".dist-info",)
SLIM_FILES = ("*.pyc", "*.pyo", "*.pyi")


@dataclass(frozen=True)
class ArtifactSpec:
    name: str
    requirements: tuple[str, ...]
    constraints: Path | None
    #: the requirements are the complete list (deploy/requirements-lambda.txt says so)
    no_deps: bool
    #: (source, destination inside the artifact)
    extra: tuple[tuple[Path, str], ...]


def _requirements(path: Path) -> tuple[str, ...]:
    lines = (line.split("#")[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return tuple(line for line in lines if line and not line.startswith("-"))


def skyclass_spec(repo: Path, model_dir: Path) -> ArtifactSpec:
    """What the skyclass Lambda needs: the serve dependencies, the package, the bundled model."""
    lambda_reqs = repo / "deploy" / "requirements-lambda.txt"
    if lambda_reqs.is_file():
        reqs, no_deps = _requirements(lambda_reqs), True
    else:
        project = tomllib.loads((repo / "pyproject.toml").read_text(encoding="utf-8"))
        reqs, no_deps = tuple(project["project"]["dependencies"]), False
    constraints = repo / "constraints.txt"
    return ArtifactSpec(
        name="skyclass",
        requirements=reqs,
        constraints=constraints if constraints.is_file() else None,
        no_deps=no_deps,
        extra=(
            (repo / "src" / "skyclass", "skyclass"),
            (model_dir, f"models/{model_dir.name}"),
        ),
    )


def peer_spec(repo: Path, peer_model_dir: Path) -> ArtifactSpec:
    return ArtifactSpec(
        name="torch-handler",
        requirements=PEER_REQUIREMENTS,
        constraints=None,
        no_deps=False,
        extra=(
            (repo / "benchmarks" / "peer" / "torch_handler.py", "handler.py"),
            (peer_model_dir, "model"),
        ),
    )


def _digest(spec: ArtifactSpec) -> str:
    key = (spec.requirements, spec.no_deps, SLIM_DIRS, SLIM_FILES, sys.version_info[:2])
    h = hashlib.sha256(repr(key).encode())
    if spec.constraints is not None:
        h.update(spec.constraints.read_bytes())
    for src, dest in spec.extra:
        h.update(dest.encode())
        files = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
        for f in files:
            if "__pycache__" in f.parts:
                continue
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
    return h.hexdigest()


def _copy(src: Path, dest: Path) -> None:
    if src.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest)
    else:
        shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def slim(site: Path) -> None:
    """Delete what the Lambda never runs, by the generic patterns above."""
    for path in sorted(site.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and (path.name in SLIM_DIRS or path.name.endswith(SLIM_DIR_SUFFIXES)):
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_file() and any(fnmatch.fnmatch(path.name, pat) for pat in SLIM_FILES):
            path.unlink(missing_ok=True)


def _zip(folder: Path, out: Path) -> None:
    out = out.resolve()
    out.unlink(missing_ok=True)
    if shutil.which("zip"):
        subprocess.run(["zip", "-q", "-r", "-X", "-6", str(out), "."], cwd=folder, check=True)
        return
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder))


def measure_zip(path: Path) -> dict[str, Any]:
    """Zipped and unzipped bytes of a zip, files in it, and whether torch is inside."""
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        unzipped = sum(i.file_size for i in infos)
        torch_inside = any(i.filename.startswith("torch/") for i in infos)
    return {
        "zip_bytes": path.stat().st_size,
        "unzipped_bytes": unzipped,
        "files": len(infos),
        "torch_inside": torch_inside,
        "path": str(path),
    }


def build(spec: ArtifactSpec, work: Path, *, allow_build: bool = True) -> dict[str, Any]:
    """Build (or reuse) the artifact and measure it. Raises RuntimeError when pip fails."""
    root = work / spec.name
    stamp = root / "stamp.json"
    digest = _digest(spec)
    if stamp.is_file():
        cached = json.loads(stamp.read_text(encoding="utf-8"))
        if cached.get("digest") == digest:
            return {**cached["result"], "cached": True}
    if not allow_build:
        raise RuntimeError("not built yet (quick mode builds no artifact)")
    if root.exists():
        shutil.rmtree(root)
    site = root / "package"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--no-compile",
        "--only-binary",
        ":all:",
        "--target",
        str(site),
    ]
    if spec.constraints is not None:
        cmd += ["-c", str(spec.constraints)]
    if spec.no_deps:
        cmd.append("--no-deps")
    done = subprocess.run([*cmd, *spec.requirements], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-2:]
        raise RuntimeError(f"pip could not install {spec.requirements}: {' '.join(tail)}")
    slim(site)
    shutil.rmtree(site / "bin", ignore_errors=True)
    for src, dest in spec.extra:
        _copy(src, site / dest)
    zip_path = root / f"{spec.name}.zip"
    _zip(site, zip_path)
    result = {
        **measure_zip(zip_path),
        "requirements": list(spec.requirements),
        "how": "pip --target + generic slim",
    }
    stamp.write_text(json.dumps({"digest": digest, "result": result}, indent=2), encoding="utf-8")
    shutil.rmtree(site)  # the zip is what is measured; keep the disk free
    return {**result, "cached": False}


def packaged(repo: Path) -> dict[str, Any] | None:
    """The artifact ``npm run package`` built, if there is one."""
    zips = sorted((repo / "deploy" / ".serverless").glob("*.zip"))
    if not zips:
        return None
    try:
        return {**measure_zip(zips[0]), "how": "npm run package (deploy/.serverless)"}
    except zipfile.BadZipFile:  # being written by a package run right now
        return None


def rows(ctx: Context) -> list[Row]:
    """Zipped and unzipped Lambda artifact, skyclass vs the peer built the same way."""
    opt, peer, raw = ctx.opt, ctx.peer(), ctx.raw

    section = "Lambda artifact (zip as uploaded; unzipped = what Lambda's 250 MB limit counts)"
    work = opt.work / "artifacts"
    shipped = packaged(REPO)
    built: dict[str, Any] | str
    try:
        built = build(skyclass_spec(REPO, opt.model_dir), work, allow_build=not opt.quick)
    except RuntimeError as exc:
        built = short(exc)
    try:
        theirs: dict[str, Any] | str = build(
            peer_spec(REPO, peer.model_dir), work, allow_build=not opt.quick
        )
    except RuntimeError as exc:
        theirs = short(exc)
    raw["artifact"] = {"packaged": shipped, "skyclass_pip_build": built, "peer_pip_build": theirs}
    ours = shipped or (built if isinstance(built, dict) else None)
    rows: list[Row] = []
    peer_zip = theirs["zip_bytes"] if isinstance(theirs, dict) else math.nan
    peer_raw = theirs["unzipped_bytes"] if isinstance(theirs, dict) else math.nan
    peer_note = "" if isinstance(theirs, dict) else na(theirs)
    how = ours["how"] if ours else na(built if isinstance(built, str) else "not built")
    for key, label, limit in (("zip_bytes", "zipped", 50e6), ("unzipped_bytes", "unzipped", 150e6)):
        value = ours[key] if ours else math.nan
        peer_value = peer_zip if key == "zip_bytes" else peer_raw
        r = ratio(peer_value, value)
        target = f"< {limit / 1e6:.0f} MB" + (" and >= 3x" if key == "zip_bytes" else "")
        ok = value < limit and (key != "zip_bytes" or math.isnan(r) or r >= 3)
        miss = ", ".join(
            x
            for x in (
                f"+{(value - limit) / 1e6:.1f} MB" if value >= limit else "",
                f"{r:.1f}x" if key == "zip_bytes" and not math.isnan(r) and r < 3 else "",
            )
            if x
        )
        rows.append(
            Row(
                section,
                f"{label} size, skyclass: {how}",
                mb(value) if ours else how,
                peer_note or mb(peer_value),
                times(r, "smaller"),
                target,
                "" if not ours else verdict(ok, miss),
            )
        )
    if shipped and isinstance(built, dict):
        rows.append(
            Row(
                section,
                "skyclass built like the peer (pip --target + generic slim): zipped / unzipped",
                f"{mb(built['zip_bytes'])} / {mb(built['unzipped_bytes'])}",
                peer_note or f"{mb(peer_zip)} / {mb(peer_raw)}",
                times(ratio(peer_zip, built["zip_bytes"]), "smaller"),
            )
        )
    torch_inside = ours["torch_inside"] if ours else None
    rows.append(
        Row(
            section,
            "torch inside the artifact",
            "n/a" if torch_inside is None else ("yes" if torch_inside else "no"),
            "yes (torch 2.13.0+cpu, torchvision 0.28.0)" if isinstance(theirs, dict) else peer_note,
        )
    )
    return rows
