"""Run identity: the tracker ids stored in the run dir, and the tags every tracker run carries."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skyclass.core.bundle import sha256_file
from skyclass.outputs import write_text_atomic

log = logging.getLogger(__name__)

STATE_FILE = "trackers.json"


def read_state(run_dir: Path) -> dict[str, Any]:
    """``{backend: {ids...}, "step": last step}`` from ``run_dir/trackers.json`` ({} if none)."""
    path = Path(run_dir) / STATE_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s: %s", path, exc)
        return {}
    return data if isinstance(data, dict) else {}


def write_state(run_dir: Path, state: Mapping[str, Any]) -> None:
    write_text_atomic(Path(run_dir) / STATE_FILE, json.dumps(state, indent=2) + "\n")


def folder_sha256(folder: Path) -> tuple[str, dict[str, str]]:
    """(digest of the folder, {relative path: sha256}); the digest is the sha256 of the
    ``sha256sum``-style listing (``<sha256>  <path>`` per file, sorted by path)."""
    folder = Path(folder)
    files = {
        p.relative_to(folder).as_posix(): sha256_file(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    listing = "".join(f"{digest}  {name}\n" for name, digest in files.items())
    return hashlib.sha256(listing.encode("utf-8")).hexdigest(), files


def git_commit(cwd: Path | None = None) -> str:
    """The commit of the git checkout holding ``cwd`` (default: the skyclass source), or
    ``unknown`` (an installed wheel, no git)."""
    import skyclass

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(skyclass.__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def world() -> tuple[int, int]:
    """(rank, world size) of this process under torch.distributed (0, 1 when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def run_tags(
    manifests: Mapping[str, str | Path | None], device: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Tags for a tracker run: sha256 of each data manifest, git commit, skyclass version,
    device and world size."""
    import skyclass

    tags = {
        "skyclass.version": skyclass.__version__,
        "git.commit": git_commit(),
        "device": device,
        "world_size": str(world()[1]),
    }
    for split, path in manifests.items():
        if path and Path(path).is_file():
            tags[f"data.{split}.sha256"] = sha256_file(Path(path))
    tags.update(extra or {})
    return tags
