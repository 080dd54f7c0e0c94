"""Roll frames through the scanner's wire format without a pty: what the simulator's
firmware would send for a roll, and what the driver makes of it (codec + frame decoding,
the same code the real link runs)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import replace as _replace

import numpy as np

from station.drivers.fingerprint import protocol as p
from station.drivers.fingerprint.band import sent_pixels, trim_roll
from station.drivers.fingerprint.frames import RollFrame
from station.drivers.fingerprint.pixels import pack4
from station.drivers.fingerprint.scanner import roll_frame
from station.drivers.fingerprint.simulator import band_info


@dataclass(frozen=True)
class Stream:
    frames: list[RollFrame]
    """The frames as the station decodes them."""
    bytes: int
    """Bytes on the wire: every packet, headers and checksums included."""
    dropped: int


def encode(frames: Sequence[RollFrame], bits: int = 8, packet_size: int = 4096) -> bytes:
    """The data and end packets a scanner sends for ``frames`` (trimmed ones, with a band
    report, as format 1)."""
    out = b""
    for f in frames:
        run = sent_pixels(f)
        data = pack4(run) if bits == 4 else run.tobytes()
        packets = p.frame_packets(
            f.index, f.t_ms, f.x, f.y, f.width, f.height, data, packet_size, bits, band=band_info(f)
        )
        out += b"".join(packets)
    return out + p.end_packet(p.OK, len(frames), 1300)


def over_the_wire(
    frames: Sequence[RollFrame], bits: int = 8, packet_size: int = 4096, *, trim: bool = False
) -> Stream:
    """Send a roll's full frames through the codec as a scanner would (trimmed by its
    firmware when ``trim``) and decode them as the driver does."""
    sent = trim_roll(frames) if trim else list(frames)
    wire = encode(sent, bits, packet_size)
    decoder = p.PacketDecoder()
    decoder.feed(wire)
    assembler = p.StreamAssembler()
    got = []
    for event in decoder.events():
        if isinstance(event, p.Packet):
            record = assembler.feed(event)
            if isinstance(record, p.FrameRecord):
                got.append(roll_frame(record))
    return Stream(got, len(wire), assembler.dropped_frames)


def four_bit(frames: Sequence[RollFrame]) -> list[RollFrame]:
    """The frames with their pixels cut to 16 levels (what 4-bit pixels decode to)."""
    return [_replace(f, pixels=((f.pixels >> 4) * 17).astype(np.uint8)) for f in frames]
