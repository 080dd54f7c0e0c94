"""Blob storage for enrollment packages: a local folder (embedded default) or S3-compatible
object storage, behind one interface (:class:`BlobStore`). See docs/registry-storage.md.

``S3BlobStore`` lives in :mod:`central.blobs.s3` (it imports boto3); ``make_blob_store``
picks the backend from :class:`BlobSettings`.
"""

from central.blobs.base import (
    BlobConflict,
    BlobCorrupt,
    BlobError,
    BlobInfo,
    BlobIntegrityError,
    BlobNotFound,
    BlobStore,
    InvalidBlobKey,
    check_key,
)
from central.blobs.local import LocalBlobStore
from central.blobs.settings import BlobSettings, make_blob_store

__all__ = [
    "BlobConflict",
    "BlobCorrupt",
    "BlobError",
    "BlobInfo",
    "BlobIntegrityError",
    "BlobNotFound",
    "BlobSettings",
    "BlobStore",
    "InvalidBlobKey",
    "LocalBlobStore",
    "check_key",
    "make_blob_store",
]
