"""Hostile bytes at the card emulator and its codecs: it answers with a status word and
keeps working; nothing escapes but the codecs' own, documented errors."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from station.drivers.card import profile
from station.drivers.card.apdu import Command, Response
from station.drivers.card.tlv import TlvError, parse
from station.drivers.card.vpcd import CardSlot, Deframer, VpcdError, frame
from tests.test_card_applet import MRZ_INFO, bac, personalised, sm_send

pytestmark = pytest.mark.timeout(120)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _status(raw: bytes) -> int:
    assert len(raw) >= 2, raw
    return (raw[-2] << 8) | raw[-1]


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=8), st.booleans())
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
