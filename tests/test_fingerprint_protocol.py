"""The ZFM/R30x packet codec: framing, resynchronisation, vendor streams, MicroPython subset."""

from __future__ import annotations

import ast
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station.drivers.fingerprint import pixels
from station.drivers.fingerprint import protocol as p
from tests.micropython.subset import runtime_gaps

CORE = Path(p.__file__)

packets_st = st.lists(
    st.tuples(
        st.sampled_from(p.PIDS),
        st.binary(max_size=300),
        st.sampled_from([p.DEFAULT_ADDRESS, 0, 0x12345678]),
    ),
    min_size=1,
    max_size=6,
)


def decode_all(data: bytes, chunk: int = 0) -> tuple[list[p.Packet], p.PacketDecoder]:
    dec = p.PacketDecoder()
    if chunk:
        for i in range(0, len(data), chunk):
            dec.feed(data[i : i + chunk])
    else:
        dec.feed(data)
    dec.flush()
    return [e for e in dec.events() if isinstance(e, p.Packet)], dec


def wire(items: list[tuple[int, bytes, int]]) -> list[bytes]:
    return [p.encode_packet(pid, payload, addr) for pid, payload, addr in items]


# --- known vectors (R307 / R503 user manuals) -------------------------------------------


def test_known_command_bytes() -> None:
    assert p.vfy_pwd(0) == bytes.fromhex("EF01FFFFFFFF010007130000000000 1B".replace(" ", ""))
    assert p.gen_img() == bytes.fromhex("EF01FFFFFFFF0100030100 05".replace(" ", ""))
    assert p.read_sys_para() == bytes.fromhex("EF01FFFFFFFF0100030F0013")
    assert p.up_image() == bytes.fromhex("EF01FFFFFFFF0100030A000E")
    assert p.set_sys_para(p.PARAM_PACKET_SIZE, 3) == bytes.fromhex("EF01FFFFFFFF0100050E0603001D")


def test_checksum_is_sixteen_bits() -> None:
    payload = b"\xff" * 4000  # sum far above 0xFFFF
    pkt = p.encode_packet(p.PID_DATA, payload)
    assert struct.unpack(">H", pkt[-2:])[0] == (2 + 0x0F + 0xA2 + 4000 * 255) & 0xFFFF
    dec = p.PacketDecoder()
    dec.feed(pkt)
    assert dec.events() == [p.Packet(p.DEFAULT_ADDRESS, p.PID_DATA, payload)]


def test_confirmation_messages() -> None:
    assert p.confirmation_message(p.ERR_NO_FINGER) == "no finger on the sensor"
    assert p.confirmation_message(p.ERR_WRONG_PASSWORD) == "wrong password"
    assert "0x7E" in p.confirmation_message(0x7E)


# --- round trips -------------------------------------------------------------------------


@given(packets_st, st.integers(1, 50))
def test_round_trip_any_chunking(items: list[tuple[int, bytes, int]], chunk: int) -> None:
    expected = [p.Packet(addr, pid, payload) for pid, payload, addr in items]
    data = b"".join(wire(items))
    assert decode_all(data)[0] == expected
    got, dec = decode_all(data, chunk)
    assert got == expected
    assert dec.discarded_bytes == 0
    assert dec.bad_checksums == 0


def test_command_encoders_round_trip() -> None:
    cases = {
        p.vfy_pwd(0xDEADBEEF): (p.CMD_VFY_PWD, b"\xde\xad\xbe\xef"),
        p.set_pwd(7): (p.CMD_SET_PWD, b"\x00\x00\x00\x07"),
        p.aura_led_config(p.LED_BREATHING, 0x80, p.LED_BLUE, 0): (
            p.CMD_AURA_LED_CONFIG,
            b"\x01\x80\x02\x00",
        ),
        p.set_packet_size(2048): (p.CMD_SET_PACKET_SIZE, b"\x08\x00"),
        p.capture_roll(2, 15000, p.FLAG_PACK4): (
            p.CMD_CAPTURE_ROLL,
            struct.pack(">BIB", 2, 15000, 1),
        ),
        p.capture_roll(3, 9000, p.FLAG_PACK4 | p.FLAG_TRIM): (
            p.CMD_CAPTURE_ROLL,
            struct.pack(">BIB", 3, 9000, 3),
        ),
        p.capture_flat(7, 500): (p.CMD_CAPTURE_FLAT, struct.pack(">BIB", 7, 500, 0)),
        p.cancel(): (p.CMD_CANCEL, b""),
        p.device_info_cmd(): (p.CMD_DEVICE_INFO, b""),
        p.open_led(): (p.CMD_OPEN_LED, b""),
        p.close_led(): (p.CMD_CLOSE_LED, b""),
        p.template_num(): (p.CMD_TEMPLATE_NUM, b""),
        p.down_image(): (p.CMD_DOWN_IMAGE, b""),
    }
    data = b"".join(cases)
    got, _ = decode_all(data)
    assert [pkt.pid for pkt in got] == [p.PID_COMMAND] * len(cases)
    assert [p.parse_command(pkt.payload) for pkt in got] == list(cases.values())
    with pytest.raises(ValueError, match="empty"):
        p.parse_command(b"")


def test_system_parameters_and_device_info_round_trip() -> None:
    sysp = p.SystemParameters(0, 9, 1000, 3, 0xFFFFFFFF, 2, 6)
    back = p.SystemParameters.decode(sysp.encode())
    assert (back.packet_size, back.baudrate, back.address) == (128, 57600, 0xFFFFFFFF)
    info = p.DeviceInfo(
        "VN-TP500", "SN0001", "2.4.1", 800, 750, 500, 400, 500, 4096, 0xCAFEF00D, "20260915"
    )
    raw = info.encode()
    assert len(raw) == p.DEVICE_INFO_SIZE
    assert vars(p.DeviceInfo.decode(raw)) == vars(info)
    with pytest.raises(ValueError, match="needs"):
        p.DeviceInfo.decode(raw[:-1])
    with pytest.raises(ValueError, match="longer"):
        p.DeviceInfo("x" * 17, "", "", 0, 0, 0, 0, 0, 0, 0, "").encode()


@given(st.binary(max_size=301))
def test_pack4_core_and_numpy_agree(raw: bytes) -> None:
    packed = p.pack4(raw)
    assert packed == pixels.pack4(np.frombuffer(raw, np.uint8))
    expected = bytes((b >> 4) * 17 for b in raw)
    assert p.unpack4(packed, len(raw)) == expected
    assert pixels.unpack4(packed, len(raw)).tobytes() == expected


@given(
    st.lists(st.tuples(st.integers(1, 40), st.integers(1, 30)), min_size=1, max_size=4),
    st.sampled_from([32, 64, 257, 4096]),
    st.sampled_from([4, 8]),
)
def test_frame_stream_round_trip(sizes: list[tuple[int, int]], packet_size: int, bits: int) -> None:
    rng = np.random.default_rng(len(sizes) * 1000 + packet_size)
    sent = []
    data = b""
    for i, (w, h) in enumerate(sizes):
        px = rng.integers(0, 256, (h, w), dtype=np.uint8)
        body = pixels.pack4(px) if bits == 4 else px.tobytes()
        data += b"".join(p.frame_packets(i, 40 * i, 3 * i, 5, w, h, body, packet_size, bits))
        sent.append(px if bits == 8 else ((px >> 4) * 17).astype(np.uint8))
    data += p.end_packet(p.OK, len(sizes), 1234)
    got, _ = decode_all(data)
    asm = p.StreamAssembler()
    out = [asm.feed(pkt) for pkt in got]
    frames = [r for r in out if isinstance(r, p.FrameRecord)]
    ends = [r for r in out if isinstance(r, p.StreamEnd)]
    assert [(f.index, f.t_ms, f.x, f.y) for f in frames] == [
        (i, 40 * i, 3 * i, 5) for i in range(len(sizes))
    ]
    for f, px in zip(frames, sent, strict=True):
        count = f.width * f.height
        flat = pixels.unpack4(f.pixels, count) if f.bits == 4 else np.frombuffer(f.pixels, np.uint8)
        assert np.array_equal(flat.reshape(f.height, f.width), px)
    assert len(ends) == 1
    assert (ends[0].status, ends[0].frames, ends[0].duration_ms) == (
        0,
        len(sizes),
        1234,
    )


def band_frame(
    rng: np.random.Generator, x: int, width: int, height: int, block: int
) -> tuple[p.BandInfo, list[int]]:
    """A random band report for a window, and the pixels it says were sent."""
    records: list[tuple[int, ...]] = []
    for _ in range((height + block - 1) // block):
        a, b = sorted(rng.integers(x, x + width + 1, 2).tolist())
        lo, hi = sorted(rng.integers(0, 900, 2).tolist())
        records.append((lo, hi, a, b))
    info = p.BandInfo(int(rng.integers(0, 256)), block, int(rng.integers(0, 0x10000)), records)
    return info, rng.integers(0, 256, info.sent_count(height)).tolist()


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.integers(1, 40), st.integers(1, 45), st.integers(1, 16)),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from([32, 64, 257, 4096]),
    st.sampled_from([4, 8]),
    st.integers(0, 2**32 - 1),
)
def test_banded_frame_stream_round_trip(
    frames: list[tuple[int, int, int, int]], packet_size: int, bits: int, seed: int
) -> None:
    """Format-1 frames (band report + sent columns), mixed with format-0 ones; with small
    packets the report runs over several chunks."""
    rng = np.random.default_rng(seed)
    data = b""
    sent = []
    for i, (x, w, h, block) in enumerate(frames):
        info, run = band_frame(rng, x, w, h, block)
        raw = bytes(run)
        body = p.pack4(raw) if bits == 4 else raw
        data += b"".join(p.frame_packets(i, 40 * i, x, 7, w, h, body, packet_size, bits, band=info))
        sent.append((info, raw))
        plain = bytes(rng.integers(0, 256, w * h).tolist())
        body = p.pack4(plain) if bits == 4 else plain
        data += b"".join(p.frame_packets(100 + i, 0, x, 0, w, h, body, packet_size, bits))
    data += p.end_packet(p.OK, 2 * len(frames), 99)
    got, _ = decode_all(data, 97)
    asm = p.StreamAssembler()
    out = [r for r in (asm.feed(pkt) for pkt in got) if isinstance(r, p.FrameRecord)]
    assert asm.dropped_frames == 0
    assert [r.index for r in out] == [k for i in range(len(frames)) for k in (i, 100 + i)]
    for record, (info, raw), (x, w, h, block) in zip(out[0::2], sent, frames, strict=True):
        assert (record.x, record.y, record.width, record.height, record.bits) == (x, 7, w, h, bits)
        assert record.band is not None
        assert record.band.records == info.records
        assert (record.band.glass, record.band.block, record.band.contrast16) == (
            info.glass,
            block,
            info.contrast16,
        )
        assert record.pixel_count == len(raw)
        back = p.unpack4(record.pixels, len(raw)) if bits == 4 else record.pixels
        assert back == (bytes((b >> 4) * 17 for b in raw) if bits == 4 else raw)
    assert all(r.band is None for r in out[1::2])


def test_a_band_report_that_does_not_fit_its_window_drops_the_frame() -> None:
    good = p.BandInfo(230, 16, 400, [(10, 60, 20, 40), (12, 58, 22, 42)])
    assert good.check(20, 30, 20)
    assert not p.BandInfo(230, 16, 400, [(10, 60, 20, 40)]).check(20, 30, 20)  # 1 record
    assert not p.BandInfo(230, 16, 400, [(10, 60, 20, 60), (0, 0, 0, 0)]).check(20, 30, 20)
    assert not p.BandInfo(230, 16, 400, [(60, 10, 20, 40), (0, 0, 0, 0)]).check(20, 30, 20)
    with pytest.raises(ValueError, match="band report"):
        p.frame_packets(0, 0, 20, 0, 30, 20, b"", 256, band=p.BandInfo(0, 16, 0, []))
    # A scanner bug on the wire: the report claims columns outside the window.
    pixels = bytes(20 * 16 + 20 * 4)
    pkts = p.frame_packets(0, 0, 20, 0, 30, 20, pixels, 256, band=good)
    raw = pkts[0]
    payload = bytearray(raw[9:-2])
    # chunk (4) + frame header (14) + band header (6) + record 0: sent right -> 99
    struct.pack_into(">H", payload, 4 + 14 + 6 + 6, 99)
    forged = p.encode_packet(p.PID_DATA, bytes(payload))
    nxt = p.frame_packets(1, 40, 0, 0, 5, 2, bytes(10), 256)
    got, _ = decode_all(forged + b"".join(pkts[1:]) + b"".join(nxt))
    asm = p.StreamAssembler()
    out = [r for r in (asm.feed(pkt) for pkt in got) if isinstance(r, p.FrameRecord)]
    assert [r.index for r in out] == [1]
    assert asm.dropped_frames == 1


def test_unknown_frame_format_is_dropped() -> None:
    pkts = p.frame_packets(0, 0, 0, 0, 4, 4, bytes(16), 256)
    payload = bytearray(pkts[0][9:-2])
    payload[4 + 13] = 7  # the format byte
    got, _ = decode_all(p.encode_packet(p.PID_DATA, bytes(payload)))
    asm = p.StreamAssembler()
    assert [asm.feed(pkt) for pkt in got] == [None]
    assert asm.dropped_frames == 1


def test_stream_drops_a_torn_frame_and_keeps_the_next() -> None:
    px = bytes(range(200)) * 5  # 1000 px, 25 x 40
    first = p.frame_packets(0, 0, 0, 0, 25, 40, px, 64)
    second = p.frame_packets(1, 40, 0, 0, 25, 40, px, 64)
    dec = p.PacketDecoder()
    dec.feed(b"".join(first[:3] + first[4:] + second) + p.end_packet(p.OK, 2, 80))
    asm = p.StreamAssembler()
    out = [asm.feed(e) for e in dec.events() if isinstance(e, p.Packet)]
    frames = [r for r in out if isinstance(r, p.FrameRecord)]
    assert [f.index for f in frames] == [1]
    assert frames[0].pixels == px
    assert asm.dropped_frames == 1


def test_data_packets_split_base_image() -> None:
    image = bytes(36864)
    pkts = p.data_packets(image, 128)
    assert len(pkts) == 288
    got, _ = decode_all(b"".join(pkts))
    assert [g.pid for g in got] == [p.PID_DATA] * 287 + [p.PID_END]
    assert b"".join(g.payload for g in got) == image


# --- resynchronisation -------------------------------------------------------------------


@given(st.binary(max_size=2000), st.integers(1, 64))
def test_random_bytes_never_raise_and_every_byte_is_accounted(data: bytes, chunk: int) -> None:
    got, dec = decode_all(data, chunk)
    wire_size = sum(len(g.payload) + 11 for g in got)
    assert dec.pending == 0
    assert wire_size + dec.discarded_bytes == len(data)


garbage_st = st.binary(max_size=80).map(lambda b: b.replace(b"\xef", b"\xee"))


@given(st.lists(st.tuples(garbage_st, packets_st), min_size=1, max_size=4), garbage_st)
def test_packets_embedded_in_garbage_are_all_recovered(
    runs: list[tuple[bytes, list[tuple[int, bytes, int]]]], tail: bytes
) -> None:
    data = b""
    expected = []
    for garbage, items in runs:
        data += garbage + b"".join(wire(items))
        expected += [p.Packet(addr, pid, payload) for pid, payload, addr in items]
    got, dec = decode_all(data + tail, 7)
    assert got == expected
    assert dec.discarded_bytes == sum(len(g) for g, _ in runs) + len(tail)


@settings(derandomize=True, max_examples=300)
@given(packets_st, packets_st, st.data())
def test_truncated_packet_does_not_hide_the_next(
    before: list[tuple[int, bytes, int]], after: list[tuple[int, bytes, int]], data: st.DataObject
) -> None:
    cut_from = wire(before)[-1]
    cut = data.draw(st.integers(1, len(cut_from) - 1))
    stream = b"".join(wire(before)[:-1]) + cut_from[:cut] + b"".join(wire(after))
    expected = [p.Packet(a, pid, pl) for pid, pl, a in before[:-1] + after]
    got, dec = decode_all(stream, 13)
    assert got == expected
    assert dec.pending == 0


@settings(derandomize=True, max_examples=300)
@given(packets_st, st.data())
def test_bit_flip_loses_at_most_the_damaged_packet(
    items: list[tuple[int, bytes, int]], data: st.DataObject
) -> None:
    packets = wire(items)
    k = data.draw(st.integers(0, len(packets) - 1))
    bit = data.draw(st.integers(0, 8 * len(packets[k]) - 1))
    damaged = bytearray(packets[k])
    damaged[bit // 8] ^= 1 << (bit % 8)
    stream = b"".join(packets[:k]) + bytes(damaged) + b"".join(packets[k + 1 :])
    got, _ = decode_all(stream, 5)
    others = [p.Packet(a, pid, pl) for i, (pid, pl, a) in enumerate(items) if i != k]
    if len(got) == len(others):
        assert got == others  # the damaged packet was dropped, nothing else
    else:
        # Address bits are outside the checksum: the packet survives, misaddressed.
        assert got[:k] + got[k + 1 :] == others
        pid, payload, address = items[k]
        assert (got[k].pid, got[k].payload) == (pid, payload)
        assert got[k].address != address


def test_bad_checksum_and_header_are_reported_as_events() -> None:
    good = p.ack(p.OK)
    bad = bytearray(good)
    bad[-1] ^= 1
    dec = p.PacketDecoder()
    dec.feed(b"\x00\x01" + bytes(bad) + b"\xef\x01\xff\xff\xff\xff\x05\x00\x03" + good)
    events = dec.events()
    reasons = [e.reason for e in events if isinstance(e, p.Discarded)]
    assert {p.NOISE, p.BAD_CHECKSUM, p.BAD_HEADER} <= set(reasons)
    assert [e for e in events if isinstance(e, p.Packet)] == [
        p.Packet(p.DEFAULT_ADDRESS, p.PID_ACK, b"\x00")
    ]
    assert (dec.bad_checksums, dec.bad_headers) == (1, 1)


def test_oversized_length_is_rejected_at_once() -> None:
    dec = p.PacketDecoder(max_payload=256)
    dec.feed(b"\xef\x01\xff\xff\xff\xff\x02\x10\x00" + p.ack(p.OK))
    assert [e for e in dec.events() if isinstance(e, p.Packet)] == [
        p.Packet(p.DEFAULT_ADDRESS, p.PID_ACK, b"\x00")
    ]


def test_trailing_start_byte_is_kept_for_the_next_feed() -> None:
    pkt = p.ack(p.OK)
    dec = p.PacketDecoder()
    dec.feed(b"\x55" + pkt[:1])
    dec.feed(pkt[1:])
    assert [e for e in dec.events() if isinstance(e, p.Packet)] == [
        p.Packet(p.DEFAULT_ADDRESS, p.PID_ACK, b"\x00")
    ]


# --- the core stays inside the MicroPython subset ----------------------------------------

ALLOWED_IMPORTS = {"struct"}
FORBIDDEN_NAMES = {"dataclass", "dataclasses", "enum", "Enum", "IntEnum", "typing", "abc"}


def micropython_violations(source: str) -> list[str]:
    """What in ``source`` MicroPython would not run (the subset the core promises)."""
    tree = ast.parse(source)
    problems = []
    guarded: set[int] = set()
    for node in ast.walk(tree):
        # `try: from typing import ... except ImportError: pass` is the allowed escape.
        if isinstance(node, ast.Try) and any(
            isinstance(h.type, ast.Name) and h.type.id == "ImportError" for h in node.handlers
        ):
            guarded.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name not in ALLOWED_IMPORTS and id(node) not in guarded:
                    problems.append(f"{line}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                problems.append(f"{line}: from __future__")
            elif node.module not in ALLOWED_IMPORTS and id(node) not in guarded:
                problems.append(f"{line}: from {node.module} import")
        elif isinstance(node, ast.NamedExpr):
            problems.append(f"{line}: walrus")
        elif isinstance(node, ast.Match):
            problems.append(f"{line}: match statement")
        elif isinstance(node, ast.AsyncFunctionDef | ast.Await):
            problems.append(f"{line}: async")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("to_bytes", "from_bytes") and node.keywords:
                problems.append(f"{line}: {name} with keyword arguments")
        elif isinstance(node, ast.Name | ast.Attribute):
            ident = node.id if isinstance(node, ast.Name) else node.attr
            if ident in FORBIDDEN_NAMES:
                problems.append(f"{line}: uses {ident}")
        elif isinstance(node, ast.ClassDef):
            if node.decorator_list:
                problems.append(f"{line}: class decorator")
            for stmt in node.body:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else []
                if any(isinstance(t, ast.Name) and t.id == "__slots__" for t in targets):
                    problems.append(f"{line}: __slots__")
        elif isinstance(node, ast.FunctionDef):
            for deco in node.decorator_list:
                name = deco.id if isinstance(deco, ast.Name) else ""
                if name not in ("property", "classmethod", "staticmethod"):
                    problems.append(f"{node.lineno}: decorator {ast.unparse(deco)}")
    # Self-documenting f-strings (f"{x=}") are gone after parsing: look at the text.
    for m in re.finditer(r"\bf(['\"]).*?\1", source):
        if re.search(r"\{[^{}]*=\s*(![rsa])?(:[^{}]*)?\}", m.group(0)):
            line = source.count("\n", 0, m.start()) + 1
            problems.append(f"{line}: f-string '='")
    # Methods and idioms the real MicroPython was seen to lack (tests/micropython/subset.py).
    problems += [f"{line}: {what}" for line, what in runtime_gaps(tree)]
    return problems


def test_core_is_micropython_subset() -> None:
    assert micropython_violations(CORE.read_text()) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "from __future__ import annotations",
        "from dataclasses import dataclass",
        "import enum",
        "import typing",
        "if (n := 3): pass",
        "match x:\n    case 1: pass",
        "b = n.to_bytes(2, byteorder='big')",
        "s = f'{x=}'",
        "class A:\n    __slots__ = ('a',)",
        "@functools.lru_cache\ndef f(): pass",
        "n = k.bit_length()",
        "s = payload.hex()",
        "class E(Exception):\n    def __init__(self):\n        Exception.__init__(self)",
        "raw = text.encode('latin-1')",
        "ok = isinstance(x, bytes | bytearray)",
        "s = str(n).zfill(3)",
    ],
)
def test_subset_check_catches(snippet: str) -> None:
    assert micropython_violations(snippet) != []


def test_subset_check_allows_guarded_typing() -> None:
    ok = "try:\n    from typing import Any\nexcept ImportError:\n    pass\nimport struct\n"
    assert micropython_violations(ok) == []


@settings(derandomize=True, max_examples=300)
@given(st.lists(st.tuples(st.binary(max_size=60), packets_st), min_size=1, max_size=3))
def test_packets_after_arbitrary_garbage_are_recovered(
    runs: list[tuple[bytes, list[tuple[int, bytes, int]]]],
) -> None:
    """Garbage may hold start codes and half headers: the packets still come out, in
    order (garbage could only add packets of its own, never hide ours)."""
    data = b""
    expected = []
    for garbage, items in runs:
        data += garbage + b"".join(wire(items))
        expected += [p.Packet(addr, pid, payload) for pid, payload, addr in items]
    got, _ = decode_all(data, 9)
    it = iter(got)
    assert all(any(g == want for g in it) for want in expected), (expected, got)
    header_garbage = b"\xef\x01\xff\xff\xff\xff\x02\x01\x00" + b"\x00" * 5
    got, _ = decode_all(header_garbage + data)
    it = iter(got)
    assert all(any(g == want for g in it) for want in expected)
