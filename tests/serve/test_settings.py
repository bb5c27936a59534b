"""Serving settings: where the default model is found, and the environment's parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyclass.serve.settings import (
    MAX_BODY_BYTES,
    ServeSettings,
    SettingsError,
    default_model_dir,
)
from tests.conftest import BUNDLED_MODEL, REPO_ROOT


def _model(root: Path) -> Path:
    folder = root / "models" / "flying-objects"
    folder.mkdir(parents=True)
    (folder / "model.json").write_text("{}")
    return folder


def test_default_model_dir_prefers_the_cwd(tmp_path: Path) -> None:
    cwd_model = _model(tmp_path / "clone")
    package = tmp_path / "task" / "skyclass"
    package.mkdir(parents=True)
    _model(tmp_path / "task")
    assert default_model_dir(cwd=tmp_path / "clone", package_dir=package) == cwd_model


def test_default_model_dir_in_a_lambda_artifact(tmp_path: Path) -> None:
    # /var/task/skyclass (the package) beside /var/task/models
    package = tmp_path / "var" / "task" / "skyclass"
    package.mkdir(parents=True)
    bundled = _model(tmp_path / "var" / "task")
    assert default_model_dir(cwd=tmp_path, package_dir=package) == bundled


def test_default_model_dir_of_an_editable_install(tmp_path: Path) -> None:
    package = tmp_path / "repo" / "src" / "skyclass"
    package.mkdir(parents=True)
    bundled = _model(tmp_path / "repo")
    assert default_model_dir(cwd=tmp_path / "elsewhere", package_dir=package) == bundled


def test_default_model_dir_names_the_cwd_candidate_when_none_exists(tmp_path: Path) -> None:
    package = tmp_path / "site-packages" / "skyclass"
    package.mkdir(parents=True)
    found = default_model_dir(cwd=tmp_path, package_dir=package)
    assert found == tmp_path / "models" / "flying-objects"


def test_default_model_dir_of_this_checkout(tmp_path: Path) -> None:
    # From an unrelated cwd, this editable install still finds the repo's bundled model.
    assert default_model_dir(cwd=tmp_path).resolve() == BUNDLED_MODEL.resolve()
    assert default_model_dir(cwd=REPO_ROOT) == REPO_ROOT / "models" / "flying-objects"


def test_from_env_defaults() -> None:
    settings = ServeSettings.from_env({})
    assert settings.model_dirs == (default_model_dir(),)
    assert settings.cors_origins == ("*",)
    assert settings.max_body_bytes == MAX_BODY_BYTES == 6 * 1024 * 1024
    assert settings.variant is None and settings.s3_uri is None
    assert settings.limits.max_bytes == MAX_BODY_BYTES


def test_from_env_values(tmp_path: Path) -> None:
    env = {
        "SKYCLASS_MODELS": f" {tmp_path / 'a'} , {tmp_path / 'b'},",
        "SKYCLASS_VARIANT": "int8",
        "SKYCLASS_CORS_ORIGINS": "https://a.example, https://b.example",
        "SKYCLASS_MAX_BODY_BYTES": "1000",
        "SKYCLASS_TOP_K": "3",
        "SKYCLASS_DEFAULT_MODEL": "b",
        "MODEL_S3_URI": "s3://bucket/models/x.tar.gz",
        "MODEL_SHA256": "ab" * 32,
    }
    settings = ServeSettings.from_env(env)
    assert settings.model_dirs == (tmp_path / "a", tmp_path / "b")
    assert settings.variant == "int8"
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.max_body_bytes == 1000 and settings.top_k == 3
    assert settings.default_model == "b"
    assert settings.s3_uri == "s3://bucket/models/x.tar.gz" and settings.s3_sha256 == "ab" * 32


def test_s3_alone_replaces_the_bundled_model() -> None:
    settings = ServeSettings.from_env({"MODEL_S3_URI": "s3://bucket/m.tar.gz"})
    assert settings.model_dirs == ()


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"SKYCLASS_VARIANT": "fp16"}, "variant"),
        ({"SKYCLASS_MAX_BODY_BYTES": "6MB"}, "SKYCLASS_MAX_BODY_BYTES"),
        ({"SKYCLASS_TOP_K": "0"}, "top_k"),
    ],
)
def test_from_env_rejects_bad_values(env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError, match=words):
        ServeSettings.from_env(env)
