"""The eMRTD applet (the emulator's chip), driven APDU by APDU without any I/O."""

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from station.drivers.card import profile
from station.drivers.card.apdu import Command, Response
from station.drivers.card.applet import EmrtdApplet, ForeignApplet
from station.drivers.card.bac import BacTerminal, document_keys
from station.drivers.card.hostcrypto import HostCrypto
from station.drivers.card.pace import (
    PaceTerminal,
    card_access,
    dynamic_data,
    mse_set_at,
    password_key,
)
from station.drivers.card.sm import SecureMessaging
from station.drivers.card.tlv import find, parse, tlv

pytestmark = pytest.mark.timeout(30)

CRYPTO = HostCrypto()
MRZ_INFO = "L898902C<369080619406236"
COM = tlv(0x60, tlv(0x5F01, b"0107") + tlv(0x5F36, b"040000") + tlv(0x5C, b"\x61\x75\x63"))
FILES = {
    profile.FID_EF_COM: COM,
    0x0101: tlv(0x61, tlv(0x5F1F, b"I<VNM" + b"<" * 85)),
    0x0102: tlv(0x75, bytes(range(256)) * 160),  # 40 KB: past the 15-bit offsets
    0x0103: tlv(0x63, b"fingers" * 50),
    profile.FID_EF_SOD: tlv(0x77, b"sod" * 100),
}


def send(card: EmrtdApplet, command: Command) -> Response:
    return Response.decode(card.process(command.encode()))


def personalised(lock: bool = True) -> EmrtdApplet:
    card = EmrtdApplet(CRYPTO)
    assert send(card, profile.select_aid()).ok
    for fid, content in FILES.items():
        for command in profile.write_commands(fid, content, 255):
            response = send(card, command)
            assert response.ok, (command, response)
    assert send(card, profile.put_bac_keys(*document_keys(CRYPTO, MRZ_INFO))).ok
    if lock:
        assert send(card, profile.select_aid()).ok
        assert send(card, profile.activate()).ok
    return card


def bac(card: EmrtdApplet, mrz_info: str = MRZ_INFO) -> tuple[SecureMessaging | None, Response]:
    challenge = send(card, profile.get_challenge())
    assert challenge.ok
    terminal = BacTerminal(CRYPTO, *document_keys(CRYPTO, mrz_info))
    answer = send(card, profile.mutual_authenticate(terminal.authenticate_data(challenge.data)))
    return (terminal.finish(answer.data) if answer.ok else None), answer


def sm_send(card: EmrtdApplet, sm: SecureMessaging, command: Command) -> Response:
    raw = sm.protect(command).encode(extended=True)
    return sm.unprotect(Response.decode(card.process(raw)))


def read_all(card: EmrtdApplet, sm: SecureMessaging | None, fid: int, step: int = 0xDF) -> bytes:
    def go(command: Command) -> Response:
        return send(card, command) if sm is None else sm_send(card, sm, command)

    assert go(profile.select_ef(fid)).ok
    out = b""
    while True:
        command = profile.read_binary(len(out), step)
        response = go(command)
        assert response.sw in (0x9000, 0x6282), response
        data = response.data
        if command.ins & 1:
            data = data[2 + (data[1] & 0x7F if data[1] & 0x80 else 0) :]
        out += data
        if response.sw == 0x6282:
            return out


def test_application_fcp_reports_life_cycle_and_files() -> None:
    card = personalised(lock=False)
    info = profile.ApplicationInfo.parse(send(card, profile.select_aid(fcp=True)).data)
    assert info.lifecycle == profile.LC_INITIALISATION
    assert sorted(info.fids) == sorted(FILES)
    assert send(card, profile.activate()).ok
    info = profile.ApplicationInfo.parse(send(card, profile.select_aid(fcp=True)).data)
    assert info.locked
    assert info.fids == []


def test_plain_read_during_personalisation_returns_what_was_written() -> None:
    card = personalised(lock=False)
    for fid, content in FILES.items():
        assert read_all(card, None, fid) == content


def test_lock_needs_the_minimum_files_and_keys() -> None:
    card = EmrtdApplet(CRYPTO)
    assert send(card, profile.select_aid()).ok
    assert send(card, profile.activate()).sw == 0x6985
    for command in profile.write_commands(0x0101, b"x", 255):
        assert send(card, command).ok
    assert send(card, profile.select_aid()).ok
    assert send(card, profile.activate()).sw == 0x6985


def test_after_lock_writes_and_plain_reads_are_refused() -> None:
    card = personalised()
    assert send(card, profile.select_aid()).ok
    assert send(card, profile.create_ef(0x0105, 10)).sw == 0x6985
    assert send(card, profile.delete_ef(0x0101)).sw == 0x6985
    assert send(card, profile.put_bac_keys(bytes(16), bytes(16))).sw == 0x6985
    assert send(card, profile.activate()).sw == 0x6985
    assert send(card, profile.select_ef(0x0101)).sw == 0x6982
    assert send(card, Command(0x00, 0xB0, 0x81, 0x00, b"", 4)).sw == 0x6982  # by SFI
    sm, _ = bac(card)
    assert sm is not None
    assert sm_send(card, sm, profile.update_binary(0, b"x")).sw == 0x6985


def test_plain_commands_after_lock_answer_as_card_md_says() -> None:
    """docs/protocols/card.md, "Anything plain once locked": what a plain command gets."""
    card = personalised()
    read4 = profile.read_binary(0, 4)
    mf = Command(0x00, 0xA4, 0x00, 0x0C)
    assert send(card, mf).sw == 0x9000  # SELECT MF: always
    assert send(card, read4).sw == 0x6986  # no current EF
    assert send(card, profile.select_ef(0x0101)).sw == 0x6A82  # application not selected
    assert send(card, Command(0x00, 0xB0, 0x81, 0x00, b"", 4)).sw == 0x6A82  # SFI, same
    assert send(card, profile.select_ef(profile.FID_CARD_ACCESS)).sw == 0x6A82  # none here
    assert send(card, profile.select_aid()).sw == 0x9000
    assert send(card, read4).sw == 0x6986
    assert send(card, profile.select_ef(0x0101)).sw == 0x6982
    assert send(card, profile.select_ef(0x0109)).sw == 0x6982  # absent, but refused first
    assert send(card, Command(0x00, 0xB0, 0x81, 0x00, b"", 4)).sw == 0x6982
    assert send(card, profile.internal_authenticate(bytes(8))).sw == 0x6982
    for write in (
        profile.create_ef(0x0105, 4),
        profile.update_binary(0, b"x"),
        profile.delete_ef(0x0101),
        profile.put_bac_keys(bytes(16), bytes(16)),
        profile.activate(),
    ):
        assert send(card, write).sw == 0x6985, write
    assert send(card, profile.get_challenge()).ok
    assert send(card, Command(0x00, 0x2A, 0x00, 0x00)).sw == 0x6D00
    assert send(card, Command(0x80, 0xB0, 0x00, 0x00, b"", 4)).sw == 0x6E00
    # a current EF chosen under secure messaging stays current, but not readable in plain
    sm, _ = bac(card)
    assert sm is not None
    assert sm_send(card, sm, profile.select_ef(0x0101)).ok
    assert send(card, read4).sw == 0x6982


def test_the_failure_count_is_shown_after_lock_only_under_secure_messaging() -> None:
    """C2 in the FCP: while personalising no authentication can fail, so it is 0; once
    locked it counts, and only a reader that authenticated (knows the MRZ) is told: a
    count anyone could read would tell cards apart."""
    card = personalised(lock=False)
    info = profile.ApplicationInfo.parse(send(card, profile.select_aid(fcp=True)).data)
    assert info.bac_failures == 0
    assert send(card, profile.activate()).ok
    for _ in range(2):
        sm, answer = bac(card, "L898902C<369080619406237")
        assert sm is None
        assert answer.sw == 0x6300
    plain = send(card, profile.select_aid(fcp=True))
    assert plain.ok
    assert find(parse(find(parse(plain.data), 0x62) or b""), 0xA5) is None
    sm, _ = bac(card)
    assert sm is not None
    protected = sm_send(card, sm, profile.select_aid(fcp=True))
    assert protected.ok
    info = profile.ApplicationInfo.parse(protected.data)
    assert (info.locked, info.bac_failures, info.fids) == (True, 2, [])


def test_bac_read_back_all_but_dg3() -> None:
    card = personalised()
    assert send(card, profile.select_aid()).ok
    sm, _ = bac(card)
    assert sm is not None
    for fid, content in FILES.items():
        if fid == 0x0103:
            assert sm_send(card, sm, profile.select_ef(fid)).sw == 0x6982  # EAC only
            continue
        assert read_all(card, sm, fid) == content


def test_wrong_mrz_fails_bac_and_is_counted() -> None:
    card = personalised()
    assert send(card, profile.select_aid()).ok
    sm, answer = bac(card, "L898902C<369080619406237")
    assert sm is None
    assert answer.sw == 0x6300
    assert card.bac_failures == 1
    assert send(card, profile.mutual_authenticate(bytes(40))).sw == 0x6985  # no challenge
    good, _ = bac(card)
    assert good is not None


def test_a_broken_mac_ends_the_session() -> None:
    card = personalised()
    send(card, profile.select_aid())
    sm, _ = bac(card)
    assert sm is not None
    protected = sm.protect(profile.select_ef(0x0101))
    tampered = protected.encode()[:-3] + b"\x00\x00\x00"
    assert Response.decode(card.process(tampered)).sw == 0x6988
    assert card.sm is None
    assert Response.decode(card.process(sm.protect(profile.select_ef(0x0101)).encode())).sw == (
        0x6988
    )


def test_state_survives_export_and_restore() -> None:
    card = personalised()
    copy = EmrtdApplet(CRYPTO)
    copy.restore(card.export())
    send(copy, profile.select_aid())
    sm, _ = bac(copy)
    assert sm is not None
    assert read_all(copy, sm, 0x0102) == FILES[0x0102]


def test_writes_beyond_the_file_or_capacity_are_refused() -> None:
    card = EmrtdApplet(CRYPTO, capacity=100)
    send(card, profile.select_aid())
    assert send(card, profile.create_ef(0x0101, 10)).ok
    assert send(card, profile.update_binary(8, b"abc")).sw == 0x6A84
    assert send(card, profile.update_binary(11, b"a")).sw == 0x6B00
    assert send(card, profile.create_ef(0x0101, 10)).sw == 0x6A89
    assert send(card, profile.create_ef(0x0102, 91)).sw == 0x6A84


def test_foreign_card_has_no_emrtd_application() -> None:
    card = ForeignApplet()
    assert Response.decode(card.process(profile.select_aid(fcp=True).encode())).sw == 0x6A82
    assert card.atr != EmrtdApplet.atr


def pace_card() -> EmrtdApplet:
    card = personalised(lock=False)
    for command in profile.write_commands(profile.FID_CARD_ACCESS, card_access(12), 255):
        assert send(card, command).ok
    assert send(card, profile.put_pace_secret(password_key(CRYPTO, MRZ_INFO))).ok
    assert send(card, profile.select_aid()).ok
    assert send(card, profile.activate()).ok
    return card


def pace(card: EmrtdApplet, mrz_info: str = MRZ_INFO) -> SecureMessaging | None:
    assert send(card, mse_set_at(12)).ok
    terminal = PaceTerminal(CRYPTO, password_key(CRYPTO, mrz_info), 12)
    answer = send(card, terminal.start())
    answer = send(card, terminal.map_nonce(dynamic_data(answer.data, 0x80)))
    answer = send(card, terminal.key_agreement(dynamic_data(answer.data, 0x82)))
    answer = send(card, terminal.mutual_authentication(dynamic_data(answer.data, 0x84)))
    if answer.sw == 0x6300:
        return None
    return terminal.finish(dynamic_data(answer.data, 0x86))


def test_pace_opens_an_aes_session_and_card_access_stays_public() -> None:
    card = pace_card()
    assert read_all(card, None, profile.FID_CARD_ACCESS) == card_access(12)  # plain
    sm = pace(card)
    assert sm is not None
    assert sm.block == 16
    assert sm_send(card, sm, profile.select_aid()).ok
    assert read_all(card, sm, 0x0102) == FILES[0x0102]
    assert sm_send(card, sm, profile.select_ef(0x0103)).sw == 0x6982  # DG3 still needs EAC


def test_pace_with_the_wrong_mrz_is_refused_and_counted() -> None:
    card = pace_card()
    assert pace(card, "L898902C<369080619406237") is None
    assert card.bac_failures == 1
    assert card.sm is None
    assert send(card, Command(0x00, 0x86, 0, 0, bytes.fromhex("7C00"), 256)).sw == 0x6985


def test_pace_needs_a_lock_and_the_chaining_in_order() -> None:
    card = personalised(lock=False)
    assert send(card, mse_set_at(12)).sw == 0x6985  # still being personalised
    card = pace_card()
    assert send(card, mse_set_at(13)).sw == 0x6A80  # not what EF.CardAccess offers
    assert send(card, mse_set_at(12)).ok
    last_first = Command(0x00, 0x86, 0, 0, bytes.fromhex("7C00"), 256)
    assert send(card, last_first).sw == 0x6985


def test_lock_refused_when_pace_is_announced_without_its_password() -> None:
    card = personalised(lock=False)
    for command in profile.write_commands(profile.FID_CARD_ACCESS, card_access(12), 255):
        assert send(card, command).ok
    assert send(card, profile.select_aid()).ok
    assert send(card, profile.activate()).sw == 0x6985


def test_internal_authenticate_signs_only_under_secure_messaging() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    card = personalised(lock=False)
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    assert send(card, profile.put_aa_key(scalar)).ok
    send(card, profile.select_aid())
    assert send(card, profile.activate()).ok
    challenge = bytes(range(8))
    assert send(card, profile.internal_authenticate(challenge)).sw == 0x6982  # plain
    send(card, profile.select_aid())
    sm, _ = bac(card)
    assert sm is not None
    answer = sm_send(card, sm, profile.internal_authenticate(challenge))
    assert answer.ok
    r, s = int.from_bytes(answer.data[:32], "big"), int.from_bytes(answer.data[32:], "big")
    key.public_key().verify(encode_dss_signature(r, s), challenge, ec.ECDSA(hashes.SHA256()))
    assert sm_send(card, sm, profile.internal_authenticate(b"short")).sw == 0x6700
    without = personalised()
    send(without, profile.select_aid())
    sm, _ = bac(without)
    assert sm is not None
    assert sm_send(without, sm, profile.internal_authenticate(challenge)).sw == 0x6A88
