"""4-bit pixel packing with numpy: the same wire format as :func:`.protocol.pack4` /
:func:`.protocol.unpack4` (pure Python, for microcontrollers), fast enough for a roll's
four million pixels on the station and in the simulator."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def pack4(pixels: NDArray[np.uint8]) -> bytes:
    """8-bit pixels (any shape, row-major) -> high nibbles in pairs, high nibble first."""
    flat = np.ascontiguousarray(pixels, np.uint8).reshape(-1)
    if flat.size & 1:
        flat = np.append(flat, np.uint8(0))
    pairs = flat.reshape(-1, 2)
    return ((pairs[:, 0] & 0xF0) | (pairs[:, 1] >> 4)).astype(np.uint8).tobytes()


def unpack4(packed: bytes, count: int) -> NDArray[np.uint8]:
    """4-bit pairs -> ``count`` 8-bit pixels, each nibble scaled by 17 (0xF -> 255)."""
    raw = np.frombuffer(packed, np.uint8)
    out = np.empty(raw.size * 2, np.uint8)
    out[0::2] = raw >> 4
    out[1::2] = raw & 0x0F
    return (out[:count] * np.uint8(17)).astype(np.uint8)
