"""The table: typed rows, rendered as markdown; the machine the numbers came from."""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from skyclass.train.reproducibility import cpu_model

COLUMNS = (
    "what",
    "skyclass",
    "peer (torch handler)",
    "skyclass vs peer",
    "target",
    "met",
    "load",
)


@dataclass(frozen=True)
class Row:
    section: str
    what: str
    skyclass: str
    peer: str = ""
    ratio: str = ""
    target: str = ""
    met: str = ""
    load: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def na(reason: str) -> str:
    return f"n/a ({reason})"


def ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}" if value < 100 else f"{value:.0f}"


def times(value: float, better: str = "faster") -> str:
    """``2.3x faster``; nan-safe."""
    if math.isnan(value):
        return ""
    return f"{value:.1f}x {better}"


def verdict(ok: bool, miss: str = "") -> str:
    return "yes" if ok else f"**no**{f' ({miss})' if miss else ''}"


def mb(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 1e6:.1f} MB"


def render(rows: list[Row], header: list[str]) -> str:
    lines = [*header, ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            lines.append(f"| **{section}** |" + " |" * (len(COLUMNS) - 1))
        cells = (row.what, row.skyclass, row.peer, row.ratio, row.target, row.met, row.load)
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def machine(repo: Path) -> dict[str, Any]:
    """Where and with what the numbers were taken."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "commit": commit,
        "versions": {
            d: _version(d) for d in ("onnxruntime", "torch", "torchvision", "numpy", "pillow")
        },
    }
