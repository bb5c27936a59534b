"""Check the Lambda artifact that ``npm run package`` built, as Lambda would run it.

    python deploy/check_artifact.py [deploy/.serverless/skyclass.zip] [--image JPEG] [--threads 1 2]

Unzips into a temp dir; prints zipped and unzipped sizes (total, per top-level entry, per model
folder); fails if zipped >= 50 MB, unzipped >= 150 MB or torch/torchvision/albumentations/cv2 is
inside; then, in a clean interpreter (``-I -S``: no site-packages, no PYTHONPATH, only the unzipped
dir on sys.path, cwd = the unzipped dir like /var/task) with the function's environment from the
CloudFormation template, imports ``skyclass.serve.lambda_entry`` (the function's handler) and
answers a real API Gateway REST (v1) and HTTP API (v2) event with a base64 multipart JPEG, plus
an empty body (a 4xx with CORS headers). Prints cold start (fresh process to first answer), warm
latency and peak RSS. Exit 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_ZIP = HERE / ".serverless" / "skyclass.zip"
SHARED = Path(os.environ.get("SKYCLASS_SHARED", REPO.parent / "shared"))
DEFAULT_IMAGE = SHARED / "data" / "flying-objects" / "flying_birds"
ZIPPED_LIMIT = 50 * 1000 * 1000  # Lambda's direct-upload limit is 50 MB
UNZIPPED_LIMIT = 150 * 1000 * 1000  # our target; Lambda's hard limit is 250 MB
FORBIDDEN = ("torch", "torchvision", "albumentations", "cv2", "boto3", "botocore", "sympy")
HANDLER = "skyclass.serve.lambda_entry"  # serverless.yml: functions.classify.handler

PROBE = HERE / "artifact_probe.py"  # runs in the clean interpreter


def mb(n: float) -> str:
    return f"{n / 1e6:7.1f} MB"


def function_environment(zip_path: Path) -> dict[str, str]:
    """The function's environment from the CloudFormation template packaged beside the zip."""
    template = zip_path.parent / "cloudformation-template-update-stack.json"
    if not template.is_file():
        return {}
    resources = json.loads(template.read_text())["Resources"]
    for resource in resources.values():
        if resource.get("Type") == "AWS::Lambda::Function":
            env = resource["Properties"].get("Environment", {}).get("Variables", {})
            return {k: v for k, v in env.items() if isinstance(v, str)}
    return {}


def sizes(zip_path: Path, root: Path) -> tuple[int, int, list[str]]:
    failures = []
    zipped = zip_path.stat().st_size
    per_zip: Counter[str] = Counter()
    per_raw: Counter[str] = Counter()
    models: Counter[str] = Counter()
    with zipfile.ZipFile(zip_path) as zf:
        for info in zf.infolist():
            parts = info.filename.split("/")
            per_zip[parts[0]] += info.compress_size
            per_raw[parts[0]] += info.file_size
            if parts[0] == "models" and len(parts) > 2:
                models[parts[1]] += info.file_size
            if parts[0].split(".")[0].split("-")[0] in FORBIDDEN:
                failures.append(f"{parts[0]} must not be in the artifact")
        zf.extractall(root)
    unzipped = sum(per_raw.values())
    print(f"artifact {zip_path}")
    print(f"  zipped   {mb(zipped)}  (limit {mb(ZIPPED_LIMIT).strip()})")
    print(f"  unzipped {mb(unzipped)}  (limit {mb(UNZIPPED_LIMIT).strip()})")
    print(f"  {'top-level entry':<28}{'zipped':>11}{'unzipped':>11}")
    for name, raw in per_raw.most_common():
        if raw >= 100_000:
            print(f"  {name:<28}{mb(per_zip[name])}{mb(raw)}")
    rest = [n for n, raw in per_raw.items() if raw < 100_000]
    print(f"  ({len(rest)} smaller entries: {mb(sum(per_raw[n] for n in rest)).strip()})")
    for name, raw in sorted(models.items()):
        print(f"  model {name:<22}{mb(raw)} unzipped")
    if not models:
        print("  no model folder inside (model from MODEL_S3_URI)")
    if zipped >= ZIPPED_LIMIT:
        failures.append(f"zipped size {mb(zipped).strip()} is over {mb(ZIPPED_LIMIT).strip()}")
    if unzipped >= UNZIPPED_LIMIT:
        limit = mb(UNZIPPED_LIMIT).strip()
        failures.append(f"unzipped size {mb(unzipped).strip()} is over {limit}")
    return zipped, unzipped, failures


def run_handler(root: Path, image: Path, env: dict[str, str], warm: int) -> tuple[dict, float]:
    """Fresh clean interpreter in the unzipped dir; returns its report and wall time."""
    child_env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **env}
    child_env = {k: v for k, v in child_env.items() if v != ""}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(PROBE), str(image), str(warm)],
        cwd=root,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"handler failed in a clean interpreter:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def check_answers(report: dict, root: Path) -> list[str]:
    failures = []
    models_dir = root / "models"
    labels: set[str] = set()
    for manifest in models_dir.glob("*/model.json"):
        labels |= set(json.loads(manifest.read_text())["labels"])
    for name in ("v1", "v2"):
        answer = report["answers"][name]
        headers = {k.lower(): v for k, v in (answer.get("headers") or {}).items()}
        if answer["statusCode"] != 200:
            failures.append(f"{name} event: status {answer['statusCode']}: {answer.get('body')}")
            continue
        body = json.loads(answer["body"])
        if labels and body.get("label") not in labels:
            failures.append(f"{name} event: label {body.get('label')!r} is not one of the model's")
        if "access-control-allow-origin" not in headers:
            failures.append(f"{name} event: no CORS header on a 200")
        print(f"  {name} event -> 200 {body.get('label')} {body.get('confidence', 0):.3f}")
    empty = report["answers"]["empty"]
    headers = {k.lower(): v for k, v in (empty.get("headers") or {}).items()}
    if not 400 <= empty["statusCode"] < 500 or "error" not in json.loads(empty["body"]):
        failures.append(f"empty body: expected a 4xx JSON error, got {empty['statusCode']}")
    if "access-control-allow-origin" not in headers:
        failures.append("empty body: no CORS header on the 4xx")
    print(f"  empty body -> {empty['statusCode']} {json.loads(empty['body']).get('error')}")
    if report["heavy_modules"]:
        failures.append(f"the handler imported {report['heavy_modules']}")
    outside = [f for f in report["files"] if not str(f).startswith(str(root))]
    if outside:
        failures.append(f"modules came from outside the artifact: {outside}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("zip", nargs="?", type=Path, default=DEFAULT_ZIP)
    parser.add_argument("--image", type=Path, help="a JPEG (default: a shared flying_birds photo)")
    parser.add_argument("--threads", type=int, nargs="*", default=[], help="also time these")
    parser.add_argument("--warm", type=int, default=20, help="warm requests to time")
    args = parser.parse_args(argv)
    if not args.zip.is_file():
        print(f"error: no artifact at {args.zip} (run: npm run package)", file=sys.stderr)
        return 1
    image = args.image or next(iter(sorted(DEFAULT_IMAGE.glob("*.jp*g"))), None)
    if image is None or not image.is_file():
        print(f"error: no JPEG to send (give --image; looked in {DEFAULT_IMAGE})", file=sys.stderr)
        return 1
    env = function_environment(args.zip)
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="skyclass-artifact-") as tmp:
        root = Path(tmp)
        _, _, size_failures = sizes(args.zip, root)
        failures += size_failures
        print(f"handler {HANDLER}.classify_image in a clean interpreter, image {image.name}")
        print(f"  env {json.dumps({k: v for k, v in env.items() if v})}")
        try:
            report, wall = run_handler(root, image, env, args.warm)
        except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
            failures.append(str(exc))
        else:
            failures += check_answers(report, root)
            print(
                f"  cold start: import {report['import_s']:.3f} s, first answer "
                f"{report['first_answer_s']:.3f} s after interpreter start "
                f"(process wall incl. {args.warm} warm requests {wall:.2f} s); "
                f"warm p50 {report['warm_p50_ms']:.1f} ms; peak RSS {report['peak_rss_mb']:.0f} MB"
            )
            for threads in args.threads:
                report, _ = run_handler(root, image, {**env, "SKYCLASS_THREADS": str(threads)}, 50)
                print(
                    f"  SKYCLASS_THREADS={threads}: first answer {report['first_answer_s']:.3f} s,"
                    f" warm p50 {report['warm_p50_ms']:.1f} ms,"
                    f" peak RSS {report['peak_rss_mb']:.0f} MB"
                )
    for failure in failures:
        print(f"FAIL: {failure}", file=sys.stderr)
    print("artifact OK" if not failures else f"artifact FAILED ({len(failures)} problems)")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
