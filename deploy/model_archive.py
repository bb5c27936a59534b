"""Build the tar.gz of one model folder that ``MODEL_S3_URI`` names, and optionally upload it.

    npm run upload-model -- ../models/flying-objects /tmp/fo.tar.gz [--upload s3://BUCKET/fo.tar.gz]
    python deploy/model_archive.py models/flying-objects fo.tar.gz [--upload s3://BUCKET/fo.tar.gz]

The archive is reproducible (sorted members, zeroed owners and times, fixed modes), so the same
folder always gives the same sha256, the ``MODEL_SHA256`` the function checks after download
(``skyclass.serve.s3.fetch_model_archive``).
"""

from __future__ import annotations

import argparse
import gzip
import logging
import tarfile
from pathlib import Path

from skyclass.core.bundle import MANIFEST, sha256_file
from skyclass.core.errors import ModelUnavailable
from skyclass.serve.s3 import parse_s3_uri


def make_model_archive(model_dir: str | Path, out_path: str | Path) -> str:
    """Write a reproducible tar.gz of one model folder (as ``<name>/...``); return its sha256."""
    model_dir = Path(model_dir)
    if not (model_dir / MANIFEST).is_file():
        raise ModelUnavailable(f"not a model folder (no {MANIFEST}): {model_dir}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        if not (info.isfile() or info.isdir()) or "__pycache__" in info.name:
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    tmp = out_path.with_name(out_path.name + ".tmp")
    with (
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.add(model_dir, arcname=model_dir.name, recursive=False, filter=clean)
        for path in sorted(model_dir.rglob("*")):
            arcname = f"{model_dir.name}/{path.relative_to(model_dir).as_posix()}"
            tar.add(path, arcname=arcname, recursive=False, filter=clean)
    tmp.replace(out_path)
    return sha256_file(out_path)


def main(argv: list[str] | None = None) -> int:
    """Archive a model folder (and optionally upload it); print the MODEL_S3_URI/MODEL_SHA256."""
    parser = argparse.ArgumentParser(prog="model_archive.py", description=main.__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out", type=Path, help="where to write the .tar.gz")
    parser.add_argument("--upload", metavar="S3_URI", help="also upload it there (needs boto3)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        sha = make_model_archive(args.model_dir, args.out)
        print(f"{args.out}  {args.out.stat().st_size} bytes  sha256 {sha}")
        if args.upload:
            bucket, key = parse_s3_uri(args.upload)
            import boto3

            boto3.client("s3").upload_file(str(args.out), bucket, key)
            print(f"uploaded: {args.upload}")
            print(
                f"deploy with: npm run deploy -- --param modelS3Uri={args.upload} "
                f"--param modelSha256={sha}"
            )
    except ModelUnavailable as exc:
        print(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
