"""PACE ECDH generic mapping + AES-128 against the worked example of ICAO 9303-11
Appendix G.1 (brainpoolP256r1, MRZ "T22000129364081251010318"), both sides."""

import pytest

from station.drivers.card.apdu import Command, Response
from station.drivers.card.ec import BRAINPOOL_P256R1, NIST_P256
from station.drivers.card.hostcrypto import HostCrypto
from station.drivers.card.pace import (
    PaceChip,
    PaceError,
    PaceTerminal,
    card_access,
    dynamic_data,
    kdf_aes128,
    mse_set_at,
    password_key,
    supported_pace,
)

pytestmark = pytest.mark.timeout(30)

H = bytes.fromhex
CRYPTO = HostCrypto()
MRZ_INFO = "T22000129364081251010318"
CARD_ACCESS = H("31143012060A04007F0007020204020202010202010D")
NONCE = H("3F00C4D39D153F2B2A214A078D899B22")
SK_MAP_IFD = 0x7F4EF07B9EA82FD78AD689B38D0BC78CF21F249D953BC46F4C6E19259C010F99
SK_EPH_IFD = 0xA73FB703AC1436A18E0CFA5ABB3F7BEC7A070E7A6788486BEE230C4A22762595
SK_MAP_IC = 0x498FF49756F2DC1587840041839A85982BE7761D14715FB091EFA7BCE9058560
SK_EPH_IC = 0x107CF58696EF6155053340FD633392BA81909DF7B9706F226F32086C7AFF974A
COMMANDS = [
    "0022C1A412800A04007F0007020204020283010184010D",
    "10860000027C0000",
    "10860000457C438141047ACF3EFC982EC45565A4B155129EFBC74650DCBFA6362D896F"
    "C70262E0C2CC5E544552DCB6725218799115B55C9BAA6D9F6BC3A9618E70C25AF71777A9C4922D00",
    "10860000457C438341042DB7A64C0355044EC9DF190514C625CBA2CEA48754887122"
    "F3A5EF0D5EDD301C3556F3B3B186DF10B857B58F6A7EB80F20BA5DC7BE1D43D9BF850149FBB3646200",
    "008600000C7C0A8508C2B0BD78D94BA86600",
]
ANSWERS = [
    "7C12801095A3A016522EE98D01E76CB6B98B42C3",
    "7C43824104824FBA91C9CBE26BEF53A0EBE7342A3BF178CEA9F45DE0B70AA601651FBA3F57"
    "30D8C879AAA9C9F73991E61B58F4D52EB87A0A0C709A49DC63719363CCD13C54",
    "7C438441049E880F842905B8B3181F7AF7CAA9F0EFB743847F44A306D2D28C1D9EC65DF6DB"
    "7764B22277A2EDDC3C265A9F018F9CB852E111B768B326904B59A0193776F094",
    "7C0A86083ABB9674BCE93C08",
]


def test_card_access_and_password_key() -> None:
    assert card_access(13) == CARD_ACCESS
    assert supported_pace(CARD_ACCESS) == 13
    assert supported_pace(H("3100")) is None
    secret = password_key(CRYPTO, MRZ_INFO)
    assert secret == H("7E2D2A41C74EA0B38CD36F863939BFA8E9032AAD")
    assert kdf_aes128(CRYPTO, secret, 3) == H("89DED1B26624EC1E634C1989302849DD")


def test_terminal_side_appendix_g1() -> None:
    terminal = PaceTerminal(CRYPTO, password_key(CRYPTO, MRZ_INFO), 13)
    sent = [mse_set_at(13), terminal.start()]
    sent.append(terminal.map_nonce(dynamic_data(H(ANSWERS[0]), 0x80), SK_MAP_IFD))
    sent.append(terminal.key_agreement(dynamic_data(H(ANSWERS[1]), 0x82), SK_EPH_IFD))
    sent.append(terminal.mutual_authentication(dynamic_data(H(ANSWERS[2]), 0x84)))
    assert [c.encode().hex().upper() for c in sent] == COMMANDS
    sm = terminal.finish(dynamic_data(H(ANSWERS[3]), 0x86))
    assert sm.ssc_bytes() == bytes(16)


def test_chip_side_appendix_g1() -> None:
    chip = PaceChip(CRYPTO, password_key(CRYPTO, MRZ_INFO), 13)
    inputs = [Command.decode(H(c)).data[2:] for c in COMMANDS[1:]]
    answers = [
        chip.answer(inputs[0], nonce=NONCE),
        chip.answer(inputs[1], sk_map=SK_MAP_IC),
        chip.answer(inputs[2], sk_eph=SK_EPH_IC),
        chip.answer(inputs[3]),
    ]
    assert [a.hex().upper() for a in answers] == ANSWERS


def _run(terminal_mrz: str, chip_mrz: str, parameter_id: int = 12) -> tuple[PaceTerminal, PaceChip]:
    terminal = PaceTerminal(CRYPTO, password_key(CRYPTO, terminal_mrz), parameter_id)
    chip = PaceChip(CRYPTO, password_key(CRYPTO, chip_mrz), parameter_id)
    command = terminal.start()
    answer = chip.answer(command.data[2:])
    command = terminal.map_nonce(dynamic_data(answer, 0x80))
    answer = chip.answer(command.data[2:])
    command = terminal.key_agreement(dynamic_data(answer, 0x82))
    answer = chip.answer(command.data[2:])
    command = terminal.mutual_authentication(dynamic_data(answer, 0x84))
    answer = chip.answer(command.data[2:])
    terminal.finish(dynamic_data(answer, 0x86))
    return terminal, chip


def test_random_run_on_p256_gives_both_sides_the_same_aes_session() -> None:
    terminal, chip = _run(MRZ_INFO, MRZ_INFO)
    assert terminal.curve is NIST_P256
    sm, chip_sm = terminal.session(), chip.session()
    protected = sm.protect(Command(0x00, 0xB0, 0x00, 0x00, b"", 4))
    assert chip_sm.unprotect_command(protected) == Command(0x00, 0xB0, 0x00, 0x00, b"", 4)
    reply = chip_sm.protect_response(Response(b"\x60\x14\x5f\x01", 0x9000), 0xB0)
    assert sm.unprotect(reply).data == b"\x60\x14\x5f\x01"


def test_wrong_mrz_fails_at_the_token() -> None:
    with pytest.raises(PaceError, match="token"):
        _run(MRZ_INFO, "T22000129364081251010319")
    assert BRAINPOOL_P256R1.contains(BRAINPOOL_P256R1.g)
