"""fetch_model_archive against a real S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.request
from pathlib import Path

import pytest

from deploy.model_archive import make_model_archive
from skyclass.core.bundle import load_bundle, sha256_file
from skyclass.core.errors import ModelUnavailable
from skyclass.core.predictor import Predictor
from skyclass.serve.s3 import fetch_model_archive, parse_s3_uri
from tests.conftest import BUNDLED_MODEL, shared_images
from tests.deploy.conftest import Archive, S3Server, free_port


def upload(s3: S3Server, key: str, data: bytes | Path) -> str:
    body = data.read_bytes() if isinstance(data, Path) else data
    s3.client().put_object(Bucket=s3.bucket, Key=key, Body=body)
    return f"s3://{s3.bucket}/{key}"


def test_archive_is_reproducible_and_holds_the_model_folder(tmp_path: Path, model_archive: Archive):
    again = make_model_archive(BUNDLED_MODEL, tmp_path / "again.tar.gz")
    assert again == model_archive.sha256 == sha256_file(model_archive.path)
    with tarfile.open(model_archive.path) as tar:
        names = tar.getnames()
    assert "flying-objects/model.json" in names
    assert "flying-objects/model.onnx" in names
    assert all(n == "flying-objects" or n.startswith("flying-objects/") for n in names)


def test_download_once_then_cache_without_any_s3_request(
    s3_env: S3Server, model_archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    uri = upload(s3_env, "models/flying-objects.tar.gz", model_archive.path)
    s3_env.requests("PUT")  # the upload itself is not counted below
    before = s3_env.get_object_count()
    cache = tmp_path / "cache"

    root = fetch_model_archive(uri, model_archive.sha256, cache)

    assert s3_env.get_object_count() == before + 1
    assert root.parent.parent == cache and root.name == "flying-objects"
    bundle = load_bundle(root)
    assert sha256_file(root / "model.onnx") == bundle.sha256("fp32")
    source = json.loads((root.parent / ".skyclass-source.json").read_text())
    assert source["sha256"] == model_archive.sha256 and source["uri"] == uri
    assert [p.name for p in cache.iterdir()] == [root.parent.name]  # no temp dirs left

    # A second call (same process or a restarted one) must not touch S3 at all: point the
    # endpoint at a closed port, so any request would fail.
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    assert fetch_model_archive(uri, model_archive.sha256, cache) == root
    assert s3_env.get_object_count() == before + 1

    # The extracted model really classifies a real photo.
    photo = shared_images("flying_birds", 1)[0]
    prediction = Predictor(root).predict(photo.read_bytes())
    assert prediction.label in bundle.labels
    assert prediction.model.sha256 == bundle.sha256("fp32")


def test_generic_endpoint_variable_is_honoured_by_boto3(
    s3_env: S3Server, model_archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    uri = upload(s3_env, "generic/model.tar.gz", model_archive.path)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_env.endpoint)
    root = fetch_model_archive(uri, None, tmp_path)
    assert (root / "model.json").is_file()
    assert s3_env.get_object_count() == 1


def test_wrong_sha256_is_refused_and_nothing_cached(
    s3_env: S3Server, model_archive: Archive, tmp_path: Path
):
    uri = upload(s3_env, "models/wrong-hash.tar.gz", model_archive.path)
    wrong = "0" * 64
    with pytest.raises(ModelUnavailable, match="sha256 mismatch") as info:
        fetch_model_archive(uri, wrong, tmp_path)
    assert model_archive.sha256 in str(info.value)
    assert list(tmp_path.iterdir()) == []
    # the right hash then works, with a second download (the refused one was not kept)
    assert (
        fetch_model_archive(uri, model_archive.sha256.upper(), tmp_path) / "model.json"
    ).is_file()
    assert s3_env.get_object_count() == 2


def test_absent_object_and_bucket(s3_env: S3Server, tmp_path: Path):
    with pytest.raises(ModelUnavailable, match="model archive not found: s3://"):
        fetch_model_archive(f"s3://{s3_env.bucket}/nope.tar.gz", None, tmp_path)
    with pytest.raises(ModelUnavailable, match="bucket not found"):
        fetch_model_archive("s3://no-such-bucket-here/model.tar.gz", None, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_endpoint(s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ModelUnavailable, match="could not read s3://"):
        fetch_model_archive(f"s3://{s3_env.bucket}/x.tar.gz", None, tmp_path)


def test_access_denied_by_iam(
    s3_env: S3Server, model_archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A user with no s3:GetObject on the object: moto enforces IAM once auth is switched on."""
    uri = upload(s3_env, "models/private.tar.gz", model_archive.path)
    import boto3

    iam = boto3.client("iam", endpoint_url=s3_env.endpoint, region_name="us-east-1")
    iam.create_user(UserName="no-read")
    key = iam.create_access_key(UserName="no-read")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN")

    def set_auth(count: str) -> None:
        req = urllib.request.Request(
            f"{s3_env.endpoint}/moto-api/reset-auth",
            data=count.encode(),
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(req, timeout=10).read()

    set_auth("0")
    try:
        with pytest.raises(ModelUnavailable, match=r"access denied reading s3://.*s3:GetObject"):
            fetch_model_archive(uri, None, tmp_path)
    finally:
        set_auth("inf")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "uri",
    ["", "http://bucket/key.tar.gz", "s3://bucket", "s3://bucket/", "s3:///key", "s3://B!/k.tgz"],
)
def test_bad_uri(uri: str, tmp_path: Path):
    with pytest.raises(ModelUnavailable, match="MODEL_S3_URI must look like"):
        fetch_model_archive(uri, None, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bad_sha256_setting(tmp_path: Path):
    with pytest.raises(ModelUnavailable, match="64 hex digits"):
        fetch_model_archive("s3://bucket/key.tar.gz", "abc", tmp_path)
    assert parse_s3_uri("s3://my.bucket-1/a/b.tar.gz") == ("my.bucket-1", "a/b.tar.gz")


def test_read_only_cache_dir(s3_env: S3Server, model_archive: Archive, readonly_dir: Path):
    uri = upload(s3_env, "models/ro.tar.gz", model_archive.path)
    with pytest.raises(ModelUnavailable, match="cannot write the model cache"):
        fetch_model_archive(uri, model_archive.sha256, readonly_dir)


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, target: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


MANIFEST_OK = _file("m/model.json", (BUNDLED_MODEL / "model.json").read_bytes())


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_file("../escape.txt"), "path outside"),
        (_file("m/../../escape.txt"), "path outside"),
        (_file("/tmp/skyclass-absolute.txt"), "absolute path"),
        (_special("m/link", tarfile.SYMTYPE, "/etc/passwd"), "link"),
        (_special("m/hard", tarfile.LNKTYPE, "m/model.json"), "link"),
        (_special("m/dev", tarfile.CHRTYPE), "not a regular file"),
        (_special("m/fifo", tarfile.FIFOTYPE), "not a regular file"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink", "hardlink", "device", "fifo"],
)
def test_unsafe_archive_members_are_refused(
    s3_env: S3Server, tmp_path: Path, member: tuple[tarfile.TarInfo, bytes | None], reason: str
):
    uri = upload(
        s3_env, f"bad/{member[0].name.replace('/', '_')}.tar.gz", _tar([MANIFEST_OK, member])
    )
    cache = tmp_path / "cache"
    with pytest.raises(ModelUnavailable, match=f"unsafe model archive: .* is a {reason}"):
        fetch_model_archive(uri, None, cache)
    assert list(cache.iterdir()) == []
    assert not (tmp_path / "escape.txt").exists()
    assert not Path("/tmp/skyclass-absolute.txt").exists()


def test_not_a_tarball_and_no_model_inside(s3_env: S3Server, tmp_path: Path):
    garbage = upload(s3_env, "bad/garbage.tar.gz", b"\x1f\x8b not really gzip" * 10)
    with pytest.raises(ModelUnavailable, match=r"not a valid tar\.gz"):
        fetch_model_archive(garbage, None, tmp_path)
    empty = upload(s3_env, "bad/nomodel.tar.gz", _tar([_file("readme.txt")]))
    with pytest.raises(ModelUnavailable, match="holds no model folder"):
        fetch_model_archive(empty, None, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_oversized_archive_is_refused(
    s3_env: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import skyclass.serve.s3 as s3mod

    monkeypatch.setattr(s3mod, "MAX_EXTRACTED_BYTES", 1000)
    uri = upload(s3_env, "bad/big.tar.gz", _tar([MANIFEST_OK, _file("m/big.bin", b"\0" * 5000)]))
    with pytest.raises(ModelUnavailable, match="too large"):
        fetch_model_archive(uri, None, tmp_path)
    assert list(tmp_path.iterdir()) == []
