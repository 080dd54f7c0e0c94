"""Which blob store a registry process uses: a small model for the process's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from central.blobs.base import BlobStore
from central.blobs.local import LocalBlobStore

MIB = 1024 * 1024


class BlobSettings(BaseModel):
    """The ``blobs`` section of the registry's settings.

    ``backend="local"`` (the embedded default) keeps blobs under ``path``; ``backend="s3"``
    in ``bucket`` under ``prefix`` on ``endpoint_url`` (None: AWS itself). Leave
    ``access_key_id`` / ``secret_access_key`` unset to use boto3's own chain (the
    ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` environment, an instance role, ...);
    set them through the registry's settings environment, never in a committed file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["local", "s3"] = "local"
    path: Path = Path("data/registry/blobs")
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    connect_timeout: float = Field(5.0, gt=0)
    read_timeout: float = Field(30.0, gt=0)
    max_attempts: int = Field(5, ge=1)
    multipart_threshold: int = Field(8 * MIB, ge=1)
    part_size: int = Field(8 * MIB, ge=5 * MIB)
    conditional_put: bool = True
    transfer_checksums: bool = True

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> BlobSettings:
        if self.backend == "s3" and not self.bucket:
            raise ValueError("blobs.bucket is required when blobs.backend is 's3'")
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("set both blobs.access_key_id and blobs.secret_access_key, or neither")
        return self


def make_blob_store(settings: BlobSettings) -> BlobStore:
    """The blob store ``settings`` describe."""
    if settings.backend == "local":
        return LocalBlobStore(settings.path)
    from central.blobs.s3 import S3BlobStore  # boto3 only where S3 is used

    assert settings.bucket is not None
    return S3BlobStore(
        settings.bucket,
        prefix=settings.prefix,
        endpoint_url=settings.endpoint_url,
        region=settings.region,
        access_key_id=(
            settings.access_key_id.get_secret_value() if settings.access_key_id else None
        ),
        secret_access_key=(
            settings.secret_access_key.get_secret_value() if settings.secret_access_key else None
        ),
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        max_attempts=settings.max_attempts,
        multipart_threshold=settings.multipart_threshold,
        part_size=settings.part_size,
        conditional_put=settings.conditional_put,
        transfer_checksums=settings.transfer_checksums,
    )
