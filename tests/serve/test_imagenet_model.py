"""The ImageNet-1k model folder served beside the flagship (issue 9), once it has been exported."""

from __future__ import annotations

import warnings

import pytest

from skyclass.serve.app import create_app
from skyclass.serve.predictor import Predictor
from skyclass.serve.registry import ModelRegistry, ModelSource
from tests.conftest import BUNDLED_MODEL, REPO_ROOT, shared_images

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

IMAGENET = REPO_ROOT / "models" / "imagenet-mobilenet-v2"

pytestmark = pytest.mark.skipif(
    not (IMAGENET / "model.json").is_file(),
    reason="models/imagenet-mobilenet-v2 has not been exported yet",
)


def test_both_models_from_one_app() -> None:
    registry = ModelRegistry([ModelSource.local(BUNDLED_MODEL), ModelSource.local(IMAGENET)])
    client = TestClient(create_app(registry))
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    imagenet = models["imagenet-mobilenet-v2"]
    assert imagenet["classes"] == 1000 and imagenet["labels"] is None
    alone = Predictor(BUNDLED_MODEL)
    for path in shared_images("flying_birds", 2, "fod_"):
        data = path.read_bytes()
        top5 = client.post("/classify/imagenet-mobilenet-v2", content=data).json()
        assert len(top5["probabilities"]) == 5
        assert top5["model"]["name"] == "imagenet-mobilenet-v2"
        flagship = client.post("/classify", content=data).json()
        assert flagship == alone.predict(data).to_dict()
