"""BAC and secure messaging against the worked example of ICAO 9303-11 Appendix D."""

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from enrollment.icao import mrz as icao_mrz
from enrollment.icao.errors import LdsError
from station.drivers.card.apdu import Command, Response
from station.drivers.card.bac import (
    BacChip,
    BacError,
    BacTerminal,
    check_digit,
    document_keys,
    key_seed,
    mrz_information,
)
from station.drivers.card.cardcrypto import pad, unpad
from station.drivers.card.hostcrypto import HostCrypto
from station.drivers.card.sm import SecureMessaging, SmError

pytestmark = pytest.mark.timeout(30)

H = bytes.fromhex
CRYPTO = HostCrypto()
MRZ_INFO = "L898902C<369080619406236"
RND_IC = H("4608F91988702212")
RND_IFD = H("781723860C06C226")
K_IFD = H("0B795240CB7049B01C19B33E32804F0B")
K_IC = H("0B4F80323EB3191CB04970CB4052790B")
CMD_DATA = H("72C29C2371CC9BDB65B779B8E8D37B29ECC154AA56A8799FAE2F498F76ED92F25F1448EEA8AD90A7")
RESP_DATA = H("46B9342A41396CD7386BF5803104D7CEDC122B9132139BAF2EEDC94EE178534F2F2D235D074D7449")
KS_ENC = H("979EC13B1CBFE9DCD01AB0FED307EAE5")
KS_MAC = H("F1CB1F1FB5ADF208806B89DC579DC1F8")
SSC = H("887022120C06C226")


def test_mrz_information_and_check_digits() -> None:
    assert check_digit("L898902C<") == "3"
    assert check_digit("690806") == "1"
    assert check_digit("940623") == "6"
    assert mrz_information("L898902C", "690806", "940623") == MRZ_INFO


def test_document_keys_appendix_d2() -> None:
    assert key_seed(CRYPTO, MRZ_INFO) == H("239AB9CB282DAF66231DC5A4DF6BFBAE")
    k_enc, k_mac = document_keys(CRYPTO, MRZ_INFO)
    assert k_enc == H("AB94FDECF2674FDFB9B391F85D7F76F2")
    assert k_mac == H("7962D9ECE03D1ACD4C76089DCE131543")


def test_mutual_authentication_appendix_d3_both_sides() -> None:
    k_enc, k_mac = document_keys(CRYPTO, MRZ_INFO)
    terminal = BacTerminal(CRYPTO, k_enc, k_mac)
    chip = BacChip(CRYPTO, k_enc, k_mac)
    assert chip.challenge(RND_IC) == RND_IC
    assert terminal.authenticate_data(RND_IC, RND_IFD, K_IFD) == CMD_DATA
    answer, chip_sm = chip.respond(CMD_DATA, K_IC)
    assert answer == RESP_DATA
    sm = terminal.finish(answer)
    for session in (sm, chip_sm):
        assert session.ks_enc == KS_ENC
        assert session.ks_mac == KS_MAC
        assert session.ssc_bytes() == SSC


def test_wrong_keys_fail_on_the_chip() -> None:
    chip = BacChip(CRYPTO, *document_keys(CRYPTO, MRZ_INFO))
    wrong = BacTerminal(
        CRYPTO, *document_keys(CRYPTO, mrz_information("L898902C", "690806", "940624"))
    )
    data = wrong.authenticate_data(chip.challenge())
    with pytest.raises(BacError, match="MAC"):
        chip.respond(data)
    with pytest.raises(BacError, match="no challenge"):
        chip.respond(data)  # a challenge is single-use


def _sessions() -> tuple[SecureMessaging, SecureMessaging]:
    return (
        SecureMessaging(CRYPTO, KS_ENC, KS_MAC, SSC),
        SecureMessaging(CRYPTO, KS_ENC, KS_MAC, SSC),
    )


def test_secure_messaging_appendix_d4() -> None:
    sm, chip = _sessions()
    # SELECT EF.COM
    select = Command(0x00, 0xA4, 0x02, 0x0C, H("011E"))
    protected = sm.protect(select)
    assert protected.encode() == H("0CA4020C158709016375432908C044F68E08BF8B92D635FF24F800")
    assert chip.unprotect_command(protected) == select
    reply = chip.protect_response(Response(b"", 0x9000), 0xA4)
    assert reply.encode() == H("990290008E08FA855A5D4C50A8ED9000")
    assert sm.unprotect(reply) == Response(b"", 0x9000)
    # READ BINARY, the first 4 bytes
    read4 = Command(0x00, 0xB0, 0x00, 0x00, b"", 4)
    protected = sm.protect(read4)
    assert protected.encode() == H("0CB000000D9701048E08ED6705417E96BA5500")
    assert chip.unprotect_command(protected) == read4
    reply = chip.protect_response(Response(H("60145F01"), 0x9000), 0xB0)
    assert reply.encode() == H("8709019FF0EC34F9922651990290008E08AD55CC17140B2DED9000")
    assert sm.unprotect(reply).data == H("60145F01")
    # READ BINARY, the remaining 18 bytes from offset 4
    read18 = Command(0x00, 0xB0, 0x00, 0x04, b"", 0x12)
    protected = sm.protect(read18)
    assert protected.encode() == H("0CB000040D9701128E082EA28A70F3C7B53500")
    assert chip.unprotect_command(protected) == read18
    rest = H("04303130365F36063034303030305C026175")
    reply = chip.protect_response(Response(rest, 0x9000), 0xB0)
    assert reply.encode() == H(
        "871901FB9235F4E4037F2327DCC8964F1F9B8C30F42C8E2FFF224A990290008E08C8B2787EAEA07D749000"
    )
    assert sm.unprotect(reply).data == rest
    assert sm.ssc_bytes() == chip.ssc_bytes() == H("887022120C06C22C")


def test_tampered_response_and_command_fail_their_mac() -> None:
    sm, chip = _sessions()
    protected = sm.protect(Command(0x00, 0xB0, 0x00, 0x00, b"", 4))
    tampered = Command(protected.cla, protected.ins, 0x00, 0x01, protected.data, protected.le)
    with pytest.raises(SmError, match="MAC"):
        chip.unprotect_command(tampered)
    sm2, chip2 = _sessions()
    chip2.unprotect_command(sm2.protect(Command(0x00, 0xB0, 0x00, 0x00, b"", 4)))
    reply = chip2.protect_response(Response(b"abcd", 0x9000), 0xB0).encode()
    flipped = reply[:3] + bytes([reply[3] ^ 1]) + reply[4:]
    with pytest.raises(SmError, match="MAC"):
        sm2.unprotect(Response.decode(flipped))


@pytest.mark.parametrize(
    "sw", [0x6982, 0x6A82, 0x6300, 0x6985, 0x6700, 0x6F00, 0x6282], ids=lambda sw: f"{sw:04X}"
)
def test_an_unmacd_status_word_other_than_6987_6988_is_refused(sw: int) -> None:
    """ICAO 9303-11 9.8: under SM only 6987/6988 may come back plain; anything else
    without a MAC could have been injected on the link (a plain 6982 would pass a card
    whose data groups cannot be read)."""
    sm, _ = _sessions()
    with pytest.raises(SmError, match="without secure messaging"):
        sm.unprotect(Response(b"", sw))
    with pytest.raises(SmError):
        sm.unprotect(Response(b"", 0x9000))


@pytest.mark.parametrize("sw", [0x6987, 0x6988], ids=lambda sw: f"{sw:04X}")
def test_a_plain_sm_error_ends_the_session_on_the_terminal_side(sw: int) -> None:
    sm, _ = _sessions()
    assert sm.unprotect(Response(b"", sw)) == Response(b"", sw)


def test_odd_ins_and_extended_length_round_trip() -> None:
    sm, chip = _sessions()
    command = Command(0x00, 0xB1, 0x00, 0x00, H("5403008000"), 1000)
    protected = sm.protect(command)
    assert protected.data[0] == 0x85  # odd INS: DO'85', no padding indicator
    assert protected.needs_extended()
    decoded = Command.decode(protected.encode())
    assert chip.unprotect_command(decoded) == command
    big = bytes(range(256)) * 4
    reply = chip.protect_response(Response(big, 0x9000), 0xB1)
    assert sm.unprotect(Response.decode(reply.encode())).data == big


def test_padding_method_2() -> None:
    assert pad(b"") == H("8000000000000000")
    assert pad(bytes(7)) == bytes(7) + b"\x80"
    assert unpad(pad(b"abc")) == b"abc"
    with pytest.raises(ValueError, match="padding"):
        unpad(bytes(8))


# --- the MRZ helpers: the core's copy (MicroPython) and enrollment.icao's must agree -------

MRZ_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ<"
mrz_text = st.text(alphabet=MRZ_ALPHABET, max_size=14)
dates = st.text(alphabet="0123456789", min_size=6, max_size=6)


@given(mrz_text)
@example("")
@example("L898902C3")
@example("<<<<<<<<<")
def test_check_digit_equals_enrollment_icao(text: str) -> None:
    assert check_digit(text) == icao_mrz.check_digit(text)


@given(st.text(alphabet=MRZ_ALPHABET, max_size=9), dates, dates)
@example("L898902C", "690806", "940623")
@example("", "000101", "991231")
@example("C11T002JM", "960220", "310101")
def test_mrz_information_equals_enrollment_icao(number: str, birth: str, expiry: str) -> None:
    """The encoder derives the chip's keys from enrollment.icao's string; a card core
    that disagreed would lock the chip with keys no reader could match."""
    assert mrz_information(number, birth, expiry) == icao_mrz.mrz_information(number, birth, expiry)


@given(
    st.text(max_size=9).filter(lambda t: any(c not in MRZ_ALPHABET for c in t)),
    st.sampled_from(["number", "birth", "expiry"]),
)
@example("l898902c", "number")
@example("L898902c", "number")
@example("ab", "birth")
def test_both_refuse_what_is_not_mrz_text(bad: str, where: str) -> None:
    """Lower case included: MRZ text is upper case, and quietly upper-casing it would
    accept an MRZ that is not the one the chip was written with."""
    fields = {"number": "L898902C", "birth": "690806", "expiry": "940623"}
    fields[where] = bad
    args = (fields["number"], fields["birth"], fields["expiry"])
    with pytest.raises(LdsError):
        icao_mrz.mrz_information(*args)
    with pytest.raises(ValueError, match="not an MRZ character"):
        mrz_information(*args)
