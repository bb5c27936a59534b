"""Fixtures for the deploy tests: a real S3-compatible server (moto) on loopback, model archives."""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import BUNDLED_MODEL

BUCKET = "skyclass-test-models"
# Dummy credentials for the loopback S3 server only; nothing here reaches AWS.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    endpoint: str
    bucket: str

    def client(self, **kwargs: str):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", **kwargs)

    def get_object_count(self) -> int:
        """How many GetObject requests the server has answered (from moto's request log)."""
        return len(self.requests("GET"))

    def requests(self, method: str) -> list[str]:
        return [line for line in _REQUEST_LOG if line.startswith(method + " ")]


_REQUEST_LOG: list[str] = []


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's standalone server on 127.0.0.1 (a free port), with one bucket; stopped at the end."""
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original_call = DomainDispatcherApplication.__call__

    def logging_call(self, environ, start_response):
        if not environ.get("PATH_INFO", "").startswith("/moto-api"):
            _REQUEST_LOG.append(f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO')}")
        return original_call(self, environ, start_response)

    DomainDispatcherApplication.__call__ = logging_call
    saved = {k: os.environ.get(k) for k in FAKE_AWS_ENV}
    os.environ.update(FAKE_AWS_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = S3Server(endpoint=f"http://{host}:{port}", bucket=BUCKET)
    s3.client().create_bucket(Bucket=BUCKET)
    try:
        yield s3
    finally:
        server.stop()
        DomainDispatcherApplication.__call__ = original_call
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture()
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point boto3 at the loopback server the way a user would: AWS_ENDPOINT_URL_S3 only."""
    for key, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint)
    _REQUEST_LOG.clear()
    return s3_server


@dataclass(frozen=True)
class Archive:
    path: Path
    sha256: str


@pytest.fixture(scope="session")
def model_archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """The bundled model folder as the tar.gz users upload."""
    from deploy.model_archive import make_model_archive

    out = tmp_path_factory.mktemp("archive") / "flying-objects.tar.gz"
    return Archive(out, make_model_archive(BUNDLED_MODEL, out))


@pytest.fixture()
def readonly_dir(tmp_path: Path) -> Path:
    """A folder this process cannot write into (chmod as a user; a read-only mount as root)."""
    candidate = tmp_path / "readonly"
    candidate.mkdir()
    candidate.chmod(0o555)
    try:
        tempfile.mkdtemp(dir=candidate)
    except OSError:
        return candidate / "skyclass-models"
    candidate.chmod(0o755)
    # root ignores modes: /sys is mounted read-only in containers (as /var/task is on Lambda).
    sys_dir = Path("/sys/skyclass-models")
    try:
        sys_dir.mkdir()
    except OSError:
        return sys_dir
    sys_dir.rmdir()
    pytest.fail("no read-only folder to test with on this machine")
