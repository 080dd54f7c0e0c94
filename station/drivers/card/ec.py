"""Elliptic-curve arithmetic over the PACE standardized domain parameters, in plain
integers: PACE's generic mapping needs point addition on a mapped generator, which no
host crypto API offers. Affine coordinates; fine for a handful of scalar multiplications
per session. MicroPython-compatible (arbitrary-precision ints, three-argument pow; no
``int.bit_length``, see :func:`bit_length`).
"""


def bit_length(n: int) -> int:
    """``n.bit_length()``: MicroPython's int has no such method."""
    return len(bin(n).lstrip("-0b"))


class EcError(ValueError):
    """A point not on the curve, or an encoding this module does not take."""


class Curve:
    """y^2 = x^3 + ax + b over GF(p), generator g of prime order n (cofactor 1)."""

    def __init__(self, name: str, p: int, a: int, b: int, gx: int, gy: int, n: int) -> None:
        self.name = name
        self.p = p
        self.a = a
        self.b = b
        self.g = (gx, gy)
        self.n = n
        self.size = (bit_length(p) + 7) // 8

    def contains(self, point: tuple[int, int]) -> bool:
        x, y = point
        return (y * y - (x * x * x + self.a * x + self.b)) % self.p == 0

    def add(self, p1: tuple[int, int] | None, p2: tuple[int, int] | None) -> tuple[int, int] | None:
        """Point addition; None is the point at infinity."""
        if p1 is None:
            return p2
        if p2 is None:
            return p1
        p = self.p
        x1, y1 = p1
        x2, y2 = p2
        if x1 == x2:
            if (y1 + y2) % p == 0:
                return None
            slope = (3 * x1 * x1 + self.a) * pow(2 * y1, p - 2, p) % p
        else:
            slope = (y2 - y1) * pow(x2 - x1, p - 2, p) % p
        x3 = (slope * slope - x1 - x2) % p
        return (x3, (slope * (x1 - x3) - y1) % p)

    def multiply(self, k: int, point: tuple[int, int]) -> tuple[int, int]:
        """k * point, left-to-right double-and-add in Jacobian coordinates (one inversion)."""
        p = self.p
        a = self.a
        px, py = point
        k = k % self.n
        if k == 0:
            raise EcError("scalar multiple is the point at infinity")
        x, y, z = 1, 1, 0  # infinity
        for i in range(bit_length(k) - 1, -1, -1):
            if z:  # double
                yy = y * y % p
                zz = z * z % p
                s = 4 * x * yy % p
                m = (3 * x * x + a * zz * zz) % p
                x3 = (m * m - 2 * s) % p
                y, z = (m * (s - x3) - 8 * yy * yy) % p, 2 * y * z % p
                x = x3
            if (k >> i) & 1:  # add the affine point
                if not z:
                    x, y, z = px, py, 1
                    continue
                zz = z * z % p
                u2 = px * zz % p
                s2 = py * zz * z % p
                h = (u2 - x) % p
                r = (s2 - y) % p
                if h == 0:
                    if r == 0:  # same point: double it
                        return self._double_affine(point, k)
                    raise EcError("scalar multiple is the point at infinity")
                hh = h * h % p
                hhh = hh * h % p
                v = x * hh % p
                x3 = (r * r - hhh - 2 * v) % p
                y, z = (r * (v - x3) - y * hhh) % p, z * h % p
                x = x3
        if not z:
            raise EcError("scalar multiple is the point at infinity")
        zinv = pow(z, p - 2, p)
        zinv2 = zinv * zinv % p
        return (x * zinv2 % p, y * zinv2 * zinv % p)

    def _double_affine(self, point: tuple[int, int], k: int) -> tuple[int, int]:
        """Rare path (an intermediate sum met the point itself): fall back to affine."""
        result = None  # type: tuple[int, int] | None
        addend = point  # type: tuple[int, int] | None
        while k:
            if k & 1:
                result = self.add(result, addend)
            addend = self.add(addend, addend)
            k >>= 1
        if result is None:
            raise EcError("scalar multiple is the point at infinity")
        return result

    def encode(self, point: tuple[int, int]) -> bytes:
        """Uncompressed SEC 1 encoding: 04 || x || y."""
        return b"\x04" + point[0].to_bytes(self.size, "big") + point[1].to_bytes(self.size, "big")

    def decode(self, data: bytes) -> tuple[int, int]:
        if len(data) != 1 + 2 * self.size or data[0] != 0x04:
            raise EcError("expected an uncompressed point")
        point = (
            int.from_bytes(data[1 : 1 + self.size], "big"),
            int.from_bytes(data[1 + self.size :], "big"),
        )
        if not self.contains(point):
            raise EcError("point is not on the curve")
        return point


def _h(text: str) -> int:
    return int(text, 16)


NIST_P256 = Curve(
    "NIST P-256",
    _h("FFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF"),
    _h("FFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFC"),
    _h("5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B"),
    _h("6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296"),
    _h("4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5"),
    _h("FFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551"),
)

BRAINPOOL_P256R1 = Curve(
    "brainpoolP256r1",
    _h("A9FB57DBA1EEA9BC3E660A909D838D726E3BF623D52620282013481D1F6E5377"),
    _h("7D5A0975FC2C3057EEF67530417AFFE7FB8055C126DC5C6CE94A4B44F330B5D9"),
    _h("26DC5C6CE94A4B44F330B5D9BBD77CBF958416295CF7E1CE6BCCDC18FF8C07B6"),
    _h("8BD2AEB9CB7E57CB2C4B482FFC81B7AFB9DE27E1E3BD23C23A4453BD9ACE3262"),
    _h("547EF835C3DAC4FD97F8461A14611DC9C27745132DED8E545C1D54C72F046997"),
    _h("A9FB57DBA1EEA9BC3E660A909D838D718C397AA3B561A6F7901E0E82974856A7"),
)

# ICAO 9303-11 table of standardized domain parameters (the ones we carry).
STANDARD_CURVES = {12: NIST_P256, 13: BRAINPOOL_P256R1}
