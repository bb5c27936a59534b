"""ModelRegistry: lazy, once per process, thread-safe, failures retried and reported."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from skyclass.core.errors import ModelUnavailable
from skyclass.core.predictor import Predictor
from skyclass.serve.registry import ModelRegistry, ModelSource, UnknownModel, public_reason
from skyclass.serve.settings import ServeSettings
from tests.conftest import BUNDLED_MODEL


class Counting:
    """A Predictor factory that counts real loads."""

    def __init__(self) -> None:
        self.calls: list[Path] = []
        self.lock = threading.Lock()

    def __call__(self, folder: Path, **kwargs: Any) -> Predictor:
        with self.lock:
            self.calls.append(Path(folder))
        return Predictor(folder, **kwargs)


def test_sources_are_named_by_model_json(second_model: Path, tmp_path: Path) -> None:
    assert ModelSource.local(BUNDLED_MODEL).name == "flying-objects"
    assert ModelSource.local(second_model).name == "second-test-model"
    assert ModelSource.local(tmp_path / "missing-model").name == "missing-model"
    assert ModelSource.s3("s3://b/models/flying-objects.tar.gz").name == "flying-objects"


def test_lazy_and_loaded_once_across_threads(second_model: Path) -> None:
    factory = Counting()
    registry = ModelRegistry(
        [ModelSource.local(BUNDLED_MODEL), ModelSource.local(second_model)], factory=factory
    )
    assert factory.calls == []  # nothing loaded by construction
    assert [s.state for s in registry.status()] == ["not_loaded", "not_loaded"]
    got: list[Predictor] = []
    threads = [threading.Thread(target=lambda: got.append(registry.get())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(factory.calls) == 1 and len({id(p) for p in got}) == 1
    assert registry.get("flying-objects") is got[0]
    states = {s.name: s for s in registry.status()}
    assert states["flying-objects"].state == "loaded" and states["flying-objects"].loads == 1
    assert states["second-test-model"].state == "not_loaded"  # non-default stays unloaded
    registry.get("second-test-model")
    assert len(factory.calls) == 2


def test_unknown_model() -> None:
    registry = ModelRegistry([ModelSource.local(BUNDLED_MODEL)])
    with pytest.raises(UnknownModel, match="no model named 'nope'; served: flying-objects"):
        registry.get("nope")


def test_duplicate_names_and_bad_default(second_model: Path) -> None:
    with pytest.raises(ValueError, match="two models"):
        ModelRegistry([ModelSource.local(BUNDLED_MODEL), ModelSource.local(BUNDLED_MODEL)])
    with pytest.raises(ValueError, match="default model 'x'"):
        ModelRegistry([ModelSource.local(BUNDLED_MODEL)], default="x")


def test_failure_is_raised_each_time_and_retried(tmp_path: Path) -> None:
    broken = tmp_path / "flaky-model"
    shutil.copytree(BUNDLED_MODEL, broken)
    onnx = broken / "model.onnx"
    good = onnx.read_bytes()
    onnx.write_bytes(good[:1000])  # truncated: sha256 mismatch
    factory = Counting()
    registry = ModelRegistry([ModelSource.local(broken)], factory=factory)
    for _ in range(2):
        with pytest.raises(ModelUnavailable, match="does not match its sha256"):
            registry.get()
    (status,) = registry.status()
    assert status.state == "failed" and "sha256" in (status.error or "")
    assert str(tmp_path) not in (status.error or "")
    onnx.write_bytes(good)  # repaired: the next request loads it
    assert registry.get().bundle.name == "flying-objects"
    (status,) = registry.status()
    assert status.state == "loaded" and status.error is None and status.loads == 3


def test_missing_folder_reason_has_no_path(tmp_path: Path) -> None:
    registry = ModelRegistry([ModelSource.local(tmp_path / "gone" / "my-model")])
    with pytest.raises(ModelUnavailable) as info:
        registry.get()
    assert "model folder not found: my-model" in str(info.value)
    assert str(tmp_path) not in str(info.value)


def test_public_reason_cuts_paths() -> None:
    assert public_reason("not a model folder (no model.json): /var/task/models/x") == (
        "not a model folder (no model.json): x"
    )
    assert public_reason("plain words stay") == "plain words stay"


def test_variant_without_a_file_is_unavailable() -> None:
    registry = ModelRegistry([ModelSource.local(BUNDLED_MODEL)], variant="int8")
    if "int8" in registry.bundle().files:  # the exported model has one
        assert registry.get().variant == "int8"
    else:
        with pytest.raises(ModelUnavailable, match="no int8 file"):
            registry.get()


def test_s3_source_uses_fetch_model_archive(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import skyclass.serve.s3 as s3

    calls: list[tuple[str, str | None, Path | None]] = []

    def fake_fetch(uri: str, sha256: str | None, cache_dir: Path | None = None) -> Path:
        calls.append((uri, sha256, cache_dir))
        return BUNDLED_MODEL

    monkeypatch.setattr(s3, "fetch_model_archive", fake_fetch)
    settings = ServeSettings.from_env(
        {
            "MODEL_S3_URI": "s3://bucket/models/flying-objects.tar.gz",
            "MODEL_SHA256": "cd" * 32,
            "SKYCLASS_MODEL_CACHE": str(tmp_path),
        }
    )
    registry = ModelRegistry.from_settings(settings)
    assert registry.names == ("flying-objects",)
    assert registry.bundle() is None  # unknown until downloaded; /models must not download
    assert calls == []
    registry.get()
    registry.get()
    assert calls == [("s3://bucket/models/flying-objects.tar.gz", "cd" * 32, tmp_path)]


def test_s3_failure_is_a_model_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import skyclass.serve.s3 as s3

    def absent(uri: str, sha256: str | None, cache_dir: Path | None = None) -> Path:
        raise ModelUnavailable(f"model archive not found: {uri}")

    monkeypatch.setattr(s3, "fetch_model_archive", absent)
    registry = ModelRegistry([ModelSource.s3("s3://bucket/m.tar.gz")])
    with pytest.raises(ModelUnavailable, match="model 'm' is unavailable: model archive not found"):
        registry.get()
    assert registry.status()[0].state == "failed"
