"""PACE (ICAO 9303-11 section 4.4) with ECDH generic mapping and AES-128 secure messaging
(id-PACE-ECDH-GM-AES-CBC-CMAC-128), the MRZ as password; both sides.

    MSE:Set AT        00 22 C1 A4  80 <OID> 83 01 01 (MRZ) [84 01 <domain parameter id>]
    GA 1 (chained)    10 86 00 00  7C 00                   -> 7C { 80 z }       z = E(Kpi, s)
    GA 2 (chained)    10 86 00 00  7C { 81 PKmap,IFD }     -> 7C { 82 PKmap,IC }
    GA 3 (chained)    10 86 00 00  7C { 83 PKeph,IFD }     -> 7C { 84 PKeph,IC }   on G' = sG + H
    GA 4 (last)       00 86 00 00  7C { 85 T_IFD }         -> 7C { 86 T_IC }

Sans-I/O and MicroPython-compatible; AES, CMAC and SHA-1 come from the injected crypto.
"""

from .apdu import Command
from .cardcrypto import CardCrypto, constant_time_equal
from .ec import STANDARD_CURVES, Curve, EcError
from .sm import AesSecureMessaging
from .tlv import TlvError, find, parse, tlv

# 0.4.0.127.0.7.2.2.4.2.2, DER content octets
OID_PACE_ECDH_GM_AES_128 = b"\x04\x00\x7f\x00\x07\x02\x02\x04\x02\x02"
PASSWORD_MRZ = 0x01
PACE_VERSION = 2


class PaceError(Exception):
    """PACE failed: wrong password (token mismatch), bad points, or a broken exchange."""


def card_access(parameter_id: int) -> bytes:
    """EF.CardAccess with one PACEInfo: GM, AES-128, the given standardized parameters."""
    info = tlv(0x06, OID_PACE_ECDH_GM_AES_128) + tlv(0x02, bytes([PACE_VERSION]))
    return tlv(0x31, tlv(0x30, info + tlv(0x02, bytes([parameter_id]))))


def supported_pace(card_access_data: bytes) -> int | None:
    """The domain parameter id of a PACEInfo we can run, from EF.CardAccess; else None."""
    try:
        outer = find(parse(card_access_data), 0x31)
        infos = parse(outer or b"")
    except TlvError:
        return None
    for tag, body in infos:
        if tag != 0x30:
            continue
        try:
            items = parse(body)
        except TlvError:
            continue
        if not items or items[0] != (0x06, OID_PACE_ECDH_GM_AES_128):
            continue
        integers = [v for t, v in items[1:] if t == 0x02]
        if len(integers) >= 2 and int.from_bytes(integers[1], "big") in STANDARD_CURVES:
            return int.from_bytes(integers[1], "big")
    return None


def password_key(crypto: CardCrypto, mrz_info: str) -> bytes:
    """The PACE secret for an MRZ password: SHA-1 of the MRZ information (20 bytes)."""
    return crypto.sha1(mrz_info.encode())


def kdf_aes128(crypto: CardCrypto, secret: bytes, counter: int) -> bytes:
    """ICAO 9303-11 9.7.1 for AES-128: SHA-1(secret || counter), first 16 bytes."""
    return crypto.sha1(secret + counter.to_bytes(4, "big"))[:16]


def mse_set_at(parameter_id: int) -> Command:
    data = (
        tlv(0x80, OID_PACE_ECDH_GM_AES_128)
        + tlv(0x83, bytes([PASSWORD_MRZ]))
        + tlv(0x84, bytes([parameter_id]))
    )
    return Command(0x00, 0x22, 0xC1, 0xA4, data)


def general_authenticate(data: bytes, last: bool) -> Command:
    return Command(0x00 if last else 0x10, 0x86, 0x00, 0x00, tlv(0x7C, data), 256)


def dynamic_data(response: bytes, tag: int) -> bytes:
    """The object ``tag`` inside a GENERAL AUTHENTICATE answer's 7C template."""
    try:
        value = find(parse(find(parse(response), 0x7C) or b""), tag)
    except TlvError as exc:
        raise PaceError("malformed dynamic authentication data") from exc
    if value is None:
        raise PaceError("GENERAL AUTHENTICATE answer lacks its data object")
    return value


def _token(crypto: CardCrypto, ks_mac: bytes, curve: Curve, point: tuple[int, int]) -> bytes:
    key_object = tlv(0x7F49, tlv(0x06, OID_PACE_ECDH_GM_AES_128) + tlv(0x86, curve.encode(point)))
    return crypto.aes_cmac(ks_mac, key_object)[:8]


def _scalar(crypto: CardCrypto, curve: Curve, given: int) -> int:
    if given:
        return given
    return int.from_bytes(crypto.random(curve.size + 8), "big") % (curve.n - 1) + 1


class _Side:
    def __init__(self, crypto: CardCrypto, secret: bytes, parameter_id: int) -> None:
        curve = STANDARD_CURVES.get(parameter_id)
        if curve is None:
            raise PaceError("unsupported PACE domain parameters")
        self.crypto = crypto
        self.curve = curve
        self.k_pi = kdf_aes128(crypto, secret, 3)
        self.nonce = 0
        self.sk_map = 0
        self.generator = curve.g
        self.sk_eph = 0
        self.pk_eph = curve.g
        self.peer_eph = curve.g
        self.ks_enc = b""
        self.ks_mac = b""

    def _map(self, peer_map: bytes) -> None:
        curve = self.curve
        try:
            shared = curve.multiply(self.sk_map, curve.decode(peer_map))
            generator = curve.add(curve.multiply(self.nonce, curve.g), shared)
        except EcError as exc:
            raise PaceError(f"mapping failed: {exc}") from exc
        if generator is None:
            raise PaceError("mapped generator is the point at infinity")
        self.generator = generator

    def _agree(self, peer_eph: bytes) -> None:
        curve = self.curve
        try:
            peer = curve.decode(peer_eph)
            shared = curve.multiply(self.sk_eph, peer)
        except EcError as exc:
            raise PaceError(f"key agreement failed: {exc}") from exc
        if peer == self.pk_eph:
            raise PaceError("the two ephemeral public keys are equal")
        self.peer_eph = peer
        secret = shared[0].to_bytes(curve.size, "big")
        self.ks_enc = kdf_aes128(self.crypto, secret, 1)
        self.ks_mac = kdf_aes128(self.crypto, secret, 2)

    def session(self) -> AesSecureMessaging:
        return AesSecureMessaging(self.crypto, self.ks_enc, self.ks_mac, bytes(16))


class PaceTerminal(_Side):
    """The inspection system's side; feed each answer's dynamic data to the next step."""

    def start(self) -> Command:
        return general_authenticate(b"", False)

    def map_nonce(self, encrypted_nonce: bytes, sk_map: int = 0) -> Command:
        if len(encrypted_nonce) != 16:
            raise PaceError("the encrypted nonce must be one AES block")
        s = self.crypto.aes_cbc_decrypt(self.k_pi, encrypted_nonce, bytes(16))
        self.nonce = int.from_bytes(s, "big")
        self.sk_map = _scalar(self.crypto, self.curve, sk_map)
        pk_map = self.curve.multiply(self.sk_map, self.curve.g)
        return general_authenticate(tlv(0x81, self.curve.encode(pk_map)), False)

    def key_agreement(self, chip_map: bytes, sk_eph: int = 0) -> Command:
        self._map(chip_map)
        self.sk_eph = _scalar(self.crypto, self.curve, sk_eph)
        self.pk_eph = self.curve.multiply(self.sk_eph, self.generator)
        return general_authenticate(tlv(0x83, self.curve.encode(self.pk_eph)), False)

    def mutual_authentication(self, chip_eph: bytes) -> Command:
        self._agree(chip_eph)
        token = _token(self.crypto, self.ks_mac, self.curve, self.peer_eph)
        return general_authenticate(tlv(0x85, token), True)

    def finish(self, chip_token: bytes) -> AesSecureMessaging:
        expected = _token(self.crypto, self.ks_mac, self.curve, self.pk_eph)
        if not constant_time_equal(chip_token, expected):
            raise PaceError("the chip's authentication token does not verify")
        return self.session()


class PaceChip(_Side):
    """The chip's side: one method per GENERAL AUTHENTICATE step, data in, data out."""

    def __init__(self, crypto: CardCrypto, secret: bytes, parameter_id: int) -> None:
        _Side.__init__(self, crypto, secret, parameter_id)
        self.step = 1

    def answer(self, data: bytes, nonce: bytes = b"", sk_map: int = 0, sk_eph: int = 0) -> bytes:
        """The 7C template answering step ``self.step``; PaceError ends the protocol."""
        try:
            objects = parse(data)
        except TlvError as exc:
            raise PaceError("malformed dynamic authentication data") from exc
        if self.step == 1:
            if objects:
                raise PaceError("step 1 carries no data")
            s = nonce or self.crypto.random(16)
            self.nonce = int.from_bytes(s, "big")
            out = tlv(0x80, self.crypto.aes_cbc_encrypt(self.k_pi, s, bytes(16)))
        elif self.step == 2:
            peer = find(objects, 0x81)
            if peer is None:
                raise PaceError("step 2 needs the terminal's mapping key")
            self.sk_map = _scalar(self.crypto, self.curve, sk_map)
            out = tlv(0x82, self.curve.encode(self.curve.multiply(self.sk_map, self.curve.g)))
            self._map(peer)
        elif self.step == 3:
            peer = find(objects, 0x83)
            if peer is None:
                raise PaceError("step 3 needs the terminal's ephemeral key")
            self.sk_eph = _scalar(self.crypto, self.curve, sk_eph)
            self.pk_eph = self.curve.multiply(self.sk_eph, self.generator)
            self._agree(peer)
            out = tlv(0x84, self.curve.encode(self.pk_eph))
        elif self.step == 4:
            token = find(objects, 0x85)
            expected = _token(self.crypto, self.ks_mac, self.curve, self.pk_eph)
            if token is None or not constant_time_equal(token, expected):
                raise PaceError("the terminal's authentication token does not verify")
            out = tlv(0x86, _token(self.crypto, self.ks_mac, self.curve, self.peer_eph))
        else:
            raise PaceError("PACE already finished")
        self.step += 1
        return tlv(0x7C, out)
