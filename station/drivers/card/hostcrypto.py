"""Host implementation of :class:`CardCrypto` with the ``cryptography`` package."""

import hashlib
import os

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.cmac import CMAC

from .cardcrypto import CardCrypto

_ZERO_IV = bytes(8)


def _cbc(key: bytes, data: bytes, encrypt: bool) -> bytes:
    if len(key) == 16:  # two-key 3DES as K1 K2 K1 (cryptography deprecates 16-byte keys)
        key = key + key[:8]
    cipher = Cipher(TripleDES(key), modes.CBC(_ZERO_IV))
    ctx = cipher.encryptor() if encrypt else cipher.decryptor()
    return ctx.update(data) + ctx.finalize()


class HostCrypto(CardCrypto):
    """3DES/DES from OpenSSL (via ``cryptography``), SHA-1 from hashlib, os.urandom."""

    def sha1(self, data: bytes) -> bytes:
        # SHA-1 is what ICAO 9303-11 prescribes for BAC key derivation, not a choice.
        return hashlib.sha1(data).digest()  # noqa: S324

    def tdes_cbc_encrypt(self, key: bytes, data: bytes) -> bytes:
        return _cbc(key, data, True)

    def tdes_cbc_decrypt(self, key: bytes, data: bytes) -> bytes:
        return _cbc(key, data, False)

    def retail_mac(self, key: bytes, data: bytes) -> bytes:
        if len(data) % 8:
            raise ValueError("retail MAC input must be padded to 8 bytes")
        ka = key[:8]
        # Single-DES CBC over all but the last block (3DES with K1=K2=K3 is single DES)...
        chain = _cbc(ka * 3, data[:-8], True)[-8:] if len(data) > 8 else _ZERO_IV
        last = bytes(x ^ y for x, y in zip(chain, data[-8:], strict=True))
        # ...then E(Ka) D(Kb) E(Ka) on the last block: exactly two-key 3DES EDE.
        return _cbc(key, last, True)

    def random(self, length: int) -> bytes:
        return os.urandom(length)

    def aes_cbc_encrypt(self, key: bytes, data: bytes, iv: bytes) -> bytes:
        ctx = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        return ctx.update(data) + ctx.finalize()

    def aes_cbc_decrypt(self, key: bytes, data: bytes, iv: bytes) -> bytes:
        ctx = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        return ctx.update(data) + ctx.finalize()

    def aes_cmac(self, key: bytes, data: bytes) -> bytes:
        mac = CMAC(algorithms.AES(key))
        mac.update(data)
        return mac.finalize()

    def ecdsa_p256_sign(self, private_key: bytes, message: bytes) -> bytes:
        key = ec.derive_private_key(int.from_bytes(private_key, "big"), ec.SECP256R1())
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
