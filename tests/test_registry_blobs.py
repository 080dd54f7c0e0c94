"""The blob store: one behavioural suite run against the local folder and S3 (moto server)."""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from pydantic import ValidationError

from central.blobs import (
    BlobConflict,
    BlobCorrupt,
    BlobInfo,
    BlobIntegrityError,
    BlobNotFound,
    BlobSettings,
    BlobStore,
    InvalidBlobKey,
    LocalBlobStore,
    make_blob_store,
)
from central.blobs.local import HEADER_SIZE
from central.blobs.s3 import MIB, S3BlobStore
from tests import s3kit
from tests.s3kit import S3Server

s3_server = s3kit.s3_server

BIG = 6 * 1000 * 1000  # a 6 MB package: above the S3 store's multipart threshold below
PAGE = 7  # a small listing page, so a few dozen keys take several pages


class PatternStream(io.RawIOBase):
    """``size`` deterministic bytes produced on demand: the whole never exists in memory."""

    def __init__(self, size: int, seed: int = 0) -> None:
        super().__init__()
        self.size = size
        self.pos = 0
        self.block = hashlib.sha256(f"block-{seed}".encode()).digest() * 2048  # 64 KiB
        self.largest_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self.size - self.pos, len(self.block))
        self.largest_read = max(self.largest_read, len(view))
        start = self.pos % len(self.block)
        chunk = (self.block[start:] + self.block[:start])[:n]
        view[:n] = chunk
        self.pos += n
        return n

    @staticmethod
    def digest(size: int, seed: int = 0) -> str:
        stream = PatternStream(size, seed)
        h = hashlib.sha256()
        while chunk := stream.read(1 << 20):
            h.update(chunk)
        return h.hexdigest()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the two backends --------------------------------------------------------------------


def make_s3_store(server: S3Server, **options: Any) -> S3BlobStore:
    defaults: dict[str, Any] = {
        "prefix": "packages",
        "multipart_threshold": 5 * MIB,
        "part_size": 5 * MIB,
        "page_size": PAGE,
    }
    return S3BlobStore(server.new_bucket(), client=server.client(), **{**defaults, **options})


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    server: S3Server = request.getfixturevalue("s3_server")
    return make_s3_store(server)


def leftovers(store: BlobStore) -> list[str]:
    """Anything a failed put could have left behind: files of any kind, multipart uploads."""
    if isinstance(store, LocalBlobStore):
        return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())
    assert isinstance(store, S3BlobStore)
    client = store.client
    objects = client.list_objects_v2(Bucket=store.bucket).get("Contents", [])
    uploads = client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])
    return [o["Key"] for o in objects] + [f"upload:{u['Key']}" for u in uploads]


def tamper(store: BlobStore, key: str) -> None:
    """Change a stored blob's bytes behind the store's back (bit rot, a bad disk)."""
    if isinstance(store, LocalBlobStore):
        path = store.path(key)
        with path.open("r+b") as f:
            f.seek(HEADER_SIZE + 3)
            byte = f.read(1)
            f.seek(HEADER_SIZE + 3)
            f.write(bytes([byte[0] ^ 0xFF]))
        return
    assert isinstance(store, S3BlobStore)
    info = store.info(key)
    assert info is not None
    data = bytearray(store.get(key))
    data[3] ^= 0xFF
    store.client.put_object(
        Bucket=store.bucket,
        Key=store.prefix + key,
        Body=bytes(data),
        Metadata={"sha256": info.sha256},
    )


# --- behaviour both backends share ---------------------------------------------------------


def test_round_trip_bytes(store: BlobStore) -> None:
    data = b"package \x00\xff bytes" * 100
    before = time.time()
    info = store.put("HN-BD-001/pkg-0001.cose", data)
    assert info == BlobInfo("HN-BD-001/pkg-0001.cose", len(data), sha(data), info.stored_at)
    assert info.stored_at.tzinfo is not None
    assert before - 5 <= info.stored_at.timestamp() <= time.time() + 5
    assert store.get("HN-BD-001/pkg-0001.cose") == data
    with store.open("HN-BD-001/pkg-0001.cose") as stream:
        assert stream.read(7) == data[:7]
        assert stream.read() == data[7:]
    assert store.info("HN-BD-001/pkg-0001.cose") == info
    assert store.exists("HN-BD-001/pkg-0001.cose")
    assert not store.exists("HN-BD-001/pkg-0002.cose")
    assert store.info("HN-BD-001/pkg-0002.cose") is None
    with pytest.raises(BlobNotFound, match="pkg-0002"):
        store.get("HN-BD-001/pkg-0002.cose")
    with pytest.raises(BlobNotFound):
        store.open("HN-BD-001/pkg-0002.cose")


def test_empty_blob(store: BlobStore) -> None:
    info = store.put("empty", b"")
    assert (info.size, info.sha256) == (0, sha(b""))
    assert store.get("empty") == b""


def test_round_trip_big_stream(store: BlobStore) -> None:
    calls: list[str] = []
    if isinstance(store, S3BlobStore):
        store.client.meta.events.register(
            "before-call.s3.*", lambda model, **_: calls.append(model.name)
        )
    source = PatternStream(BIG)
    info = store.put("big/package", source, sha256=PatternStream.digest(BIG))
    assert (info.size, info.sha256) == (BIG, PatternStream.digest(BIG))
    assert source.largest_read <= 1 << 20  # read in chunks, never all at once
    if isinstance(store, S3BlobStore):
        assert calls.count("UploadPart") == 2
        assert "CompleteMultipartUpload" in calls
        assert "PutObject" not in calls
    h = hashlib.sha256()
    size = 0
    with store.open("big/package") as stream:
        while chunk := stream.read(256 * 1024):
            h.update(chunk)
            size += len(chunk)
    assert (size, h.hexdigest()) == (BIG, info.sha256)
    assert store.info("big/package") == info
    if isinstance(store, LocalBlobStore):
        assert leftovers(store) == [str(store.path("big/package").relative_to(store.root))]
    else:
        assert leftovers(store) == ["packages/big/package"]


def test_local_put_of_a_stream_stays_small_in_memory(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    tracemalloc.start()
    try:
        store.put("big", PatternStream(BIG))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * MIB, f"put of a 6 MB stream peaked at {peak / MIB:.1f} MiB"


@pytest.mark.parametrize("big", [False, True], ids=["bytes", "6MB-stream"])
def test_sha256_mismatch_refused_and_nothing_left(store: BlobStore, big: bool) -> None:
    source: io.RawIOBase | bytes = PatternStream(BIG) if big else b"the real package"
    wrong = sha(b"something else")
    with pytest.raises(BlobIntegrityError, match=r"sha256 mismatch.*nothing was stored"):
        store.put("pkg", source, sha256=wrong)  # type: ignore[arg-type]
    assert store.info("pkg") is None
    assert list(store.keys()) == []
    assert leftovers(store) == []


class BrokenStream(PatternStream):
    """A station upload that drops after ``fail_at`` bytes."""

    def __init__(self, size: int, fail_at: int) -> None:
        super().__init__(size)
        self.fail_at = fail_at

    def readinto(self, buffer: Any) -> int:
        if self.pos >= self.fail_at:
            raise ConnectionResetError("upload dropped")
        return super().readinto(buffer)


@pytest.mark.parametrize("fail_at", [100_000, BIG - 1000], ids=["early", "late"])
def test_source_failing_mid_stream_leaves_nothing(store: BlobStore, fail_at: int) -> None:
    with pytest.raises(ConnectionResetError, match="upload dropped"):
        store.put("pkg", BrokenStream(BIG, fail_at))  # type: ignore[arg-type]
    assert store.info("pkg") is None
    assert leftovers(store) == []


def test_sha256_given_in_upper_case_is_accepted(store: BlobStore) -> None:
    data = b"abc"
    assert store.put("pkg", data, sha256=sha(data).upper()).sha256 == sha(data)
    with pytest.raises(ValueError, match="64 hex digits"):
        store.put("pkg2", data, sha256="abc")


def test_put_again_with_the_same_content_is_a_no_op(store: BlobStore) -> None:
    data = b"x" * 5000
    first = store.put("pkg", data)
    time.sleep(0.01)
    assert store.put("pkg", data) == first  # same stored_at: nothing was written
    assert store.put("pkg", io.BytesIO(data), sha256=sha(data)) == first
    assert store.get("pkg") == data
    assert list(store.keys()) == ["pkg"]


def test_put_of_different_content_is_refused(store: BlobStore) -> None:
    store.put("pkg", b"first")
    with pytest.raises(BlobConflict, match="already stored with different content"):
        store.put("pkg", b"second")
    with pytest.raises(BlobConflict):
        store.put("pkg", io.BytesIO(b"first, longer"))
    assert store.get("pkg") == b"first"
    if isinstance(store, LocalBlobStore):
        assert leftovers(store) == [str(store.path("pkg").relative_to(store.root))]


def test_concurrent_puts_one_wins_never_overwritten(store: BlobStore) -> None:
    results: dict[int, BlobInfo | Exception] = {}
    barrier = threading.Barrier(6)

    def writer(n: int) -> None:
        barrier.wait()
        try:
            results[n] = store.put("contested", f"content {n % 2}".encode() * 1000)
        except Exception as exc:
            results[n] = exc

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = store.get("contested")
    winner = stored[:9]
    for n, result in results.items():
        mine = f"content {n % 2}".encode()
        if mine == winner:
            assert isinstance(result, BlobInfo)
            assert result.sha256 == sha(stored)
        else:
            assert isinstance(result, BlobConflict), result


def test_delete_is_idempotent(store: BlobStore) -> None:
    store.put("pkg", b"data")
    store.delete("pkg")
    store.delete("pkg")
    store.delete("never-there")
    assert store.info("pkg") is None
    with pytest.raises(BlobNotFound):
        store.get("pkg")
    assert store.put("pkg", b"new data").size == 8  # the key is free again
    assert store.get("pkg") == b"new data"


def test_keys_with_prefix_and_pagination(store: BlobStore) -> None:
    calls: list[str] = []
    if isinstance(store, S3BlobStore):
        store.client.meta.events.register(
            "before-call.s3.ListObjectsV2", lambda model, **_: calls.append(model.name)
        )
    names = [f"HN/{n:03d}" for n in range(23)] + [f"HCM/{n:03d}" for n in range(9)] + ["HNX"]
    for name in names:
        store.put(name, name.encode())
    assert list(store.keys()) == sorted(names)
    assert list(store.keys("HN/")) == sorted(n for n in names if n.startswith("HN/"))
    assert list(store.keys("HN")) == sorted(n for n in names if n.startswith("HN"))
    assert list(store.keys("HCM/00")) == [f"HCM/00{n}" for n in range(9)]
    assert list(store.keys("nothing")) == []
    if isinstance(store, S3BlobStore):
        assert calls.count("ListObjectsV2") >= len(names) // PAGE + 1  # paginated
    with pytest.raises(InvalidBlobKey):
        list(store.keys("../"))


HOSTILE_KEYS = [
    "",
    "../escape",
    "a/../../escape",
    "..",
    ".",
    "/etc/passwd",
    "a//b",
    "a/",
    "a/./b",
    ".hidden",
    "a/.hidden",
    "a..b",
    "a\\..\\b",
    "C:\\Windows",
    "a\x00b",
    "a\nb",
    "a b",
    "Nguyễn",
    "a~b",
    "a+b",
    "%2e%2e/x",
    "x" * 201,
]


def test_hostile_keys_refused(store: BlobStore) -> None:
    for key in HOSTILE_KEYS:
        with pytest.raises(InvalidBlobKey):
            store.put(key, b"evil")
        for op in (store.get, store.open, store.info, store.exists, store.delete):
            with pytest.raises(InvalidBlobKey):
                op(key)  # type: ignore[operator]
    with pytest.raises(InvalidBlobKey):
        store.put(42, b"evil")  # type: ignore[arg-type]
    assert leftovers(store) == []


def test_longest_key_and_all_characters_accepted(store: BlobStore) -> None:
    key = "A-z_0.9/" + "k" * 192
    assert len(key) == 200
    store.put(key, b"ok")
    assert list(store.keys()) == [key]


def test_corruption_is_detected_on_read(store: BlobStore) -> None:
    store.put("pkg", b"0123456789" * 100)
    tamper(store, "pkg")
    with pytest.raises(BlobCorrupt, match="does not match what was stored"):
        store.get("pkg")


# --- local folder --------------------------------------------------------------------------


def test_local_layout_fans_out_and_names_files_after_keys(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    store.put("HN-BD-001/pkg-1", b"data")
    path = store.path("HN-BD-001/pkg-1")
    digest = hashlib.sha256(b"HN-BD-001/pkg-1").hexdigest()
    assert path == tmp_path / "blobs" / digest[:2] / digest[2:4] / "HN-BD-001~pkg-1"
    raw = path.read_bytes()
    assert raw[HEADER_SIZE:] == b"data"  # tail -c +513 gives the package
    assert raw.startswith(b"VNEIDBLOB1\n{")
    assert raw[HEADER_SIZE - 1 : HEADER_SIZE] == b"\n"


def test_local_crash_before_publish_leaves_only_a_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path)

    def power_cut(src: Any, dst: Any) -> None:
        raise OSError("simulated crash before the blob is published")

    with monkeypatch.context() as m:
        m.setattr(os, "link", power_cut)
        m.setattr(os, "unlink", lambda path: None)  # a crash does not clean up either
        with pytest.raises(OSError, match="simulated crash"):
            store.put("pkg", b"half-written package")
    assert store.info("pkg") is None
    assert list(store.keys()) == []
    temps = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(temps) == 1
    assert temps[0].name.startswith(".put-")
    assert store.sweep(older_than=3600) == 0  # young: may be a put in progress
    assert store.sweep(older_than=0) == 1
    assert leftovers(store) == []
    store.put("pkg", b"the retried package")  # the station's retry goes through
    assert store.get("pkg") == b"the retried package"


WRITER = textwrap.dedent(
    """
    import sys, io, time
    from pathlib import Path
    from central.blobs import LocalBlobStore

    class Slow(io.RawIOBase):
        sent = 0
        def readable(self):
            return True
        def readinto(self, b):
            if self.sent >= 2_000_000:
                Path(sys.argv[2]).write_text("halfway")
                time.sleep(60)
            n = min(len(b), 65536)
            b[:n] = b"p" * n
            self.sent += n
            return n

    LocalBlobStore(sys.argv[1]).put("HN-BD-001/pkg-9", Slow())
    """
)


def test_local_writer_killed_mid_put_leaves_no_blob(tmp_path: Path) -> None:
    root, marker = tmp_path / "blobs", tmp_path / "halfway"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(root), str(marker)],
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        deadline = time.monotonic() + 15
        while not marker.exists():
            assert child.poll() is None, "the writer died before reaching the middle"
            assert time.monotonic() < deadline, "the writer never reached the middle"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    store = LocalBlobStore(root)
    assert store.info("HN-BD-001/pkg-9") is None
    assert not store.path("HN-BD-001/pkg-9").exists()
    temps = [p for p in root.rglob("*") if p.is_file()]
    assert len(temps) == 1
    assert temps[0].name.startswith(".put-")
    assert temps[0].stat().st_size >= 2_000_000
    assert store.sweep(older_than=0) == 1
    assert leftovers(store) == []


# --- S3 ------------------------------------------------------------------------------------


def test_s3_failure_mid_multipart_aborts_the_upload(s3_server: S3Server) -> None:
    store = make_s3_store(s3_server)
    parts: list[int] = []

    def fail_second_part(params: dict[str, Any], **_: Any) -> None:
        parts.append(params["PartNumber"])
        if params["PartNumber"] == 2:
            raise ConnectionError("link dropped")

    store.client.meta.events.register("before-parameter-build.s3.UploadPart", fail_second_part)
    with pytest.raises(ConnectionError, match="link dropped"):
        store.put("pkg", PatternStream(BIG))
    assert parts == [1, 2]
    assert store.info("pkg") is None
    assert leftovers(store) == []


@pytest.mark.parametrize("big", [False, True], ids=["single", "multipart"])
def test_s3_if_none_match_refuses_overwrite_server_side(s3_server: S3Server, big: bool) -> None:
    # Another writer slips in between (simulated: the object appears right before ours
    # completes). The conditional write makes the server refuse ours: no overwrite.
    store = make_s3_store(s3_server)
    event = "CompleteMultipartUpload" if big else "PutObject"
    other = s3_server.client()

    def sneak_in(**_: Any) -> None:
        other.put_object(
            Bucket=store.bucket,
            Key="packages/pkg",
            Body=b"theirs",
            Metadata={"sha256": sha(b"theirs")},
        )

    store.client.meta.events.register_first(f"before-call.s3.{event}", sneak_in)
    with pytest.raises(BlobConflict):
        store.put("pkg", PatternStream(BIG) if big else b"ours")  # type: ignore[arg-type]
    assert store.get("pkg") == b"theirs"
    assert leftovers(store) == ["packages/pkg"]


@pytest.mark.parametrize("answer", ["NoSuchUpload", "PreconditionFailed"])
def test_s3_complete_that_went_through_but_answered_an_error(
    s3_server: S3Server, answer: str
) -> None:
    # The first CompleteMultipartUpload stored the object but its answer was lost; the retry
    # is answered NoSuchUpload (or 412 under If-None-Match). The put must report success.
    # (moto answers a repeated complete with 200, so the hook raises what S3 may answer.)
    store = make_s3_store(s3_server)
    other = s3_server.client()

    def went_through_then_error(params: dict[str, Any], **_: Any) -> None:
        other.complete_multipart_upload(**params)
        raise ClientError({"Error": {"Code": answer}}, "CompleteMultipartUpload")

    store.client.meta.events.register(
        "before-parameter-build.s3.CompleteMultipartUpload", went_through_then_error
    )
    info = store.put("pkg", PatternStream(BIG))
    assert info == store.info("pkg")
    assert info.sha256 == PatternStream.digest(BIG)
    assert leftovers(store) == ["packages/pkg"]


def test_s3_without_conditional_put_or_checksums(s3_server: S3Server) -> None:
    store = make_s3_store(s3_server, conditional_put=False, transfer_checksums=False)
    headers: list[dict[str, Any]] = []
    store.client.meta.events.register(
        "before-send.s3.*", lambda request, **_: headers.append(dict(request.headers))
    )
    info = store.put("big", PatternStream(BIG))
    assert store.put("big", PatternStream(BIG)) == info
    with pytest.raises(BlobConflict):
        store.put("big", PatternStream(BIG, seed=1))
    store.put("small", b"small")
    assert store.get("small") == b"small"
    assert store.info("big") == info
    sent = {name.lower() for h in headers for name in h}
    assert "if-none-match" not in sent
    assert not any(name.startswith("x-amz-checksum") for name in sent)


def test_s3_sends_sha256_checksums_and_metadata(s3_server: S3Server) -> None:
    store = make_s3_store(s3_server)
    headers: list[dict[str, Any]] = []
    store.client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: headers.append(dict(request.headers))
    )
    store.put("pkg", b"abc")
    (sent,) = headers
    assert sent["If-None-Match"] == b"*"
    assert sent["x-amz-checksum-sha256"] == b"ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
    head = store.client.head_object(Bucket=store.bucket, Key="packages/pkg")
    assert head["Metadata"] == {"sha256": sha(b"abc")}


def test_s3_sweep_aborts_abandoned_multipart_uploads(s3_server: S3Server) -> None:
    store = make_s3_store(s3_server)
    store.client.create_multipart_upload(Bucket=store.bucket, Key="packages/killed-mid-put")
    store.client.create_multipart_upload(Bucket=store.bucket, Key="elsewhere/not-ours")

    # moto reports every upload as initiated on 2010-11-10: make them young for the first
    # sweep, which must then leave them (they may be puts in progress).
    def just_now(parsed: dict[str, Any], **_: Any) -> None:
        for upload in parsed.get("Uploads", []):
            upload["Initiated"] = datetime.now(UTC)

    store.client.meta.events.register("after-call.s3.ListMultipartUploads", just_now)
    assert store.sweep(older_than=3600) == 0
    store.client.meta.events.unregister("after-call.s3.ListMultipartUploads", just_now)
    assert store.sweep(older_than=0) == 1
    assert leftovers(store) == ["upload:elsewhere/not-ours"]


def test_s3_foreign_object_without_sha256_is_reported(s3_server: S3Server) -> None:
    store = make_s3_store(s3_server)
    store.client.put_object(Bucket=store.bucket, Key="packages/foreign", Body=b"x")
    with pytest.raises(BlobCorrupt, match="not written by this blob store"):
        store.info("foreign")


def test_s3_prefix_isolates_stores(s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    a = S3BlobStore(bucket, client=s3_server.client(), prefix="a")
    b = S3BlobStore(bucket, client=s3_server.client(), prefix="/b/")
    a.put("pkg", b"in a")
    assert b.info("pkg") is None
    assert list(b.keys()) == []
    assert list(a.keys()) == ["pkg"]
    with pytest.raises(ValueError, match="part_size"):
        S3BlobStore(bucket, client=s3_server.client(), part_size=MIB)


# --- settings ------------------------------------------------------------------------------


def test_make_blob_store_local(tmp_path: Path) -> None:
    store = make_blob_store(BlobSettings(path=tmp_path / "b"))
    assert isinstance(store, LocalBlobStore)
    assert store.root == tmp_path / "b"


def test_make_blob_store_s3(s3_server: S3Server) -> None:
    settings = BlobSettings.model_validate(
        {
            "backend": "s3",
            "bucket": s3_server.new_bucket(),
            "prefix": "registry/packages",
            "endpoint_url": s3_server.endpoint_url,
            "region": s3_server.region,
            "access_key_id": s3_server.access_key_id,
            "secret_access_key": s3_server.secret_access_key,
            "read_timeout": 7,
        }
    )
    assert s3_server.secret_access_key not in repr(settings)
    store = make_blob_store(settings)
    assert isinstance(store, S3BlobStore)
    assert store.client.meta.config.read_timeout == 7
    assert store.client.meta.config.retries["mode"] == "standard"
    store.put("pkg", b"via settings")
    assert store.get("pkg") == b"via settings"
    assert list(store.keys()) == ["pkg"]


def test_blob_settings_validation() -> None:
    with pytest.raises(ValidationError, match="bucket is required"):
        BlobSettings(backend="s3")
    with pytest.raises(ValidationError, match="or neither"):
        BlobSettings(backend="s3", bucket="b", access_key_id="k")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        BlobSettings(backend="ftp")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        BlobSettings(part_size=MIB)
