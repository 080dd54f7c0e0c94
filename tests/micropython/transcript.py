"""A transcript of the sans-I/O driver cores at work, for CPython and MicroPython alike.

tests/test_micropython_cores.py runs this file UNCHANGED on both interpreters, with the
same layout on each: the fingerprint codec as the top-level module ``protocol`` and the
card cores as the package ``card`` (``card/apdu.py``, ``card/sm.py``, ...). It prints a
deterministic transcript, and the test asserts the two transcripts are identical. So it
keeps to what both interpreters have: no ``random`` (a small LCG instead), no reprs of
exceptions, dicts or sets (they differ), no f-string ``=``, no ``int.bit_length``.

Crypto here is a deterministic TOY (:class:`ToyCrypto`: a SHA-256 keystream XORed in as
the "cipher", SHA-256 prefixes as MACs and hashes, an LCG as the random source, a hash
as the "signature"). It is not DES, AES or ECDSA and need not be: the real primitives are
checked in CPython against the ICAO 9303-11 worked examples (tests/test_card_bac.py,
tests/test_card_pace.py). What this transcript proves is that the protocol state machines
(framing, resynchronisation, stream assembly, APDUs, TLV, BAC, PACE, secure messaging,
the applet's file system and life cycle) behave the same on MicroPython. The elliptic-curve
arithmetic is plain integer math and is exercised for real (PACE on both curves).
"""

import hashlib

import protocol as fp
from card import apdu, applet, bac, cardcrypto, ec, pace, profile, sm, tlv, vpcd


def hx(data):
    # MicroPython 1.27: b"".hex() is b'' (bytes), not ''.
    return bytes(data).hex() if data else ""


def digest(data):
    return hashlib.sha256(bytes(data)).digest()[:8].hex()


def short(data):
    """Hex of small byte strings, length and digest of large ones."""
    data = bytes(data)
    if len(data) <= 48:
        return hx(data)
    return "<" + str(len(data)) + " bytes " + digest(data) + ">"


def err(exc):
    return "!" + type(exc).__name__ + ": " + str(exc)


def out(*parts):
    print(" ".join([str(p) for p in parts]))


def attempt(label, fn):
    """Call ``fn``; print its result (bytes in hex) or the exception it raised."""
    try:
        result = fn()
    except Exception as exc:
        out(label, err(exc))
        return None
    if isinstance(result, (bytes, bytearray)):
        out(label, short(result))
    else:
        out(label, result)
    return result


class Lcg:
    """Numerical Recipes' 32-bit LCG: the same numbers on every interpreter."""

    def __init__(self, seed):
        self.state = seed & 0xFFFFFFFF

    def next(self):
        self.state = (1664525 * self.state + 1013904223) & 0xFFFFFFFF
        return self.state

    def below(self, n):
        return (self.next() >> 8) % n

    def bytes(self, n):
        return bytes([self.next() >> 24 for _ in range(n)])


class ToyCrypto(cardcrypto.CardCrypto):
    """Deterministic stand-ins with the real primitives' shapes (NOT real crypto)."""

    def __init__(self, seed):
        self.lcg = Lcg(seed)

    def _keystream(self, label, key, iv, n):
        out = b""
        counter = 0
        while len(out) < n:
            out += hashlib.sha256(label + bytes(key) + bytes(iv) + bytes([counter])).digest()
            counter += 1
        return out[:n]

    def _xor(self, label, key, data, iv, block):
        if len(data) % block:
            raise ValueError("data is not a whole number of blocks")
        return cardcrypto.xor(bytes(data), self._keystream(label, key, iv, len(data)))

    def sha1(self, data):
        return hashlib.sha256(b"sha1" + bytes(data)).digest()[:20]

    def tdes_cbc_encrypt(self, key, data):
        return self._xor(b"des", key, data, b"", 8)

    def tdes_cbc_decrypt(self, key, data):
        return self._xor(b"des", key, data, b"", 8)

    def retail_mac(self, key, data):
        if len(data) % 8:
            raise ValueError("MAC input is not padded")
        return hashlib.sha256(b"mac" + bytes(key) + bytes(data)).digest()[:8]

    def random(self, length):
        return self.lcg.bytes(length)

    def aes_cbc_encrypt(self, key, data, iv):
        return self._xor(b"aes", key, data, iv, 16)

    def aes_cbc_decrypt(self, key, data, iv):
        return self._xor(b"aes", key, data, iv, 16)

    def aes_cmac(self, key, data):
        return hashlib.sha256(b"cmac" + bytes(key) + bytes(data)).digest()[:16]

    def ecdsa_p256_sign(self, private_key, message):
        h = hashlib.sha256(b"ecdsa" + bytes(private_key) + bytes(message)).digest()
        return h + hashlib.sha256(h).digest()


# --- fingerprint: protocol.py -----------------------------------------------------------


def fp_event(event):
    if isinstance(event, fp.Packet):
        return f"P {event.address:08x} {event.pid:02x} {short(event.payload)}"
    return "D " + event.reason + " " + str(event.size)


def fingerprint_commands():
    out("== fingerprint commands")
    addr = 0x12345678
    commands = [
        ("command", fp.command(0x42, b"\x01\x02")),
        ("vfy_pwd", fp.vfy_pwd(0x01020304)),
        ("set_pwd", fp.set_pwd(0xFFFFFFFF, addr)),
        ("read_sys_para", fp.read_sys_para()),
        ("set_sys_para", fp.set_sys_para(fp.PARAM_PACKET_SIZE, 3)),
        ("gen_img", fp.gen_img(addr)),
        ("up_image", fp.up_image()),
        ("down_image", fp.down_image()),
        ("template_num", fp.template_num()),
        ("aura", fp.aura_led_config(fp.LED_BREATHING, 0x80, fp.LED_PURPLE, 3)),
        ("open_led", fp.open_led()),
        ("close_led", fp.close_led()),
        ("device_info", fp.device_info_cmd()),
        ("set_packet_size", fp.set_packet_size(fp.MAX_PACKET_SIZE)),
        ("capture_roll", fp.capture_roll(3, 15000, fp.FLAG_PACK4 | fp.FLAG_TRIM)),
        ("capture_flat", fp.capture_flat(7, 5000, fp.FLAG_PACK4, addr)),
        ("cancel", fp.cancel()),
        ("ack", fp.ack(fp.OK, b"\x00\x05")),
        ("ack_err", fp.ack(fp.ERR_NO_FINGER, b"", addr)),
        ("end", fp.end_packet(fp.OK, 42, 1234567)),
    ]
    dec = fp.PacketDecoder()
    for name, wire in commands:
        dec.feed(wire)
        events = dec.events()
        parsed = ""
        if len(events) == 1 and isinstance(events[0], fp.Packet):
            packet = events[0]
            if packet.pid == fp.PID_COMMAND:
                ins, params = fp.parse_command(packet.payload)
                parsed = f"ins={ins:02x} params={hx(params)}"
        out(name, hx(wire), [fp_event(e) for e in events], parsed)
    attempt("parse_command empty", lambda: fp.parse_command(b""))
    attempt("encode too long", lambda: fp.encode_packet(fp.PID_DATA, bytes(0xFFFE)))
    out("checksum", fp.checksum(fp.PID_DATA, bytes(range(200))))
    for code in sorted(fp.CONFIRMATION_MESSAGES):
        out(f"confirmation {code:02x}", fp.confirmation_message(code))
    out("confirmation unknown", fp.confirmation_message(0x77))
    for size, end in ((32, True), (32, False), (7, True)):
        packets = fp.data_packets(bytes(range(70)), size, end=end)
        out("data_packets", size, end, [hx(p) for p in packets])
    out("data_packets empty", [hx(p) for p in fp.data_packets(b"", 32)])

    params = fp.SystemParameters(0, 9, 1000, 3, 0xFFFFFFFF, 2, 6)
    raw = params.encode()
    back = fp.SystemParameters.decode(raw + b"\xaa")
    out("sys_para", hx(raw), back.packet_size, back.baudrate, back.library_size, back.address)
    attempt("sys_para short", lambda: fp.SystemParameters.decode(raw[:15]))
    info = fp.DeviceInfo(
        "VN-ROLL-500", "SN0001", "2.4.1", 1600, 1500, 500, 800, 750, 4096, 0xDEADBEEF, "20261130"
    )
    raw = info.encode()
    back = fp.DeviceInfo.decode(raw)
    out("device_info", fp.DEVICE_INFO_SIZE, hx(raw))
    out(
        "device_info back",
        back.model,
        back.serial,
        back.firmware,
        back.platen_width,
        back.platen_height,
        back.resolution_ppi,
        back.flat_width,
        back.flat_height,
        back.max_packet_size,
        f"{back.calibration_crc:08x}",
        back.calibration_date,
    )
    attempt("device_info short", lambda: fp.DeviceInfo.decode(raw[:-1]))
    attempt("device_info version", lambda: fp.DeviceInfo.decode(b"\x02" + raw[1:]))
    try:  # CPython says UnicodeDecodeError, MicroPython UnicodeError: both are ValueErrors
        fp.DeviceInfo.decode(raw[:1] + b"\xff" + raw[2:])
    except ValueError:
        out("device_info bad text: ValueError")
    long_name = fp.DeviceInfo("X" * 17, "", "", 0, 0, 0, 0, 0, 0, 0, "")
    attempt("device_info long", long_name.encode)

    for pixels in (bytes([0, 17, 34, 255, 128]), bytes(range(0, 256, 15))):
        packed = fp.pack4(pixels)
        out("pack4", hx(pixels), hx(packed), hx(fp.unpack4(packed, len(pixels))))


def fingerprint_stream():
    """Valid packets, garbage, corrupted checksums, bad headers and truncations, fed in
    pseudo-random chunk sizes."""
    out("== fingerprint decoder")
    rng = Lcg(2026)
    wire = b""
    expected = 0
    for i in range(60):
        kind = rng.below(8)
        pid = fp.PIDS[rng.below(4)]
        payload = rng.bytes(rng.below(40))
        address = fp.DEFAULT_ADDRESS if rng.below(3) else rng.next()
        packet = fp.encode_packet(pid, payload, address)
        if kind == 0:  # garbage, with stray start-code bytes in it
            wire += rng.bytes(rng.below(12)) + b"\xef" + rng.bytes(rng.below(3)) + b"\xef\x01"
        elif kind == 1:  # corrupted checksum
            wire += packet[:-1] + bytes([packet[-1] ^ 0x5A])
        elif kind == 2:  # truncated: the rest never comes
            wire += packet[: rng.below(len(packet) - 1) + 1]
        elif kind == 3:  # unknown PID or impossible length
            wire += b"\xef\x01\xff\xff\xff\xff" + bytes([0x05, 0x00, rng.below(2)])
        elif kind == 4:  # corrupted payload byte
            if payload:
                at = fp.HEADER_SIZE + rng.below(len(payload))
                wire += packet[:at] + bytes([packet[at] ^ 0x01]) + packet[at + 1 :]
            else:
                wire += packet
        else:
            wire += packet
            expected += 1
        if i % 17 == 16:
            wire += b"\xef"  # a lone first half of a start code
    out("wire", len(wire), digest(wire), "intact packets", expected)
    for chunking in (1, 2, 3):
        dec = fp.PacketDecoder(max_payload=48)
        pos = 0
        seen = []
        while pos < len(wire):
            n = 1 + rng.below(37) if chunking != 1 else 1
            if chunking == 3:
                n = 1 + rng.below(300)
            dec.feed(wire[pos : pos + n])
            pos += n
            while True:
                event = dec.next_event()
                if event is None:
                    break
                seen.append(fp_event(event))
        pending = dec.pending
        dec.flush()
        seen += [fp_event(e) for e in dec.events()]
        out("chunking", chunking, "pending before flush", pending, "events", len(seen))
        if chunking == 1:
            for line in seen:
                out(" ", line)
        else:
            out("  events digest", digest("\n".join(seen).encode()))
        out(
            "  counters",
            dec.packets,
            dec.bad_checksums,
            dec.bad_headers,
            dec.truncated,
            dec.discarded_bytes,
            dec.pending,
        )
    dec = fp.PacketDecoder()
    for cut in (1, 2, 5, 9, 12):  # the line goes idle inside a packet, then a good one
        dec.feed(b"\x00" + fp.ack(0, b"abcd")[:cut])
        dec.flush()
        dec.feed(fp.ack(1) + b"\xef")
        dec.flush()
        out("idle after", cut, [fp_event(e) for e in dec.events()], dec.truncated, dec.pending)
    dec = fp.PacketDecoder()
    dec.feed(fp.ack(0)[:5])
    out("reset pending", dec.pending)
    dec.reset()
    dec.feed(fp.ack(0))
    out("after reset", [fp_event(e) for e in dec.events()], repr(fp.Packet(1, 7, b"\x00")))
    out(repr(fp.Discarded(fp.NOISE, 3)))


def frame_pixels(rng, count):
    return bytes([(rng.next() >> 24) & 0xFF for _ in range(count)])


def fingerprint_frames():
    out("== fingerprint stream assembler")
    rng = Lcg(77)
    packets = []
    # format 0, 8 bits; format 0, 4 bits; format 1 (band report), 8 and 4 bits
    px0 = frame_pixels(rng, 12 * 5)
    packets += fp.frame_packets(0, 100, 10, 20, 12, 5, px0, 24)
    px1 = fp.pack4(frame_pixels(rng, 9 * 3))
    packets += fp.frame_packets(1, 133, 0, 0, 9, 3, px1, 20, bits=4)
    band = fp.BandInfo(200, 2, 321, [(12, 18, 11, 19), (13, 17, 12, 18), (14, 16, 14, 16)])
    out("band", hx(band.encode()), band.sent_count(5), band.check(10, 12, 5))
    px2 = frame_pixels(rng, band.sent_count(5))
    packets += fp.frame_packets(2, 166, 10, 40, 12, 5, px2, 26, band=band)
    band4 = fp.BandInfo(0, 3, 0, [(1, 4, 0, 5), (0, 0, 0, 0)])
    px3 = fp.pack4(frame_pixels(rng, band4.sent_count(5)))
    packets += fp.frame_packets(3, 199, 0, 0, 6, 5, px3, 19, bits=4, band=band4)
    # a frame that loses its second chunk, then one that is fine again
    lossy = fp.frame_packets(4, 233, 0, 0, 12, 5, frame_pixels(rng, 60), 24)
    packets += lossy[:1] + lossy[2:]
    packets += fp.frame_packets(5, 266, 1, 2, 3, 4, frame_pixels(rng, 12), 64)
    # a header with an impossible bit depth
    bad = bytearray(fp.frame_packets(6, 300, 0, 0, 2, 2, bytes(4), 64)[0])
    bad[fp.HEADER_SIZE + fp.CHUNK_HEADER_SIZE + 12] = 5
    payload = bytes(bad[fp.HEADER_SIZE : -2])
    packets.append(fp.encode_packet(fp.PID_DATA, payload))
    # a band report that does not fit its window
    wrong = fp.BandInfo(1, 2, 0, [(0, 1, 0, 1)])
    head = fp.struct.pack(fp.FRAME_HEADER, 310, 0, 0, 4, 4, 8, fp.FORMAT_BANDED)
    body = fp.struct.pack(fp.CHUNK_HEADER, 7, 0) + head + wrong.encode() + b"\x00\x00"
    packets.append(fp.encode_packet(fp.PID_DATA, body))
    packets.append(fp.end_packet(fp.OK, 8, 4321))
    packets.append(fp.encode_packet(fp.PID_END, b"\x00"))  # short end record
    packets.append(fp.encode_packet(fp.PID_ACK, b"\x00"))  # not part of a stream

    wire = b"".join(packets)
    out("stream wire", len(packets), "packets", len(wire), "bytes", digest(wire))
    dec = fp.PacketDecoder()
    asm = fp.StreamAssembler()
    pos = 0
    while pos < len(wire):
        n = 1 + rng.below(50)
        dec.feed(wire[pos : pos + n])
        pos += n
        for event in dec.events():
            if not isinstance(event, fp.Packet):
                out("unexpected", fp_event(event))
                continue
            got = asm.feed(event)
            if isinstance(got, fp.FrameRecord):
                b = got.band
                band_text = "none"
                if b is not None:
                    band_text = f"{b.glass}/{b.block}/{b.contrast16} {b.records}"
                out(
                    "frame",
                    got.index,
                    got.t_ms,
                    got.x,
                    got.y,
                    got.width,
                    got.height,
                    got.bits,
                    got.pixel_count,
                    short(got.pixels),
                    band_text,
                )
                if got.bits == 4:
                    out("  unpacked", short(fp.unpack4(got.pixels, got.pixel_count)))
            elif isinstance(got, fp.StreamEnd):
                out("end", got.status, got.frames, got.duration_ms)
    out("dropped", asm.dropped_frames)
    attempt(
        "frame bad band",
        lambda: fp.frame_packets(0, 0, 0, 0, 4, 4, b"", 64, band=wrong),
    )
    attempt("frame bad count", lambda: fp.frame_packets(0, 0, 0, 0, 4, 4, bytes(15), 64))
    attempt("frame small packet", lambda: fp.frame_packets(0, 0, 0, 0, 1, 1, b"\x00", 18))


# --- card: apdu, tlv, cardcrypto, profile, vpcd ----------------------------------------


def card_codecs():
    out("== apdu")
    cases = [
        apdu.Command(0x00, 0x84, 0, 0, b"", 8),
        apdu.Command(0x00, 0xA4, 2, 0x0C, b"\x01\x1e"),
        apdu.Command(0x00, 0xB0, 0, 0, b"", 256),
        apdu.Command(0x00, 0xB0, 0, 0, b"", 65536),
        apdu.Command(0x00, 0xB0, 0, 0, b"", 1000),
        apdu.Command(0x00, 0xD6, 0, 0, bytes(300), 2),
        apdu.Command(0x00, 0x44, 0, 0),
        apdu.Command(0x0C, 0xB1, 0x12, 0x34, bytes(range(255)), 256),
    ]
    for command in cases:
        for extended in (False, True):
            raw = command.encode(extended)
            back = apdu.Command.decode(raw)
            out(short(raw), back == command, back.le, len(back.data), back.needs_extended())
    out(repr(cases[1]))
    rng = Lcg(9)
    agree = 0
    for _ in range(200):
        le = None if rng.below(3) == 0 else 1 + rng.below(65536)
        command = apdu.Command(rng.below(256), rng.below(256), 1, 2, rng.bytes(rng.below(300)), le)
        extended = rng.below(2) == 1
        back = apdu.Command.decode(command.encode(extended))
        if back == command or (le == 256 and back.le == 256):
            agree += 1
    out("random round trips", agree)
    for raw in (
        "00",
        "0084",
        "00a40c",
        "00a4020c03011e",
        "00b0000000000100",
        "00b0000000",
        "000000000000",
        "00a404000001",
        "00a40400000001",
    ):
        attempt("decode " + raw, lambda raw=raw: repr(apdu.Command.decode(bytes.fromhex(raw))))
    attempt("bad header", lambda: apdu.Command(256, 0, 0, 0))
    attempt("bad le", lambda: apdu.Command(0, 0, 0, 0, b"", 0))
    attempt("long data", lambda: apdu.Command(0, 0, 0, 0, bytes(65536)))
    response = apdu.Response.decode(bytes.fromhex("01029000"))
    out(repr(response), response.ok, response.describe(), hx(response.encode()))
    out(response == apdu.Response(b"\x01\x02", 0x9000), response == cases[0])
    attempt("short response", lambda: apdu.Response.decode(b"\x90"))
    attempt("bad sw", lambda: apdu.Response(b"", 0x10000))
    codes = sorted(apdu._MEANINGS)
    codes.extend([0x6110, 0x6C10, 0x63C3, 0x6400])
    for sw in codes:
        out(apdu.describe_sw(sw))

    out("== tlv")
    for n in (0, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF):
        out("length", n, hx(tlv.encode_length(n)))
    attempt("length too large", lambda: tlv.encode_length(0x10000))
    attempt("tag too large", lambda: tlv.encode_tag(0x10000))
    objects = [(0x53, b"\x01"), (0x5F1F, bytes(200)), (0x87, bytes(0x100)), (0x8E, b"")]
    encoded = b"\x00" + b"".join([tlv.tlv(t, v) for t, v in objects]) + b"\xff"
    parsed = tlv.parse(encoded)
    out("parse", len(parsed), parsed == objects, [(f"{t:x}", len(v)) for t, v in parsed])
    out("find", short(tlv.find(parsed, 0x5F1F) or b""), tlv.find(parsed, 0x99))
    out("total_length", tlv.total_length(encoded[1:]), tlv.total_length(tlv.tlv(0x5F1F, b"")))
    for raw in ("5303aabb", "5f", "5f9f0100", "53", "5384", "538401000000", "5381"):
        attempt("parse " + raw, lambda raw=raw: tlv.parse(bytes.fromhex(raw)))
        attempt("total " + raw, lambda raw=raw: tlv.total_length(bytes.fromhex(raw)))

    out("== cardcrypto")
    for data in (b"", b"\x01" * 7, b"\x02" * 8, b"\x03" * 15):
        padded = cardcrypto.pad(data)
        out("pad", hx(padded), hx(cardcrypto.pad(data, 16)), cardcrypto.unpad(padded) == data)
    for raw in ("0000000000000000", "0102030480000000800000", "80" + "00" * 8):
        attempt("unpad " + raw, lambda raw=raw: cardcrypto.unpad(bytes.fromhex(raw)))
    out("xor", hx(cardcrypto.xor(b"\x0f\xf0", b"\xff\xff")))
    attempt("xor lengths", lambda: cardcrypto.xor(b"\x00", b""))
    for a, b in (
        (b"", b""),
        (b"\x01\x02", b"\x01\x02"),
        (b"\x01\x02", b"\x01\x03"),
        (b"\x01", b""),
    ):
        out("equal", hx(a), hx(b), cardcrypto.constant_time_equal(a, b))
    out("equal bytearray", cardcrypto.constant_time_equal(bytearray(b"\xff" * 8), b"\xff" * 8))
    base = cardcrypto.CardCrypto()
    attempt("interface", lambda: base.sha1(b""))

    out("== profile")
    builders = [
        profile.select_aid(),
        profile.select_aid(True),
        profile.select_ef(profile.FID_DG1),
        profile.select_ef(profile.FID_EF_SOD, True),
        profile.create_ef(profile.FID_EF_COM, 70000),
        profile.delete_ef(0x0102),
        profile.put_bac_keys(b"\x01" * 16, b"\x02" * 16),
        profile.put_pace_secret(b"\x03" * 20),
        profile.put_aa_key(b"\x04" * 32),
        profile.internal_authenticate(b"\x05" * 8),
        profile.activate(),
        profile.get_challenge(),
        profile.mutual_authenticate(b"\x06" * 40),
        profile.update_binary(0x10, b"abc"),
        profile.update_binary(0x8000, b"abc"),
        profile.read_binary(0x7FFF, 200),
        profile.read_binary(0x12345, 0xE0),
    ]
    for command in builders:
        out(hx(command.encode()))
    out("overheads", profile.update_overhead(0), profile.update_overhead(0x8000))
    out("offsets", hx(profile.offset_do(0)), hx(profile.offset_do(0x10000)))
    out("dg", profile.fid_for_dg(14), profile.dg_for_fid(0x0102), profile.dg_for_fid(0x011E))
    content = bytes([i & 0xFF for i in range(0x8000 + 300)])
    writes = profile.write_commands(profile.FID_DG1, content, 231)
    out("write_commands", len(writes), digest(b"".join([c.encode() for c in writes])))
    out("last writes", hx(writes[-2].encode()[:16]), hx(writes[-1].encode()[:16]))
    for full, counted in ((True, False), (False, False), (False, True)):
        fcp = profile.application_fcp(profile.LC_OPERATIONAL, [0x011E, 0x0101], 3, full, counted)
        info = profile.ApplicationInfo.parse(fcp)
        out("fcp", hx(fcp), info.lifecycle, info.locked, info.fids, info.bac_failures)
    attempt("fcp not", lambda: profile.ApplicationInfo.parse(tlv.tlv(0x6F, b"")))
    out("lds", len(profile.LDS_FIDS), [f"{f:04x}" for f in profile.LDS_FIDS[:4]])

    out("== vpcd")
    deframer = vpcd.Deframer()
    frames = vpcd.frame(b"\x01") + vpcd.frame(b"\x04") + vpcd.frame(bytes(300)) + vpcd.frame(b"")
    got = []
    for i in range(0, len(frames), 7):
        got += deframer.feed(frames[i : i + 7])
    out("deframed", [short(p) for p in got])
    attempt("frame oversize", lambda: vpcd.frame(bytes(0x10000)))


# --- card: BAC, secure messaging, the applet -------------------------------------------


def sm_round(terminal, chip, command, answer):
    """Terminal protects, chip unwraps and answers, terminal unwraps; print the wire."""
    wrapped = terminal.protect(command)
    plain = chip.unprotect_command(apdu.Command.decode(wrapped.encode()))
    reply = chip.protect_response(answer, plain.ins)
    back = terminal.unprotect(apdu.Response.decode(reply.encode()))
    out(
        "  sm",
        short(wrapped.encode()),
        plain == command,
        short(reply.encode()),
        back == answer,
        hx(terminal.ssc_bytes()),
    )


def card_bac_and_sm():
    out("== bac")
    crypto = ToyCrypto(1)
    out("check digits", bac.check_digit("L898902C3"), bac.check_digit("740812"))
    attempt("check digit", lambda: bac.check_digit("a"))
    attempt("lower case", lambda: bac.mrz_information("c11t002jm", "960220", "310101"))
    mrz = bac.mrz_information("C11T002JM", "960220", "310101")
    out("mrz", mrz, bac.mrz_information("AB1234567890", "000101", "991231"))
    k_enc, k_mac = bac.document_keys(crypto, mrz)
    out("keys", hx(k_enc), hx(k_mac))
    terminal = bac.BacTerminal(crypto, k_enc, k_mac)
    chip = bac.BacChip(crypto, k_enc, k_mac)
    rnd_ic = chip.challenge()
    data = terminal.authenticate_data(rnd_ic)
    answer, chip_sm = chip.respond(data)
    terminal_sm = terminal.finish(answer)
    out("challenge", hx(rnd_ic), short(data), short(answer))
    out("session", hx(terminal_sm.ks_enc), hx(terminal_sm.ks_mac), hx(terminal_sm.ssc_bytes()))
    out("same keys", terminal_sm.ks_enc == chip_sm.ks_enc, terminal_sm.ssc == chip_sm.ssc)
    attempt("replay", lambda: chip.respond(data))
    chip2 = bac.BacChip(crypto, k_enc, k_mac)
    chip2.challenge()
    tampered = data[:5] + bytes([data[5] ^ 1]) + data[6:]
    attempt("tampered", lambda: chip2.respond(tampered))
    attempt("short challenge", lambda: terminal.authenticate_data(b"\x00"))
    attempt("short answer", lambda: terminal.finish(answer[:39]))
    attempt("bad mac", lambda: terminal.finish(answer[:-1] + b"\x00"))

    out("== secure messaging (3DES shape)")
    commands = [
        (profile.select_ef(profile.FID_DG1), apdu.Response(b"", 0x9000)),
        (profile.read_binary(0, 4), apdu.Response(b"\x61\x5b\x5f\x1f", 0x9000)),
        (profile.read_binary(0x8000, 0x30), apdu.Response(tlv.tlv(0x53, bytes(0x30)), 0x9000)),
        (apdu.Command(0, 0xB0, 0, 0, b"", 1000), apdu.Response(bytes(1000), 0x6282)),
        (profile.update_binary(3, bytes(range(20))), apdu.Response(b"", 0x6982)),
    ]
    for command, answer in commands:
        sm_round(terminal_sm, chip_sm, command, answer)
    wrapped = terminal_sm.protect(profile.get_challenge())
    broken = apdu.Command(wrapped.cla, wrapped.ins, 0, 1, wrapped.data, wrapped.le)
    attempt("chip: tampered P2", lambda: chip_sm.unprotect_command(broken))
    attempt("chip: plain", lambda: chip_sm.unprotect_command(profile.get_challenge()))
    attempt(
        "chip: junk", lambda: chip_sm.unprotect_command(apdu.Command(0x0C, 0xB0, 0, 0, b"\x87"))
    )
    attempt("terminal: plain 9000", lambda: terminal_sm.unprotect(apdu.Response(b"", 0x9000)))
    attempt("terminal: plain 6988", lambda: repr(terminal_sm.unprotect(apdu.Response(b"", 0x6988))))
    attempt("terminal: plain 6987", lambda: repr(terminal_sm.unprotect(apdu.Response(b"", 0x6987))))
    attempt("terminal: plain 6982", lambda: terminal_sm.unprotect(apdu.Response(b"", 0x6982)))
    attempt("terminal: no 99", lambda: terminal_sm.unprotect(apdu.Response(tlv.tlv(0x8E, b""), 0)))
    attempt("terminal: junk", lambda: terminal_sm.unprotect(apdu.Response(b"\x99\x05", 0x9000)))
    attempt("sm: key sizes", lambda: sm.SecureMessaging(crypto, b"", b"", b""))
    out(
        "overhead",
        sm.protected_overhead(0),
        sm.protected_overhead(231),
        sm.protected_overhead(7, 16),
    )

    out("== secure messaging (AES shape)")
    a = sm.AesSecureMessaging(crypto, b"\x11" * 16, b"\x22" * 16, bytes(16))
    b = sm.AesSecureMessaging(crypto, b"\x11" * 16, b"\x22" * 16, bytes(16))
    for command, answer in commands:
        sm_round(a, b, command, answer)
    wrapped = a.protect(profile.read_binary(0, 8))
    body = bytearray(wrapped.data)
    body[3] ^= 0x80
    tampered = apdu.Command(wrapped.cla, wrapped.ins, wrapped.p1, wrapped.p2, bytes(body), 256)
    attempt("aes: tampered", lambda: b.unprotect_command(tampered))


def send(card, command, label, show=True):
    raw = command.encode() if isinstance(command, apdu.Command) else command
    reply = card.process(raw)
    if show:
        out(" ", label, short(raw), "->", short(reply))
    return apdu.Response.decode(reply)


def send_sm(card, session, command, label):
    """Protect, send, unprotect; print the plain exchange."""
    wrapped = session.protect(command)
    reply = apdu.Response.decode(card.process(wrapped.encode()))
    try:
        plain = session.unprotect(reply)
    except sm.SmError as exc:
        out(" ", label, "(sm)", short(command.encode()), err(exc), f"{reply.sw:04x}")
        return None
    out(
        " ",
        label,
        "(sm)",
        short(command.encode()),
        "->",
        short(plain.data),
        f"{plain.sw:04x}",
    )
    return plain


def personalise(card, crypto, mrz, pace_id):
    out(" personalise")
    send(card, profile.select_aid(), "select aid")
    ef_com = tlv.tlv(0x60, tlv.tlv(0x5F01, b"0107") + tlv.tlv(0x5C, b"\x61\x75"))
    dg1 = tlv.tlv(0x61, tlv.tlv(0x5F1F, b"IDVNM" + b"<" * 85))
    dg2 = bytes([(i * 7) & 0xFF for i in range(0x8000 + 500)])
    files = [
        (profile.FID_EF_COM, ef_com),
        (profile.FID_DG1, dg1),
        (0x0102, dg2),
        (0x0103, b"fingers"),
        (profile.FID_EF_SOD, tlv.tlv(0x77, bytes(100))),
    ]
    if pace_id:
        files.append((profile.FID_CARD_ACCESS, pace.card_access(pace_id)))
    for fid, content in files:
        commands = profile.write_commands(fid, content, 223)
        sws = []
        for command in commands:
            sws.append("{:04x}".format(send(card, command, "", False).sw))
        out(f"  write {fid:04x}", len(content), "bytes", len(commands), "commands", sws[-1])
    send(card, profile.create_ef(profile.FID_DG1, 4), "create again")
    send(card, profile.create_ef(0x3F01, 4), "create in MF range")
    send(card, profile.update_binary(200, b"x" * 40), "write past the end")
    send(card, profile.create_ef(0x0105, 300000), "create too big")
    send(card, profile.activate(), "activate without keys")
    k_enc, k_mac = bac.document_keys(crypto, mrz)
    send(card, profile.put_bac_keys(k_enc, k_mac[:15]), "short keys")
    send(card, profile.put_bac_keys(k_enc, k_mac), "put keys")
    if pace_id:
        send(card, profile.activate(), "activate without PACE secret")
        send(card, profile.put_pace_secret(pace.password_key(crypto, mrz)), "put pace secret")
    send(card, profile.put_aa_key(b"\x42" * 32), "put aa key")
    send(card, apdu.Command(0, 0xDA, 0, 0xC9, b"\x00"), "put unknown")
    send(card, profile.create_ef(0x0110, 3), "create DG16")
    send(card, profile.delete_ef(0x0110), "delete DG16")
    send(card, profile.delete_ef(0x0110), "delete again")
    info = profile.ApplicationInfo.parse(send(card, profile.select_aid(True), "select fcp").data)
    out("  info", info.lifecycle, [f"{f:04x}" for f in info.fids], info.bac_failures)
    send(card, profile.activate(), "activate (lock)")
    send(card, profile.put_aa_key(b"\x00" * 32), "put after lock")
    return dg1, dg2


def read_file(card, session, fid, size, chunk):
    """Protected SELECT and READ BINARY in chunks (even INS, then odd INS past 32767)."""
    send_sm(card, session, profile.select_ef(fid), f"select {fid:04x}")
    data = b""
    rounds = 0
    while len(data) < size:
        want = min(chunk, size - len(data))
        wrapped = session.protect(profile.read_binary(len(data), want))
        reply = session.unprotect(apdu.Response.decode(card.process(wrapped.encode())))
        piece = reply.data
        if len(data) > profile.MAX_OFFSET_EVEN_INS:
            piece = tlv.find(tlv.parse(piece), 0x53) or b""
        if not piece:
            break
        data += piece
        rounds += 1
    out(f"  read {fid:04x}", len(data), "bytes in", rounds, "reads", digest(data))
    return data


def card_applet():
    out("== applet session (BAC)")
    crypto = ToyCrypto(5)
    mrz = bac.mrz_information("C11T002JM", "960220", "310101")
    card = applet.EmrtdApplet(crypto)
    out(" atr", hx(card.atr))
    send(card, b"\x00", "too short")
    send(card, bytes(6), "six bytes, extended marker")
    send(card, apdu.Command(0x80, 0xCA, 0, 0), "proprietary class")
    send(card, apdu.Command(0x00, 0xB0, 0, 0, b"", 4), "read before select")
    send(card, profile.create_ef(0x0101, 4), "create before select")
    dg1, dg2 = personalise(card, crypto, mrz, 0)
    out(" operational")
    send(card, profile.select_aid(), "select aid")
    send(card, profile.select_ef(profile.FID_DG1), "plain select DG1")
    send(card, profile.read_binary(0, 4), "plain read")
    send(card, apdu.Command(0, 0x84, 0, 0, b"", 4), "challenge of 4")
    send(card, apdu.Command(0x0C, 0xB0, 0, 0, b"\x8e\x00"), "SM without session")

    k_enc, k_mac = bac.document_keys(crypto, mrz)
    terminal = bac.BacTerminal(crypto, k_enc, k_mac)
    rnd_ic = send(card, profile.get_challenge(), "get challenge").data
    reply = send(card, profile.mutual_authenticate(terminal.authenticate_data(rnd_ic)), "mutual")
    session = terminal.finish(reply.data)
    out("  ssc", hx(session.ssc_bytes()))
    got1 = read_file(card, session, profile.FID_DG1, len(dg1), 0xE0)
    got2 = read_file(card, session, 0x0102, len(dg2), 0xDF)
    out("  files match", got1 == dg1, got2 == dg2)
    send_sm(card, session, apdu.Command(0, 0xB0, 0x81, 0, b"", 8), "read by SFI")
    send_sm(card, session, profile.read_binary(len(dg1) + 1, 4), "read past the end")
    send_sm(card, session, profile.read_binary(len(dg1) - 2, 8), "read over the end")
    send_sm(card, session, profile.select_ef(0x0103), "select DG3 (EAC)")
    send_sm(card, session, profile.select_ef(0x0109), "select missing")
    send_sm(card, session, profile.update_binary(0, b"x"), "write when locked")
    send_sm(card, session, profile.internal_authenticate(b"\x01" * 8), "internal authenticate")
    send_sm(card, session, apdu.Command(0, 0x2A, 0, 0), "unknown instruction")
    broken = session.protect(profile.read_binary(0, 4))
    broken = apdu.Command(broken.cla, broken.ins, 0, 2, broken.data, broken.le)
    send(card, broken, "tampered SM command")
    send_sm(card, session, profile.read_binary(0, 4), "after the session ended")
    send(card, profile.internal_authenticate(b"\x01" * 8), "plain internal authenticate")

    out(" wrong MRZ")
    wrong_keys = bac.document_keys(crypto, bac.mrz_information("C11T002JN", "960220", "310101"))
    wrong = bac.BacTerminal(crypto, wrong_keys[0], wrong_keys[1])
    rnd_ic = send(card, profile.get_challenge(), "get challenge").data
    send(card, profile.mutual_authenticate(wrong.authenticate_data(rnd_ic)), "mutual (wrong)")
    send(card, profile.mutual_authenticate(bytes(40)), "mutual without challenge")
    state = card.export()
    out(" export", sorted(state), state["lifecycle"], state["bac_failures"], card.writes)
    copy = applet.EmrtdApplet(crypto)
    copy.restore(state)
    rnd_ic = send(copy, profile.get_challenge(), "restored: get challenge").data
    terminal = bac.BacTerminal(crypto, k_enc, k_mac)
    reply = send(copy, profile.mutual_authenticate(terminal.authenticate_data(rnd_ic)), "mutual")
    session = terminal.finish(reply.data)
    send_sm(copy, session, profile.select_aid(True), "restored: select fcp")
    attempt(
        "restore junk",
        lambda: copy.restore({"lifecycle": "x", "files": {}, "bac_keys": b"", "bac_failures": 0}),
    )

    out(" short EF identifiers: the lowest FID wins, whatever the creation order")
    blank = applet.EmrtdApplet(crypto)
    send(blank, profile.select_aid(), "select aid")
    for fid in (0x0121, 0x0141, 0x0101):
        send(blank, profile.create_ef(fid, 2), "create")
        send(blank, profile.update_binary(0, bytes([fid & 0xFF, fid >> 8])), "write")
    send(blank, apdu.Command(0, 0xB0, 0x81, 0, b"", 2), "read SFI 1")

    out(" vpcd slot")
    slot = vpcd.CardSlot(card)
    for payload in (b"\x01", b"\x04", profile.select_aid().encode(), b"\x02", b"\x00"):
        reply = slot.handle(payload)
        out("  slot", hx(payload), short(reply) if reply is not None else None, slot.powered)
    attempt("slot bad control", lambda: slot.handle(b"\x09"))
    out("  apdus", slot.apdus)
    foreign = applet.ForeignApplet()
    out(" foreign", hx(foreign.atr))
    send(foreign, apdu.Command(0, 0xA4, 4, 0, foreign.aid), "select own aid")
    send(foreign, profile.select_aid(), "select eMRTD")
    send(foreign, profile.get_challenge(), "challenge")
    send(foreign, apdu.Command(0x80, 0, 0, 0), "class")


def pace_session(card, crypto, mrz, pace_id, label):
    out(" pace", label)
    access = send(card, profile.select_ef(profile.FID_CARD_ACCESS), "select CardAccess")
    wrapped = send(card, profile.read_binary(0, 0x20), "read CardAccess")
    parameter_id = pace.supported_pace(wrapped.data)
    out("  parameters", parameter_id, access.sw)
    send(card, pace.mse_set_at(parameter_id), "MSE:Set AT")
    terminal = pace.PaceTerminal(crypto, pace.password_key(crypto, mrz), parameter_id)
    try:
        reply = send(card, terminal.start(), "GA 1")
        step = terminal.map_nonce(pace.dynamic_data(reply.data, 0x80))
        reply = send(card, step, "GA 2")
        step = terminal.key_agreement(pace.dynamic_data(reply.data, 0x82))
        reply = send(card, step, "GA 3")
        step = terminal.mutual_authentication(pace.dynamic_data(reply.data, 0x84))
        reply = send(card, step, "GA 4")
        session = terminal.finish(pace.dynamic_data(reply.data, 0x86))
    except pace.PaceError as exc:
        out("  terminal", err(exc))
        return None
    out("  session", hx(session.ks_enc), hx(session.ks_mac), hx(session.ssc_bytes()))
    return session


def card_pace():
    out("== ec")
    for curve in (ec.NIST_P256, ec.BRAINPOOL_P256R1):
        g = curve.g
        two = curve.add(g, g)
        out(curve.name, curve.size, curve.contains(g), curve.contains((g[0], g[1] + 1)))
        out("  2G", f"{two[0]:x}", two == curve.multiply(2, g))
        for k in (1, 3, 0xDEADBEEF, curve.n - 1, curve.n + 5):
            point = curve.multiply(k, g)
            out("  k*G", f"{point[0]:x}", f"{point[1]:x}", curve.contains(point))
        attempt("  n*G", lambda curve=curve: curve.multiply(curve.n, curve.g))
        out("  G-G", curve.add(g, (g[0], curve.p - g[1])))
        encoded = curve.encode(g)
        out("  encode", short(encoded), curve.decode(encoded) == g)
        attempt("  decode off-curve", lambda c=curve, e=encoded: c.decode(e[:-1] + b"\x00"))
        attempt("  decode compressed", lambda c=curve, e=encoded: c.decode(b"\x02" + e[1:33]))
    # ICAO 9303-11 Appendix G.1: the terminal's mapping key (pure integer arithmetic).
    sk_map = 0x7F4EF07B9EA82FD78AD689B38D0BC78CF21F249D953BC46F4C6E19259C010F99
    pk_map = ec.BRAINPOOL_P256R1.multiply(sk_map, ec.BRAINPOOL_P256R1.g)
    out("G.1 PKmap,IFD", f"{pk_map[0]:X}", f"{pk_map[1]:X}")

    for pace_id in (13, 12):
        out("== applet session (PACE, parameters " + str(pace_id) + ")")
        crypto = ToyCrypto(11 + pace_id)
        mrz = bac.mrz_information("C11T002JM", "960220", "310101")
        card = applet.EmrtdApplet(crypto)
        dg1, _ = personalise(card, crypto, mrz, pace_id)
        out(" operational")
        send(card, pace.mse_set_at(99), "MSE:Set AT unknown parameters")
        send(card, pace.general_authenticate(b"", True), "GA without MSE")
        session = pace_session(card, crypto, mrz, pace_id, "right MRZ")
        if session is not None:
            send_sm(card, session, profile.select_aid(), "select aid")
            got = read_file(card, session, profile.FID_DG1, len(dg1), 0x80)
            out("  DG1 matches", got == dg1)
            send_sm(card, session, profile.internal_authenticate(b"\x07" * 8), "AA")
        wrong = bac.mrz_information("C11T002JM", "960221", "310101")
        pace_session(card, crypto, wrong, pace_id, "wrong MRZ")
        send(card, profile.select_aid(True), "select fcp")
        out(" failures", card.bac_failures)
    out("card access", hx(pace.card_access(13)), pace.supported_pace(b"\x31\x00"))
    out("kdf", hx(pace.kdf_aes128(ToyCrypto(0), b"\x01" * 32, 1)))
    attempt("dynamic data", lambda: pace.dynamic_data(b"\x7c\x00", 0x80))
    attempt("dynamic junk", lambda: pace.dynamic_data(b"\x7c\x05", 0x80))
    attempt("pace params", lambda: pace.PaceChip(ToyCrypto(0), b"", 99))
    chip = pace.PaceChip(ToyCrypto(0), b"\x01" * 20, 12)
    attempt("step 1 with data", lambda: chip.answer(tlv.tlv(0x80, b"")))


def main():
    fingerprint_commands()
    fingerprint_stream()
    fingerprint_frames()
    card_codecs()
    card_bac_and_sm()
    card_applet()
    card_pace()
    out("== end")


main()
