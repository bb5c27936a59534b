"""A small image set built in tmp_path from real shared photos, with planted defects."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import DATA_ROOT, shared_images


@dataclass(frozen=True)
class Fixture:
    root: Path
    clean: tuple[str, ...]  # relative paths of untouched real photos
    planted: dict[str, str]  # relative path -> the check that must find it


def build_fixture(root: Path) -> Fixture:
    if not DATA_ROOT.is_dir():
        pytest.fail(f"shared data not found at {DATA_ROOT} (set SKYCLASS_SHARED)")
    picks = {
        "flying_birds": shared_images("flying_birds", 4, "bisky_")
        + shared_images("flying_birds", 2, "ddt_"),
        "large_quadcopters": shared_images("large_quadcopters", 5, "cropspray_"),
        "winged_drones": shared_images("winged_drones", 5, "px4ug_"),
    }
    clean = []
    for cls, files in picks.items():
        (root / cls).mkdir(parents=True)
        for f in files:
            shutil.copy2(f, root / cls / f.name)
            clean.append(f"{cls}/{f.name}")
    big = picks["large_quadcopters"][0]
    data = big.read_bytes()
    planted: dict[str, str] = {}

    def plant(rel: str, payload: bytes, check: str) -> None:
        (root / rel).write_bytes(payload)
        planted[rel] = check

    plant("flying_birds/zero.jpg", b"", "zero_byte")
    plant("large_quadcopters/truncated.jpg", data[: len(data) // 2], "truncated")
    plant("winged_drones/notes.jpg", b"field notes, not a photo\n" * 20, "not_an_image")
    spare_wing = shared_images("winged_drones", 6, "px4ug_")[5]  # not in the set
    with Image.open(spare_wing) as img:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="PNG")
    plant("winged_drones/really_png.jpg", buf.getvalue(), "extension_mismatch")
    # the same bytes under another class: a label conflict, for both copies
    plant("flying_birds/copy_of_cropspray.jpg", data, "label_conflict")
    planted[f"large_quadcopters/{big.name}"] = "label_conflict"
    clean.remove(f"large_quadcopters/{big.name}")
    # resized and recompressed copy in the same class: a near duplicate
    src = picks["large_quadcopters"][1]
    with Image.open(src) as img:
        small = img.convert("RGB").resize((img.width // 2, img.height // 2))
        buf = io.BytesIO()
        small.save(buf, format="JPEG", quality=60)
    plant("large_quadcopters/smaller_copy.jpg", buf.getvalue(), "near_duplicate")
    planted[f"large_quadcopters/{src.name}"] = "near_duplicate"
    clean.remove(f"large_quadcopters/{src.name}")
    spare_bird = shared_images("flying_birds", 5, "bisky_")[4]  # not in the set
    with Image.open(spare_bird) as img:
        buf = io.BytesIO()
        img.convert("RGB").resize((5000, 40)).save(buf, format="JPEG", quality=85)
    plant("flying_birds/strip.jpg", buf.getvalue(), "extreme_aspect")
    # a real defect of the shared set: WebP bytes named .jpg
    webp = "flying_birds/bisky_Flying_Birds_10.jpg"
    planted[webp] = "extension_mismatch"
    clean.remove(webp)
    return Fixture(root, tuple(sorted(clean)), planted)


@pytest.fixture
def fixture_set(tmp_path: Path) -> Fixture:
    return build_fixture(tmp_path / "photos")


def snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every entry under root: sha256 (files), mtime_ns and mode; the listing is the key set."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            out[p.relative_to(root).as_posix()] = (digest, st.st_mtime_ns, st.st_mode)
    st = root.stat()
    out["."] = ("dir", st.st_mtime_ns, st.st_mode)
    return out
