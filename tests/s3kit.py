"""An S3-compatible server for the registry tests: moto in server mode, over real HTTP.

No MinIO can be installed here; ``moto[server]`` is the available emulator. One server per
test session on a free port of 127.0.0.1, stopped at the end; each test takes its own bucket
(:meth:`S3Server.new_bucket`). Dummy credentials come from the environment the fixture sets,
with the shared config and credentials files pointed at /dev/null, so nothing reads ~/.aws
and nothing can reach AWS. Use it in a test module with ``s3_server = s3kit.s3_server``.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing-secret"
REGION = "us-east-1"

_DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_CLEARED_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL")


@dataclass
class S3Server:
    """Where the server listens and how to reach it."""

    endpoint_url: str
    access_key_id: str = ACCESS_KEY_ID
    secret_access_key: str = SECRET_ACCESS_KEY
    region: str = REGION
    _names: Iterator[int] = field(default_factory=itertools.count)
    _session: Any = None
    _admin: Any = None

    def session(self) -> Any:
        """One boto3 session for the test session: its clients share the loaded models."""
        if self._session is None:
            import boto3

            self._session = boto3.session.Session()
        return self._session

    def client(self) -> Any:
        """A fresh boto3 S3 client for this server (short timeouts, standard retries)."""
        from central.blobs.s3 import make_s3_client

        return make_s3_client(
            endpoint_url=self.endpoint_url,
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            connect_timeout=2.0,
            read_timeout=10.0,
            max_attempts=2,
            session=self.session(),
        )

    def new_bucket(self) -> str:
        """Create and return an empty bucket no other test uses."""
        name = f"test-bucket-{next(self._names):04d}"
        if self._admin is None:
            self._admin = self.client()
        self._admin.create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as env:
        for name, value in _DUMMY_ENV.items():
            env.setenv(name, value)
        for name in _CLEARED_ENV:
            env.delenv(name, raising=False)
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            yield S3Server(endpoint_url=f"http://{host}:{port}")
        finally:
            server.stop()
