"""The card encoder against our emulated eMRTD card, through a real pcscd and vpcd."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from enrollment.icao.chip import ChipContents, ChipSecrets
from station.drivers.card import applet, profile
from station.drivers.card.apdu import Response
from station.drivers.card.emulator import Faults
from station.drivers.card.encoder import CardEncoder, EncoderSettings
from station.drivers.card.errors import (
    AccessDenied,
    BacFailed,
    CardLocked,
    CardRemoved,
    NoCard,
    NoReader,
    PaceFailed,
    VerificationFailed,
    WrongCardType,
)
from tests import cardkit
from tests.cardkit import CardBay, PcscDaemon
from tests.icaokit import IcaoPki, sample_chip

pytestmark = pytest.mark.timeout(60)

pcscd = cardkit.pcscd
card_bay = cardkit.card_bay


class Chip(NamedTuple):
    contents: ChipContents
    pki: IcaoPki
    secrets: ChipSecrets


@pytest.fixture(scope="module")
def chip() -> Chip:
    contents, secrets, pki = sample_chip()
    return Chip(contents, pki, secrets)


def raw(encoder: CardEncoder, command: bytes) -> Response:
    return Response.decode(encoder.link.transmit(command))


def test_personalise_lock_read_back_and_verify(card_bay: CardBay, chip: Chip) -> None:
    contents, pki, secrets = chip
    card_bay.card().insert()
    encoder = card_bay.encoder()
    encoder.wait_for_card(5)
    report = encoder.personalise(contents, secrets)
    assert report.keys_loaded == ("active_authentication",)
    assert report.keys_not_loaded == ("chip_authentication",)
    expected = {fid: len(data) for fid, data in contents.files.items()}
    assert report.files == {**expected, profile.FID_CARD_ACCESS: 22}  # + EF.CardAccess
    assert report.locked
    assert report.cleaned == ()
    assert report.eac_files_checked == (0x0103,)
    assert report.apdus > len(contents.files) * 2
    assert report.bytes_sent > report.payload_bytes
    check = encoder.verify(contents, [pki.csca])
    assert check.read.access == "pace"  # the card offers PACE, so the encoder uses it
    assert check.active_authentication is True  # the chip holds DG15's private key
    assert check.not_readable == (0x0103,)  # DG3 is behind EAC
    assert set(check.compared) == set(contents.files) - {0x0103}
    assert check.passive.verified == tuple(sorted(set(contents.data_groups()) - {3}))
    assert check.passive.not_read == (3,)
    health = encoder.health.snapshot()
    assert health.ok
    assert health.details["reader"] == card_bay.reader


def test_verify_fails_when_an_ordinary_data_group_cannot_be_read(
    card_bay: CardBay, chip: Chip, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only DG3/DG4 may be refused under BAC/PACE (they need EAC): a chip that refuses DG2
    does not hold a readable card, whatever passive authentication says of the rest."""
    contents, pki, secrets = chip
    monkeypatch.setattr(applet, "EAC_PROTECTED", (0x0102, 0x0103, 0x0104))  # the emulator's
    card_bay.card().insert()
    encoder = card_bay.encoder()
    encoder.wait_for_card(5)
    encoder.personalise(contents, secrets)
    read = encoder.read_back_report(contents.mrz_information, sorted(contents.files))
    assert read.refused == (0x0102, 0x0103)
    with pytest.raises(VerificationFailed, match=r"refused.*0102") as failed:
        encoder.verify(contents, [pki.csca])
    assert "0103" not in str(failed.value).split("refused")[1]  # DG3 is expected (EAC)
    assert encoder.health.snapshot().last_error is not None


def test_extended_length_apdus_cut_the_exchange(card_bay: CardBay, chip: Chip) -> None:
    contents, pki, secrets = chip
    card_bay.card().insert()
    short = card_bay.encoder()
    short.wait_for_card(5)
    baseline = short.personalise(contents, lock=False)
    card_bay.close()  # the same card again, through an extended-length encoder
    card_bay.card().insert()
    encoder = card_bay.encoder(extended_length=True, write_chunk=4096, read_chunk=4096)
    encoder.wait_for_card(5)
    report = encoder.personalise(contents, secrets)
    assert report.cleaned == tuple(sorted({*contents.files, profile.FID_CARD_ACCESS}))
    assert report.apdus < baseline.apdus / 2
    check = encoder.verify(contents, [pki.csca])
    # SELECT AID, SELECT + READ EF.CardAccess, MSE:Set AT, 4 x GENERAL AUTHENTICATE,
    # SELECT AID under SM; per file SELECT + 4 KB reads; INTERNAL AUTHENTICATE
    reads = sum(2 + (len(contents.files[fid]) - 1) // 4096 for fid in check.compared)
    assert check.read.apdus == 9 + reads + 1


def test_locked_card_refuses_writes_and_plain_reads(card_bay: CardBay, chip: Chip) -> None:
    contents = chip.contents
    card_bay.card().insert()
    encoder = card_bay.encoder()
    encoder.wait_for_card(5)
    encoder.personalise(contents)
    with pytest.raises(CardLocked) as locked:
        encoder.personalise(contents)
    assert locked.value.code == "card_locked"
    assert "blank card" in str(locked.value)
    assert encoder.health.snapshot().last_error is not None
    encoder.link.connect()
    assert raw(encoder, profile.select_aid().encode()).ok
    assert raw(encoder, profile.create_ef(0x0105, 4).encode()).sw == 0x6985
    assert raw(encoder, profile.update_binary(0, b"x").encode()).sw in (0x6985, 0x6986)
    assert raw(encoder, profile.select_ef(0x0101).encode()).sw == 0x6982
    assert raw(encoder, bytes.fromhex("00B0810004")).sw == 0x6982  # READ BINARY by SFI


def test_wrong_mrz_fails_pace_and_bac_with_a_clear_error(card_bay: CardBay, chip: Chip) -> None:
    contents = chip.contents
    card_bay.card().insert()
    encoder = card_bay.encoder()
    encoder.wait_for_card(5)
    encoder.personalise(contents)
    wrong = contents.mrz_information[:-1] + str((int(contents.mrz_information[-1]) + 1) % 10)
    with pytest.raises(PaceFailed) as pace_failed:
        encoder.read_back(wrong)
    assert pace_failed.value.code == "pace_failed"
    assert pace_failed.value.sw == 0x6300
    assert "MRZ" in str(pace_failed.value)
    bac_only = card_bay.encoder(access="bac")
    with pytest.raises(BacFailed) as bac_failed:
        bac_only.read_back(wrong)
    assert bac_failed.value.code == "bac_failed"
    assert bac_failed.value.sw == 0x6300
    assert "MRZ" in str(bac_failed.value)
    assert isinstance(bac_failed.value, AccessDenied)
    assert set(encoder.read_back(contents.mrz_information)) == set(contents.files) - {0x0103}
    report = bac_only.read_back_report(contents.mrz_information)
    assert report.access == "bac"
    assert set(report.files) == set(contents.files) - {0x0103}


def test_pace_only_terminal_and_a_bac_only_card(card_bay: CardBay, chip: Chip) -> None:
    contents, pki, secrets = chip
    card_bay.card().insert()
    encoder = card_bay.encoder(pace_on_card=False)
    encoder.wait_for_card(5)
    encoder.personalise(contents, secrets)
    assert encoder.verify(contents, [pki.csca]).read.access == "bac"  # auto falls back
    with pytest.raises(PaceFailed, match="does not offer PACE"):
        card_bay.encoder(access="pace").read_back(contents.mrz_information)


def test_card_pulled_mid_write_then_repersonalised(card_bay: CardBay, chip: Chip) -> None:
    contents, pki, secrets = chip
    faulty = card_bay.card(faults=Faults(pull_after_writes=12))
    faulty.insert()
    encoder = card_bay.encoder()
    encoder.wait_for_card(5)
    with pytest.raises(CardRemoved) as removed:
        encoder.personalise(contents)
    assert removed.value.code == "card_removed"
    assert faulty.pulled.is_set()
    encoder.wait_for_removal(5)
    state = json.loads(faulty.state_path.read_text())
    assert state["state"]["lifecycle"] == profile.LC_INITIALISATION
    assert 0 < len(state["state"]["files"]) < len(contents.files)  # half personalised
    again = card_bay.card()  # the same card (same state file), without the fault
    again.insert()
    encoder.wait_for_card(5)
    report = encoder.personalise(contents, secrets)
    assert report.cleaned  # the half-written files were removed first
    assert encoder.verify(contents, [pki.csca]).passive.verified


def test_a_chip_without_the_aa_key_fails_verification(card_bay: CardBay, chip: Chip) -> None:
    card_bay.card().insert()
    encoder = card_bay.encoder()
    encoder.wait_for_card(5)
    report = encoder.personalise(chip.contents)  # secrets not given: no AA key on the chip
    assert report.keys_loaded == ()
    with pytest.raises(VerificationFailed, match="Active Authentication"):
        encoder.verify(chip.contents, [chip.pki.csca])
    assert encoder.health.snapshot().last_error is not None


def test_wrong_card_type(card_bay: CardBay, chip: Chip) -> None:
    card_bay.card(card_type="wrong").insert()
    encoder = card_bay.encoder()
    encoder.wait_for_card(5)
    with pytest.raises(WrongCardType) as wrong:
        encoder.personalise(chip[0])
    assert wrong.value.sw == 0x6A82


def test_no_card_within_the_timeout(card_bay: CardBay, chip: Chip) -> None:
    encoder = card_bay.encoder()
    started = time.monotonic()
    with pytest.raises(NoCard):
        encoder.wait_for_card(0.5)
    assert time.monotonic() - started < 2.0
    with pytest.raises(NoCard):
        encoder.personalise(chip[0])
    assert encoder.health.snapshot().last_error is not None


def test_no_reader_marks_the_device_absent(pcscd: PcscDaemon) -> None:
    encoder = CardEncoder(EncoderSettings(reader_pattern="^No Such Reader$"))
    try:
        with pytest.raises(NoReader, match="No Such"):
            encoder.wait_for_card(0.2)
        health = encoder.health.snapshot()
        assert not health.present
        assert "reader" in (health.last_error or "")
    finally:
        encoder.close()


def test_sod_read_back_verifies_with_openssl(card_bay: CardBay, chip: Chip, tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    contents, pki, _secrets = chip
    card_bay.card().insert()
    encoder = card_bay.encoder()
    encoder.wait_for_card(5)
    encoder.personalise(contents)
    sod = encoder.read_back(contents.mrz_information, [profile.FID_EF_SOD])[profile.FID_EF_SOD]
    sod_path = tmp_path / "sod.der"
    # EF.SOD is tag 77 around the CMS ContentInfo: openssl wants the ContentInfo.
    header = 2 + (sod[1] & 0x7F if sod[1] & 0x80 else 0)
    sod_path.write_bytes(sod[header:])
    csca_path = tmp_path / "csca.pem"
    csca_path.write_bytes(pki.csca.public_bytes(Encoding.PEM))
    result = subprocess.run(
        [
            *(openssl, "cms", "-verify", "-inform", "DER", "-in", str(sod_path)),
            *("-CAfile", str(csca_path), "-purpose", "any", "-out", str(tmp_path / "lds.der")),
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"Verification successful" in result.stderr


def test_emulator_command_line_keeps_the_card_across_processes(
    card_bay: CardBay, chip: Chip, tmp_path: Path
) -> None:
    contents, pki, secrets = chip
    state = tmp_path / "cli-card.json"
    port = str(card_bay.daemon.slot_port(card_bay.slot))
    command = [sys.executable, "-m", "station.drivers.card.emulator", "--vpcd-port", port]
    command += ["--state", str(state)]
    encoder = card_bay.encoder()
    first = subprocess.Popen([*command, "--fault", "pull_after_writes=3"], stdout=subprocess.PIPE)
    try:
        encoder.wait_for_card(10)
        with pytest.raises(CardRemoved):
            encoder.personalise(contents)
        assert first.wait(10) == 3
    finally:
        first.kill()
        first.wait(5)
    encoder.wait_for_removal(5)
    second = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        encoder.wait_for_card(10)
        assert encoder.personalise(contents, secrets).cleaned
        second.terminate()
        assert second.wait(10) == 0
        encoder.wait_for_removal(5)
    finally:
        second.kill()
        second.wait(5)
    third = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        encoder.wait_for_card(10)
        assert encoder.verify(contents, [pki.csca]).passive.verified
    finally:
        third.terminate()
        third.wait(10)
