"""predict() on real shared photos, through the bundled model folder."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from skyclass.core.errors import CorruptImage, EmptyImage, ImageTooLarge, NotAnImage
from skyclass.core.predictor import Predictor
from skyclass.serve.registry import ModelRegistry, ModelSource
from tests.conftest import BUNDLED_MODEL, CLASSES, shared_images
from tests.serve.support import SECOND_LABELS, needs_trained_model


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor(BUNDLED_MODEL)


@pytest.mark.parametrize("kind", ["bird", "large_quad", "winged_png", "winged"])
def test_predict_real_photo(predictor: Predictor, photos: dict[str, Path], kind: str) -> None:
    data = photos[kind].read_bytes()
    first = predictor.predict(data)
    labels = predictor.labels
    assert first.label in labels
    # The flagship has 4 classes: every class comes back, best first, summing to 1.
    assert list(first.probabilities) == sorted(
        first.probabilities, key=first.probabilities.get, reverse=True
    )
    assert set(first.probabilities) == set(labels)
    assert math.isclose(sum(first.probabilities.values()), 1.0, abs_tol=1e-5)
    assert first.confidence == max(first.probabilities.values())
    assert first.label == next(iter(first.probabilities))
    assert first.model.name == "flying-objects"
    assert len(first.model.sha256) == 64
    again = predictor.predict(data)
    assert again == first  # deterministic, to the last bit


def test_labels_come_from_the_model_folder(predictor: Predictor) -> None:
    assert predictor.labels == CLASSES


def test_predict_bad_bytes(predictor: Predictor, photos: dict[str, Path]) -> None:
    jpeg = photos["large_quad"].read_bytes()
    with pytest.raises(EmptyImage):
        predictor.predict(b"")
    with pytest.raises(NotAnImage):
        predictor.predict(b"<html>not an image</html>")
    with pytest.raises(CorruptImage):
        predictor.predict(jpeg[: len(jpeg) // 2])
    small = Predictor(BUNDLED_MODEL, limits=predictor.limits.__class__(max_pixels=1_000_000))
    with pytest.raises(ImageTooLarge):  # 1200x1600 is 1.9 MP
        small.predict(jpeg)


def test_second_model_top_k(second_model: Path, photos: dict[str, Path]) -> None:
    other = Predictor(second_model)
    answer = other.predict(photos["bird"].read_bytes())
    assert other.labels == SECOND_LABELS
    assert len(answer.probabilities) == 5  # model.json top_k
    assert set(answer.probabilities) <= set(SECOND_LABELS)
    assert len(other.predict(photos["bird"].read_bytes(), top_k=24).probabilities) == 24


def test_registry_flagship_unchanged_by_second_model(
    second_model: Path, predictor: Predictor
) -> None:
    both = ModelRegistry([ModelSource.local(BUNDLED_MODEL), ModelSource.local(second_model)])
    for path in shared_images("large_quadcopters", 3, "cropspray_"):
        data = path.read_bytes()
        both.get("second-test-model").predict(data)
        assert both.get().predict(data) == predictor.predict(data)


@needs_trained_model
@pytest.mark.parametrize(
    ("cls", "prefix"),
    [
        ("flying_birds", "fod_"),
        ("large_quadcopters", "cropspray_"),
        ("winged_drones", "px4ug_vtol"),
    ],
)
def test_trained_model_gets_easy_photos_right(predictor: Predictor, cls: str, prefix: str) -> None:
    photos = shared_images(cls, 5, prefix)
    right = sum(predictor.predict(p.read_bytes()).label == cls for p in photos)
    assert right >= 4, f"{right}/5 {prefix} photos classified as {cls}"
