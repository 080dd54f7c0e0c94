"""Hostile bytes at the card emulator and its codecs: it answers with a status word and
keeps working; nothing escapes but the codecs' own, documented errors."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from station.drivers.card import profile
from station.drivers.card.apdu import Command, Response
from station.drivers.card.applet import EmrtdApplet
from station.drivers.card.emulator import CardEmulator
from station.drivers.card.hostcrypto import HostCrypto
from station.drivers.card.tlv import TlvError, parse
from station.drivers.card.vpcd import CardSlot, Deframer, VpcdError, frame
from tests.test_card_applet import MRZ_INFO, bac, personalised, sm_send

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _status(raw: bytes) -> int:
    assert len(raw) >= 2, raw
    return (raw[-2] << 8) | raw[-1]


# Around the short/extended boundary: byte 5 = 00 announces extended length (7+ bytes).
BOUNDARY_APDUS = [
    bytes(6),
    bytes.fromhex("00a404000001"),
    bytes.fromhex("0cb0000000"),
    bytes.fromhex("0cb000000000"),
    bytes.fromhex("0cb00000000001"),
    bytes.fromhex("00a4040000000100"),
    bytes.fromhex("00a404000100"),
]


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=8), st.booleans())
@example(BOUNDARY_APDUS, True)
@example(BOUNDARY_APDUS, False)
@example([bytes(6)], True)
def test_random_apdus_get_a_status_word_and_the_card_still_works(
    apdus: list[bytes], lock: bool
) -> None:
    card = personalised(lock=lock)
    for raw in apdus:
        _status(card.process(raw))  # never raises, always answers
    # the card is not left broken: a fresh session reads the same data
    card.power_on()
    assert Response.decode(card.process(profile.select_aid().encode())).ok
    if lock:
        sm, answer = bac(card)
        assert sm is not None, answer
        assert sm_send(card, sm, profile.select_ef(0x0101)).ok


@FUZZ
@given(st.binary(min_size=1, max_size=300))
def test_a_forged_protected_apdu_ends_the_session_not_the_card(body: bytes) -> None:
    card = personalised(lock=True)
    sm, _ = bac(card)
    assert sm is not None
    forged = Command(0x0C, 0xB0, 0x00, 0x00, body, 256).encode(extended=True)
    sw = _status(card.process(forged))
    assert sw != 0x9000  # a MAC cannot be guessed
    # the chip aborted the session (ICAO 9303-11 9.8.4): the old keys open nothing now
    assert sm_send(card, sm, profile.select_ef(0x0101)).sw in (0x6987, 0x6988)
    sm, _ = bac(card, MRZ_INFO)
    assert sm is not None


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_vpcd_deframer_never_raises_and_keeps_frames_whole(noise: bytes, cuts: list[int]) -> None:
    payloads = [b"\x01", b"\x04", bytes(range(40)), noise]
    stream = b"".join(frame(p) for p in payloads)
    deframer = Deframer()
    out: list[bytes] = []
    i = 0
    for n in cuts * (len(stream) // max(1, sum(cuts)) + 1):
        out += deframer.feed(stream[i : i + n])
        i += n
        if i >= len(stream):
            break
    out += deframer.feed(stream[i:])
    assert out == payloads


@FUZZ
@given(st.binary(min_size=1, max_size=300))
@example(bytes(6))
@example(bytes.fromhex("00a404000001"))
@example(bytes.fromhex("00a40400000001"))
@example(bytes(5))
def test_vpcd_slot_answers_or_refuses_cleanly(payload: bytes) -> None:
    slot = CardSlot(personalised(lock=True))
    try:
        reply = slot.handle(payload)
    except VpcdError:
        assert len(payload) == 1  # only an unknown control byte is refused
        return
    if len(payload) > 1:
        assert reply is not None
        _status(reply)


@FUZZ
@given(st.binary(max_size=400))
def test_tlv_parse_raises_only_tlv_errors(data: bytes) -> None:
    with contextlib.suppress(TlvError):
        parse(data)


def test_an_error_inside_the_applet_is_answered_6f00_and_ends_the_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defence in depth: whatever a bug in the core raises, the chip answers a status word
    (6F00, no precise diagnosis) and drops the session instead of killing its host."""
    card = personalised(lock=True)
    sm, _ = bac(card)
    assert sm is not None

    def broken(command: Command, secure: bool) -> Response:
        raise IndexError("a bug")

    monkeypatch.setattr(card, "_handle", broken)
    assert _status(card.process(sm.protect(profile.select_ef(0x0101)).encode())) == 0x6F00
    assert _status(card.process(profile.select_aid().encode())) == 0x6F00
    monkeypatch.undo()
    assert sm_send(card, sm, profile.select_ef(0x0101)).sw in (0x6987, 0x6988)
    sm, _ = bac(card)
    assert sm is not None
    assert sm_send(card, sm, profile.select_ef(0x0101)).ok


def test_the_emulator_survives_an_unknown_control_byte_and_a_short_apdu(
    tmp_path: Path,
) -> None:
    """The serving thread answers what it can and keeps going: an unknown vpcd control
    byte is logged and skipped, a 6-byte APDU with a 00 fifth byte is answered 6700."""
    emulator = CardEmulator(0, tmp_path / "card.json")
    with socket.create_server(("127.0.0.1", 0)) as server:  # TCP, as vpcd's link is
        ours = socket.create_connection(server.getsockname()[:2])
        theirs, _ = server.accept()
    card = EmrtdApplet(HostCrypto())
    thread = threading.Thread(target=emulator._serve, args=(theirs, card), daemon=True)
    thread.start()
    deframer = Deframer()

    def exchange(payload: bytes) -> bytes:
        ours.sendall(frame(payload))
        got: list[bytes] = []
        while not got:
            data = ours.recv(65536)
            assert data, "the emulator hung up"
            got = deframer.feed(data)
        return got[0]

    try:
        ours.settimeout(5)
        ours.sendall(frame(b"\x09"))  # unknown control byte: no answer
        assert exchange(bytes(6)) == bytes.fromhex("6700")
        assert exchange(bytes.fromhex("00a404000001")) == bytes.fromhex("6700")
        assert exchange(profile.select_aid().encode()) == bytes.fromhex("9000")
        assert thread.is_alive()
    finally:
        ours.close()
        thread.join(5)
    assert not thread.is_alive()


@FUZZ
@given(
    st.sampled_from([0xA4, 0xB0, 0xB1, 0xD6, 0xE0, 0xE4, 0xDA, 0x44, 0x84, 0x82, 0x22, 0x86, 0x88])
    | st.integers(0, 255),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=64),
    st.one_of(st.none(), st.integers(1, 256)),
)
@example(0xA4, 0x02, 0x0C, b"\x01\x03", None)  # DG3: 6982
@example(0xA4, 0x02, 0x0C, b"\x01\x09", None)  # not on the card: 6A82
@example(0xB0, 0x00, 0x00, b"", 4)  # no current EF: 6986
@example(0xD6, 0x00, 0x00, b"x", None)  # write after lock: 6985
@example(0x88, 0x00, 0x00, b"\x01" * 8, 256)  # no AA key: 6A88
@example(0x2A, 0x00, 0x00, b"", None)  # unknown instruction: 6D00
def test_every_answer_to_a_protected_command_is_protected(
    ins: int, p1: int, p2: int, data: bytes, le: int | None
) -> None:
    """Errors under secure messaging come back MACed, so the terminal can trust them;
    a terminal that accepts only 6987/6988 in plain (ICAO 9303-11 9.8) meets no other."""
    card = personalised(lock=True)
    sm, _ = bac(card)
    assert sm is not None
    reply = sm_send(card, sm, Command(0x00, ins, p1, p2, data, le))  # raises SmError if not
    assert reply.sw not in (0x6987, 0x6988)
