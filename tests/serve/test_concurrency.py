"""The app computes at most ``max_concurrency`` predictions at once; the other requests wait."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest

from skyclass.core.predictor import Predictor
from skyclass.serve.app import create_app
from skyclass.serve.registry import ModelRegistry
from skyclass.serve.settings import ServeSettings, SettingsError
from tests.conftest import BUNDLED_MODEL
from tests.serve.support import fixture_image


class Watching(Predictor):
    """The real predictor, recording how many predictions overlap."""

    lock = threading.Lock()
    running = 0
    most = 0

    def predict(self, image_bytes: bytes, top_k: int | None = None, **options: Any) -> Any:
        cls = type(self)
        with cls.lock:
            cls.running += 1
            cls.most = max(cls.most, cls.running)
        try:
            time.sleep(0.05)  # long enough for the other requests to arrive meanwhile
            return super().predict(image_bytes, top_k, **options)
        finally:
            with cls.lock:
                cls.running -= 1


@pytest.mark.parametrize("limit", [1, 2])
def test_predictions_never_exceed_the_limit(limit: int) -> None:
    Watching.running = Watching.most = 0
    settings = ServeSettings(model_dirs=(BUNDLED_MODEL,), max_concurrency=limit)
    app = create_app(ModelRegistry.from_settings(settings, factory=Watching), settings)
    photo = fixture_image("bisky_").read_bytes()

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            replies = await asyncio.gather(
                *(
                    client.post("/classify", content=photo, headers={"content-type": "image/jpeg"})
                    for _ in range(8)
                )
            )
        return [r.status_code for r in replies]

    assert asyncio.run(burst()) == [200] * 8
    assert Watching.most == limit


def test_limit_is_checked_and_read_from_the_environment() -> None:
    with pytest.raises(SettingsError, match="max_concurrency"):
        ServeSettings(max_concurrency=0)
    env = {"SKYCLASS_MODELS": str(BUNDLED_MODEL), "SKYCLASS_MAX_CONCURRENCY": "3"}
    assert ServeSettings.from_env(env).concurrency == 3
