"""The ImageNet-1k model folder served beside the flagship, once it has been exported."""

from __future__ import annotations

import json
import warnings

import pytest

from skyclass.core.predictor import Predictor
from skyclass.serve.app import create_app
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


# What the real ImageNet MobileNetV2 answers for real shared photos (measured, not wished for).
IMAGENET_LABELS_BIRDS = (range(7, 25), range(80, 101), range(127, 147))  # ImageNet's bird classes


def _birds(labels: tuple[str, ...]) -> set[str]:
    return {labels[i] for r in IMAGENET_LABELS_BIRDS for i in r}


@pytest.fixture(scope="module")
def imagenet() -> Predictor:
    return Predictor(IMAGENET)


def _shared(cls: str, name_start: str) -> bytes:
    return next(p for p in shared_images(cls, 500) if p.name.startswith(name_start)).read_bytes()


def test_a_bird_photo_gets_bird_classes(imagenet: Predictor) -> None:
    # An unsplash gull over the sea: albatross first, and all of its top 5 but one are birds.
    answer = imagenet.predict(_shared("flying_birds", "fod_a-n-v-e-s-h"))
    assert answer.label == "albatross"
    assert len(set(answer.probabilities) & _birds(imagenet.labels)) >= 3


def test_a_quadcopter_in_the_sky_gets_aircraft_classes(imagenet: Predictor) -> None:
    # A DJI Phantom against the sky: ImageNet has no drone class; the model says warplane first,
    # with airliner in its top 5. (A crop-sprayer drone on the ground gets 'bow': no aircraft.)
    answer = imagenet.predict(_shared("small_quadcopters", "dronenet_03012017-dji-phantom"))
    assert answer.label == "warplane"
    assert "airliner" in answer.probabilities


def test_both_models_answer_from_one_lambda_container() -> None:
    from skyclass.serve.handler import build_handler
    from skyclass.serve.settings import ServeSettings
    from tests.events.make_events import multipart, v1, v2

    settings = ServeSettings(model_dirs=(BUNDLED_MODEL, IMAGENET))
    handler = build_handler(settings, ModelRegistry.from_settings(settings))
    photo = _shared("flying_birds", "fod_a-n-v-e-s-h")
    body = multipart("file", "gull.jpg", "image/jpeg", photo)
    ctype = "multipart/form-data; boundary=" + body.split(b"\r\n", 1)[0][2:].decode()
    flagship = json.loads(handler(v1("POST", "/classify", body, ctype, True), None)["body"])
    other = json.loads(
        handler(v2("POST", "/classify/imagenet-mobilenet-v2", body, ctype, True), None)["body"]
    )
    assert flagship == Predictor(BUNDLED_MODEL).predict(photo).to_dict()
    assert other["model"]["name"] == "imagenet-mobilenet-v2" and other["label"] == "albatross"
