"""The station data key (software file, TPM-sealed) and the encrypted drafts it protects."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydantic import ValidationError

from station.store.database import StationDatabase
from station.store.drafts import DRAFTS_SCHEMA, DraftCorruptError, DraftStore
from station.store.sealing import (
    DataKeyError,
    DataKeySettings,
    SealedKeyError,
    SoftwareDataKey,
    TpmSealedDataKey,
    data_key_provider,
    provider_for,
)

if TYPE_CHECKING:
    from tests.conftest import Swtpm

PORTRAIT = b"\xff\xd8\xff\xe0" + os.urandom(30_000) + b"\xff\xd9"
DEMOGRAPHICS = '{"full_name": "Nguyễn Văn An", "date_of_birth": "1990-04-30"}'.encode()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StationDatabase]:
    database = StationDatabase(tmp_path / "station.db")
    database.migrate(DRAFTS_SCHEMA)
    try:
        yield database
    finally:
        database.close()


@pytest.fixture
def key(tmp_path: Path) -> bytes:
    return SoftwareDataKey(tmp_path / "state" / "data-key").load_or_create()


# --- the software data key ------------------------------------------------------------------


def test_software_key_is_made_once_0600_and_loaded_again(tmp_path: Path) -> None:
    path = tmp_path / "state" / "data-key"
    provider = SoftwareDataKey(path)
    assert not provider.exists()
    key = provider.load_or_create()
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SoftwareDataKey(path).load_or_create() == key
    assert SoftwareDataKey(path).load() == key
    with pytest.raises(DataKeyError, match="refusing to overwrite"):
        SoftwareDataKey(path).create()
    assert SoftwareDataKey(path).load() == key
    assert [p.name for p in path.parent.iterdir()] == ["data-key"]  # no temporary left


def test_software_key_file_problems_are_explained(tmp_path: Path) -> None:
    with pytest.raises(DataKeyError, match="does not exist"):
        SoftwareDataKey(tmp_path / "none").load()
    path = tmp_path / "data-key"
    SoftwareDataKey(path).create()
    path.chmod(0o644)
    with pytest.raises(DataKeyError, match="chmod 600"):
        SoftwareDataKey(path).load()
    path.chmod(0o600)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataKeyError, match="damaged"):
        SoftwareDataKey(path).load()
    path.write_bytes(b"x" * 50)
    with pytest.raises(DataKeyError, match="wrong header"):
        SoftwareDataKey(path).load()


def test_settings_and_factory(tmp_path: Path) -> None:
    assert DataKeySettings().backend == "software"
    with pytest.raises(ValidationError, match="tcti"):
        DataKeySettings(backend="tpm")
    with pytest.raises(ValidationError):
        DataKeySettings.model_validate({"backend": "hsm"})
    software = provider_for(DataKeySettings(), tmp_path)
    assert isinstance(software, SoftwareDataKey)
    assert software.path == tmp_path / "data-key"
    tpm = provider_for(DataKeySettings(backend="tpm", tcti="swtpm:port=1"), tmp_path)
    assert isinstance(tpm, TpmSealedDataKey)
    assert tpm.path == tmp_path / "data-key.sealed"
    with pytest.raises(DataKeyError, match="TCTI"):
        data_key_provider("tpm", tmp_path / "k")


# --- the TPM-sealed data key ----------------------------------------------------------------


@pytest.mark.tpm
def test_tpm_sealed_key_survives_a_tpm_restart_and_no_other_tpm_unseals_it(
    swtpm_factory: Callable[[], Swtpm], tmp_path: Path
) -> None:
    tpm = swtpm_factory()
    path = tmp_path / "data-key.sealed"
    provider = data_key_provider("tpm", path, tpm.tcti)
    key = provider.load_or_create()
    assert len(key) == 32
    blob = path.read_bytes()
    assert key not in blob  # the file holds the sealed blob, never the key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(DataKeyError, match="refusing to overwrite"):
        provider.create()

    tpm.restart()
    assert TpmSealedDataKey(path, tpm.tcti).load_or_create() == key

    other = swtpm_factory()
    with pytest.raises(SealedKeyError, match="drafts on this disk cannot be read with this TPM"):
        TpmSealedDataKey(path, other.tcti).load()
    # A load that failed leaks no transient object: the right TPM still unseals, many times.
    for _ in range(5):
        assert TpmSealedDataKey(path, tpm.tcti).load() == key


@pytest.mark.tpm
def test_tpm_sealed_key_file_problems(swtpm: Swtpm, tmp_path: Path) -> None:
    path = tmp_path / "data-key.sealed"
    TpmSealedDataKey(path, swtpm.tcti).create()
    blob = path.read_bytes()
    path.write_bytes(blob[:-3])
    with pytest.raises(DataKeyError, match="damaged"):
        TpmSealedDataKey(path, swtpm.tcti).load()
    path.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))  # a flipped bit in the private area
    with pytest.raises(DataKeyError):
        TpmSealedDataKey(path, swtpm.tcti).load()
    with pytest.raises(DataKeyError, match="cannot reach the TPM"):
        TpmSealedDataKey(tmp_path / "new.sealed", "swtpm:host=127.0.0.1,port=1").create()
    assert not (tmp_path / "new.sealed").exists()


# --- drafts ---------------------------------------------------------------------------------


def test_round_trip_and_names(db: StationDatabase, key: bytes) -> None:
    drafts = DraftStore(db, key)
    with db.write() as conn:
        drafts.put(conn, "case-1", "demographics.json", DEMOGRAPHICS)
        drafts.put(conn, "case-1", "portrait.jpg", PORTRAIT)
        drafts.put(conn, "case-2", "finger-01.wsq", b"\x00" * 10)
        drafts.put(conn, "case-1", "empty", b"")
        assert drafts.get("case-1", "portrait.jpg", conn=conn) == PORTRAIT  # inside the write
    assert drafts.get("case-1", "demographics.json") == DEMOGRAPHICS
    assert drafts.get("case-1", "portrait.jpg") == PORTRAIT
    assert drafts.get("case-1", "empty") == b""
    assert drafts.get("case-1", "finger-01.wsq") is None
    assert drafts.names("case-1") == ["demographics.json", "empty", "portrait.jpg"]
    with db.write() as conn:
        drafts.put(conn, "case-1", "portrait.jpg", b"second")  # replaced
    assert drafts.get("case-1", "portrait.jpg") == b"second"
    # At rest the plaintext is nowhere in the database file.
    db.close()
    raw = b"".join(p.read_bytes() for p in db.path.parent.glob("station.db*"))
    assert "Nguyễn".encode() not in raw
    assert PORTRAIT[4:200] not in raw


def test_delete_case(db: StationDatabase, key: bytes) -> None:
    drafts = DraftStore(db, key)
    with db.write() as conn:
        for name in ("a", "b", "c"):
            drafts.put(conn, "case-1", name, name.encode())
        drafts.put(conn, "case-2", "a", b"kept")
    with db.write() as conn:
        assert drafts.delete(conn, "case-1", "c") is True
        assert drafts.delete(conn, "case-1", "c") is False
        assert drafts.delete_case(conn, "case-1") == 2
    assert drafts.names("case-1") == []
    assert drafts.get("case-2", "a") == b"kept"


def test_a_flipped_byte_is_detected(db: StationDatabase, key: bytes) -> None:
    drafts = DraftStore(db, key)
    with db.write() as conn:
        drafts.put(conn, "case-1", "portrait.jpg", PORTRAIT)
    with db.write() as conn:
        sealed = bytearray(
            conn.execute("SELECT ciphertext FROM draft_blob WHERE case_id = 'case-1'").fetchone()[0]
        )
        sealed[1000] ^= 0x01
        conn.execute("UPDATE draft_blob SET ciphertext = ?", (bytes(sealed),))
    with pytest.raises(DraftCorruptError, match=r"case-1/portrait\.jpg"):
        drafts.get("case-1", "portrait.jpg")
    with db.write() as conn:
        conn.execute("UPDATE draft_blob SET nonce = ?", (b"\x00" * 12,))
    with pytest.raises(DraftCorruptError):
        drafts.get("case-1", "portrait.jpg")


def test_rows_swapped_between_cases_or_names_do_not_decrypt(
    db: StationDatabase, key: bytes
) -> None:
    drafts = DraftStore(db, key)
    with db.write() as conn:
        drafts.put(conn, "case-1", "finger-02.wsq", b"citizen one's right index")
        drafts.put(conn, "case-2", "finger-02.wsq", b"citizen two's right index")
        drafts.put(conn, "case-2", "finger-07.wsq", b"citizen two's left index")
    with db.write() as conn:
        one = conn.execute(
            "SELECT nonce, ciphertext FROM draft_blob WHERE case_id = 'case-1'"
        ).fetchone()
        # Copy case-1's blob over case-2's, and case-2's finger 7 over its finger 2.
        conn.execute(
            "UPDATE draft_blob SET nonce = ?, ciphertext = ? "
            "WHERE case_id = 'case-2' AND name = 'finger-07.wsq'",
            (one[0], one[1]),
        )
        conn.execute(
            "INSERT INTO draft_blob SELECT 'case-3', name, nonce, ciphertext, updated_at "
            "FROM draft_blob WHERE case_id = 'case-1'"
        )
    assert drafts.get("case-1", "finger-02.wsq") == b"citizen one's right index"
    assert drafts.get("case-2", "finger-02.wsq") == b"citizen two's right index"
    with pytest.raises(DraftCorruptError):
        drafts.get("case-2", "finger-07.wsq")
    with pytest.raises(DraftCorruptError):
        drafts.get("case-3", "finger-02.wsq")


def test_another_key_cannot_read(db: StationDatabase, key: bytes, tmp_path: Path) -> None:
    with db.write() as conn:
        DraftStore(db, key).put(conn, "case-1", "consent", b"yes")
    other = SoftwareDataKey(tmp_path / "other-key").load_or_create()
    with pytest.raises(DraftCorruptError, match="another station data key"):
        DraftStore(db, other).get("case-1", "consent")
    assert DraftStore(db, key).get("case-1", "consent") == b"yes"


def test_a_put_in_a_rolled_back_transaction_leaves_nothing(db: StationDatabase, key: bytes) -> None:
    drafts = DraftStore(db, key)
    with db.write() as conn:
        drafts.put(conn, "case-1", "consent", b"old")

    def interrupted() -> None:
        with db.write() as conn:
            drafts.put(conn, "case-1", "consent", b"new")
            drafts.put(conn, "case-1", "portrait.jpg", PORTRAIT)
            raise RuntimeError("power cut (stand-in) before the case state was written")

    with pytest.raises(RuntimeError, match="power"):
        interrupted()
    assert drafts.get("case-1", "consent") == b"old"
    assert drafts.names("case-1") == ["consent"]


def test_bad_arguments(db: StationDatabase, key: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        DraftStore(db, key[:16])
    drafts = DraftStore(db, key)
    with db.write() as conn:
        with pytest.raises(ValueError, match="case id"):
            drafts.put(conn, "", "x", b"")
        with pytest.raises(ValueError, match="NUL"):
            drafts.put(conn, "case\0x", "x", b"")
        with pytest.raises(TypeError, match="bytes"):
            drafts.put(conn, "case", "x", "text")  # type: ignore[arg-type]
