"""Serving fixtures: real photos, a second real model folder, a real uvicorn server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import BUNDLED_MODEL, DATA_ROOT, shared_images
from tests.serve.support import SECOND_MODEL, build_second_model, start_server, stop_server


@pytest.fixture(scope="session")
def photos(data_root: Path) -> dict[str, Path]:
    """Real shared photos, one per kind we need (read in place)."""
    return {
        "bird": shared_images("flying_birds", 1, "fod_")[0],
        "large_quad": shared_images("large_quadcopters", 1, "cropspray_")[0],  # 1200x1600 JPEG
        "winged_png": DATA_ROOT / "winged_drones" / "px4ug_fw_turbo_timber_evolution_field.png",
        "winged": shared_images("winged_drones", 1, "px4ug_vtol")[0],
    }


@pytest.fixture(scope="session")
def second_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_second_model(tmp_path_factory.mktemp("models") / SECOND_MODEL)


@pytest.fixture(scope="session")
def server(second_model: Path, data_root: Path) -> Iterator[str]:
    """A real uvicorn server on 127.0.0.1 (free port): the flagship (default), a second model."""
    proc, url = start_server(
        "--model", str(BUNDLED_MODEL), "--model", str(second_model), "--cors-origin", "*"
    )
    try:
        yield url
    finally:
        stop_server(proc)
        assert proc.returncode is not None


@pytest.fixture()
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as client:
        yield client
