"""Blobs in S3-compatible object storage, over the plain S3 API (boto3).

Operations used: PutObject, CreateMultipartUpload / UploadPart / CompleteMultipartUpload /
AbortMultipartUpload, ListMultipartUploads, HeadObject, GetObject, DeleteObject,
ListObjectsV2.

- The content is first read once, in chunks, into a spool file (memory up to 1 MiB, disk
  above) while its sha256 is computed: a mismatch with the expected sha256 is refused before
  anything is sent, and the sha256 is known before the upload starts.
- The whole-content sha256 is stored as user metadata ``x-amz-meta-sha256`` (hex). That works
  on every S3-compatible server and for multipart objects, whose ``x-amz-checksum-sha256``
  is a checksum of part checksums, not of the content. Reads are checked against it.
- With ``transfer_checksums`` (default) each PutObject / UploadPart also carries
  ``x-amz-checksum-sha256`` so servers that check it (AWS S3, recent MinIO) refuse a body
  damaged in transit. Turn it off for servers that reject those headers.
- Small blobs go in one PutObject, larger ones (above ``multipart_threshold``) in parts read
  from the spool file; any failure aborts the multipart upload, so no partial object appears.
- No overwrite: with ``conditional_put`` (default) PutObject and CompleteMultipartUpload send
  ``If-None-Match: *`` and a 412 means the key exists (then compared: same content is a
  no-op, different content a :class:`BlobConflict`). Without it (servers that predate
  conditional writes) the store looks (HeadObject) before it writes: two concurrent puts of
  *different* content under one key can then both succeed, the later one winning; the
  registry's unique constraint on the package id is what closes that race.
"""

from __future__ import annotations

import base64
import hashlib
import io
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from central.blobs.base import (
    BlobCorrupt,
    BlobError,
    BlobInfo,
    BlobNotFound,
    BlobStore,
    check_key,
    check_prefix,
    check_sha256,
    conflict_error,
    integrity_error,
    iter_chunks,
    verifying_reader,
)

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # S3's minimum for every part but the last
MAX_PARTS = 10_000
SPOOL_MEMORY = 1 * MIB
SHA256_META = "sha256"

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def make_s3_client(
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
    max_attempts: int = 5,
    session: boto3.session.Session | None = None,
) -> Any:
    """A boto3 S3 client with timeouts and standard-mode retries.

    Without keys boto3's usual chain applies (AWS_* environment, instance role, ...).
    Path-style addressing when an endpoint is given (what S3-compatible servers expect);
    checksums only where we ask for them (botocore's default CRC32 trailers break several
    S3-compatible servers). Pass a ``session`` to share its loaded service models between
    clients (creating a client is then much cheaper); each client keeps its own event hooks.
    """
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "max_attempts": max_attempts},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    return (session or boto3.session.Session()).client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=config,
    )


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class _Slice(io.RawIOBase):
    """``length`` bytes of ``base`` from ``offset``: a seekable body for one part."""

    def __init__(self, base: BinaryIO, offset: int, length: int) -> None:
        super().__init__()
        self._base = base
        self._offset = offset
        self._length = length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + pos))
        return self._pos

    def read(self, size: int = -1) -> bytes:
        left = self._length - self._pos
        if size is None or size < 0 or size > left:
            size = left
        if size == 0:
            return b""
        self._base.seek(self._offset + self._pos)
        data = self._base.read(size)
        self._pos += len(data)
        return data

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def __len__(self) -> int:
        return self._length


class S3BlobStore(BlobStore):
    """Blobs as objects ``<prefix><key>`` in ``bucket``."""

    def __init__(
        self,
        bucket: str,
        *,
        client: Any = None,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 5,
        multipart_threshold: int = 8 * MIB,
        part_size: int = 8 * MIB,
        page_size: int = 1000,
        conditional_put: bool = True,
        transfer_checksums: bool = True,
        spool_dir: str | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
        if multipart_threshold < 1 or not 1 <= page_size <= 1000:
            raise ValueError("multipart_threshold must be positive and page_size 1 to 1000")
        self.bucket = bucket
        stripped = prefix.strip("/")
        if stripped:
            check_key(stripped)
        self.prefix = f"{stripped}/" if stripped else ""
        self.client = client or make_s3_client(
            endpoint_url=endpoint_url,
            region=region,
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=max_attempts,
        )
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.page_size = page_size
        self.conditional_put = conditional_put
        self.transfer_checksums = transfer_checksums
        self.spool_dir = spool_dir

    def __repr__(self) -> str:
        return f"S3BlobStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _object_key(self, key: str) -> str:
        return self.prefix + check_key(key)

    # --- put -----------------------------------------------------------------------------

    def _spool(self, source: BinaryIO | bytes) -> tuple[BinaryIO, int, str]:
        if isinstance(source, bytes | bytearray | memoryview):
            data = bytes(source)
            return io.BytesIO(data), len(data), hashlib.sha256(data).hexdigest()
        # Closed by put() (or below on failure): the spool outlives this function.
        spool: BinaryIO = tempfile.SpooledTemporaryFile(  # type: ignore[assignment]  # noqa: SIM115
            max_size=SPOOL_MEMORY, dir=self.spool_dir
        )
        try:
            digest = hashlib.sha256()
            size = 0
            for chunk in iter_chunks(source):
                digest.update(chunk)
                spool.write(chunk)
                size += len(chunk)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return spool, size, digest.hexdigest()

    def put(self, key: str, source: BinaryIO | bytes, *, sha256: str | None = None) -> BlobInfo:
        object_key = self._object_key(key)
        expected = check_sha256(sha256)
        spool, size, actual = self._spool(source)
        with spool:
            if expected is not None and actual != expected:
                raise integrity_error(key, expected, actual, size)
            for _ in range(5):
                if not self.conditional_put:
                    stored = self.info(key)
                    if stored is not None:
                        return self._settle(key, stored, actual, size)
                try:
                    if size > self.multipart_threshold:
                        self._put_multipart(object_key, spool, size, actual)
                    else:
                        self._put_single(object_key, spool, size, actual)
                except ClientError as exc:
                    code = _error_code(exc)
                    if code == "NoSuchUpload":
                        # A retried CompleteMultipartUpload whose first try went through.
                        stored = self.info(key)
                        if stored is not None:
                            return self._settle(key, stored, actual, size)
                    if code not in {"PreconditionFailed", "ConditionalRequestConflict"}:
                        raise
                    # The key exists (412) or another write to it is in flight (409).
                    stored = self.info(key)
                    if stored is not None:
                        return self._settle(key, stored, actual, size)
                    time.sleep(0.2)
                    spool.seek(0)
                    continue
                stored = self.info(key)
                if stored is None:
                    raise BlobError(f"blob {key!r} was written but is not readable back")
                return self._settle(key, stored, actual, size)
            raise BlobError(f"blob {key!r}: the server kept refusing the conditional write")

    @staticmethod
    def _settle(key: str, stored: BlobInfo, sha256: str, size: int) -> BlobInfo:
        if stored.sha256 == sha256 and stored.size == size:
            return stored
        raise conflict_error(key, stored, sha256, size)

    def _conditional(self) -> dict[str, str]:
        return {"IfNoneMatch": "*"} if self.conditional_put else {}

    def _put_single(self, object_key: str, spool: BinaryIO, size: int, sha256: str) -> None:
        extra: dict[str, Any] = self._conditional()
        if self.transfer_checksums:
            extra["ChecksumAlgorithm"] = "SHA256"
            extra["ChecksumSHA256"] = _b64(bytes.fromhex(sha256))
        self.client.put_object(
            Bucket=self.bucket,
            Key=object_key,
            Body=_Slice(spool, 0, size),
            ContentLength=size,
            ContentType="application/octet-stream",
            Metadata={SHA256_META: sha256},
            **extra,
        )

    def _put_multipart(self, object_key: str, spool: BinaryIO, size: int, sha256: str) -> None:
        part_size = max(self.part_size, -(-size // MAX_PARTS))
        create: dict[str, Any] = {}
        if self.transfer_checksums:
            create["ChecksumAlgorithm"] = "SHA256"
        upload = self.client.create_multipart_upload(
            Bucket=self.bucket,
            Key=object_key,
            ContentType="application/octet-stream",
            Metadata={SHA256_META: sha256},
            **create,
        )
        upload_id = upload["UploadId"]
        try:
            parts = []
            for number, offset in enumerate(range(0, size, part_size), start=1):
                length = min(part_size, size - offset)
                extra: dict[str, Any] = {}
                if self.transfer_checksums:
                    part_digest = hashlib.sha256()
                    for chunk in iter_chunks(_Slice(spool, offset, length)):  # type: ignore[arg-type]
                        part_digest.update(chunk)
                    extra["ChecksumAlgorithm"] = "SHA256"
                    extra["ChecksumSHA256"] = _b64(part_digest.digest())
                answer = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=object_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=_Slice(spool, offset, length),
                    ContentLength=length,
                    **extra,
                )
                part = {"ETag": answer["ETag"], "PartNumber": number}
                if self.transfer_checksums:
                    part["ChecksumSHA256"] = extra["ChecksumSHA256"]
                parts.append(part)
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=object_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **self._conditional(),
            )
        except BaseException:
            self._abort(object_key, upload_id)
            raise

    def _abort(self, object_key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(
                Bucket=self.bucket, Key=object_key, UploadId=upload_id
            )
        except ClientError as exc:
            if _error_code(exc) != "NoSuchUpload":
                raise

    # --- read ----------------------------------------------------------------------------

    def _info_from(self, key: str, answer: dict[str, Any]) -> BlobInfo:
        sha256 = answer.get("Metadata", {}).get(SHA256_META)
        if not sha256 or check_sha256(sha256) != sha256:
            raise BlobCorrupt(
                f"object {self.prefix + key!r} in bucket {self.bucket!r} has no valid "
                f"x-amz-meta-{SHA256_META}: it was not written by this blob store"
            )
        stored_at = answer["LastModified"]
        if stored_at.tzinfo is None:
            stored_at = stored_at.replace(tzinfo=UTC)
        return BlobInfo(key, int(answer["ContentLength"]), sha256, stored_at.astimezone(UTC))

    def info(self, key: str) -> BlobInfo | None:
        try:
            answer = self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                return None
            raise
        return self._info_from(key, answer)

    def open(self, key: str) -> BinaryIO:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._object_key(key))
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                raise BlobNotFound(f"no blob under key {key!r} in bucket {self.bucket!r}") from exc
            raise
        body = answer["Body"]
        try:
            info = self._info_from(key, answer)
        except BaseException:
            body.close()
            raise
        return verifying_reader(body, info)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._object_key(key))

    def keys(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        request: dict[str, Any] = {
            "Bucket": self.bucket,
            "Prefix": self.prefix + prefix,
            "MaxKeys": self.page_size,
        }
        while True:
            page = self.client.list_objects_v2(**request)
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) :]
                try:
                    yield check_key(key)
                except ValueError:
                    continue  # not one of ours (a folder marker, say)
            if not page.get("IsTruncated"):
                return
            request["ContinuationToken"] = page["NextContinuationToken"]

    def sweep(self, older_than: float = 3600.0) -> int:
        """Abort multipart uploads under the prefix begun more than ``older_than`` s ago.

        A put killed mid-upload leaves its parts stored (and billed) but no object. In
        production also set a bucket lifecycle rule AbortIncompleteMultipartUpload.
        """
        cutoff = datetime.now(UTC).timestamp() - older_than
        removed = 0
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix}
        while True:
            page = self.client.list_multipart_uploads(**request)
            for upload in page.get("Uploads", []):
                initiated = upload["Initiated"]
                if initiated.tzinfo is None:
                    initiated = initiated.replace(tzinfo=UTC)
                if initiated.timestamp() > cutoff:
                    continue
                self._abort(upload["Key"], upload["UploadId"])
                removed += 1
            if not page.get("IsTruncated"):
                return removed
            request["KeyMarker"] = page["NextKeyMarker"]
            request["UploadIdMarker"] = page["NextUploadIdMarker"]
