"""PKCS#11 keys: an ES256 key pair generated on a token (an HSM; SoftHSM2 in tests).

The private key is created sensitive and non-extractable, so it never leaves the token.
SoftHSM2 lacks ``CKM_ECDSA_SHA256``: we hash with SHA-256 here and have the token sign the
digest with ``CKM_ECDSA``, which gives the same signature.

Every signature uses its own session (open, log in, sign, log out, close). That costs about
2 ms with SoftHSM2 but holds no login between calls: PKCS#11 logins are per process, so a
held login would make any other session that logs in to the same token fail with
``CKR_USER_ALREADY_LOGGED_IN``, and closing it would log out everyone else.

All calls into one module are serialised by a process-wide lock, because python-pkcs11 calls
``C_Initialize(NULL)``, which tells the module that the application does not use threads
(SoftHSM2 then turns its own mutexes off).
"""

from __future__ import annotations

import hashlib
import os
import threading
from types import TracebackType
from typing import Any, Self, cast

import pkcs11
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import exceptions as p11

from enrollment.errors import KeyProviderError

__all__ = ["Pkcs11Signer"]

# DER of the named-curve OID 1.2.840.10045.3.1.7 (P-256), the token's CKA_EC_PARAMS.
_P256_EC_PARAMS = bytes.fromhex("06082a8648ce3d030107")

_registry_lock = threading.Lock()
_module_locks: dict[str, threading.RLock] = {}


def _module_lock(module: str) -> threading.RLock:
    """The lock that serialises every call into ``module`` (a resolved path)."""
    with _registry_lock:
        return _module_locks.setdefault(module, threading.RLock())


def _resolve_module(module_path: str) -> str:
    # python-pkcs11 caches loaded modules by the path string; two spellings of one file would
    # call C_Initialize twice and fail with CKR_CRYPTOKI_ALREADY_INITIALIZED.
    if not os.path.isfile(module_path):
        raise KeyProviderError(
            f"PKCS#11 module {module_path} does not exist; install the token's library "
            "(for SoftHSM2: apt install softhsm2, module /usr/lib/softhsm/libsofthsm2.so)"
        )
    return os.path.realpath(module_path)


def _load_module(module: str) -> Any:
    try:
        return pkcs11.lib(module)
    except p11.PKCS11Error as exc:
        raise KeyProviderError(
            f"cannot load or initialise PKCS#11 module {module}: {exc!r}; check that it is "
            "a PKCS#11 library and that its configuration (SOFTHSM2_CONF for SoftHSM2) exists"
        ) from exc


def _find_token(lib: Any, module: str, token_label: str) -> Any:
    try:
        return lib.get_token(token_label=token_label)
    except p11.NoSuchToken as exc:
        labels = sorted(t.label for t in lib.get_tokens() if t.label)  # skip the free slot
        raise KeyProviderError(
            f"no token labelled {token_label!r} in PKCS#11 module {module} (tokens: {labels}); "
            "initialise it (softhsm2-util --init-token --free --label ...) or fix the label"
        ) from exc
    except p11.MultipleTokensReturned as exc:
        raise KeyProviderError(
            f"more than one token is labelled {token_label!r} in {module}; give them unique labels"
        ) from exc


def _open(token: Any, token_label: str, pin: str, *, rw: bool = False) -> Any:
    """Open a session logged in as the user, turning PIN problems into KeyProviderError."""
    try:
        return token.open(rw=rw, user_pin=pin)
    except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange) as exc:
        raise KeyProviderError(
            f"the user PIN for token {token_label!r} is incorrect; fix the configured PIN"
        ) from exc
    except p11.PinLocked as exc:
        raise KeyProviderError(
            f"the user PIN of token {token_label!r} is locked; the security officer must reset it"
        ) from exc
    except p11.UserPinNotInitialized as exc:
        raise KeyProviderError(
            f"token {token_label!r} has no user PIN yet; initialise it (softhsm2-util --init-pin)"
        ) from exc
    except p11.UserAlreadyLoggedIn as exc:
        raise KeyProviderError(
            f"another session of this process is logged in to token {token_label!r}; PKCS#11 "
            "logins are per process: close that session before using this signer"
        ) from exc


def _get_key(session: Any, token_label: str, key_label: str, object_class: ObjectClass) -> Any:
    try:
        return session.get_key(object_class=object_class, key_type=KeyType.EC, label=key_label)
    except p11.NoSuchKey as exc:
        raise KeyProviderError(
            f"token {token_label!r} has no EC {object_class.name.lower().replace('_', ' ')} "
            f"labelled {key_label!r}; create one with Pkcs11Signer.generate or fix the key label"
        ) from exc
    except p11.MultipleObjectsReturned as exc:
        raise KeyProviderError(
            f"token {token_label!r} has more than one {object_class.name.lower()} labelled "
            f"{key_label!r}; delete the extra objects"
        ) from exc


def _der_octet_string(data: bytes) -> bytes:
    """Content of a DER OCTET STRING (the wrapping PKCS#11 puts around CKA_EC_POINT)."""
    if len(data) < 2 or data[0] != 0x04:
        raise ValueError("not an OCTET STRING")
    length, start = data[1], 2
    if length & 0x80:  # long form: the low bits count the length bytes that follow
        count = length & 0x7F
        length, start = int.from_bytes(data[2 : 2 + count], "big"), 2 + count
    if start + length != len(data):
        raise ValueError("OCTET STRING length does not match")
    return data[start:]


def _public_key(pub: Any, token_label: str, key_label: str) -> ec.EllipticCurvePublicKey:
    params, point = pub[Attribute.EC_PARAMS], pub[Attribute.EC_POINT]
    if params != _P256_EC_PARAMS:
        raise KeyProviderError(
            f"key {key_label!r} on token {token_label!r} is not on curve P-256; "
            "ES256 needs a P-256 key"
        )
    # The standard wraps the point in an OCTET STRING; some modules return it bare.
    if not (len(point) == 65 and point[0] == 0x04):
        try:
            point = _der_octet_string(point)
        except ValueError as exc:
            raise KeyProviderError(
                f"CKA_EC_POINT of key {key_label!r} on token {token_label!r} is malformed"
            ) from exc
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as exc:
        raise KeyProviderError(
            f"CKA_EC_POINT of key {key_label!r} on token {token_label!r} is not a P-256 point"
        ) from exc


class Pkcs11Signer:
    """ES256 signer whose private key lives on a PKCS#11 token and never leaves it.

    Thread-safe. The constructor checks the module, token, PIN and key, and makes one test
    signature so that a private key that does not match the public key fails at start-up.
    """

    def __init__(
        self,
        module_path: str,
        token_label: str,
        pin: str,
        key_label: str,
        certificate: x509.Certificate | None = None,
    ) -> None:
        self._module = _resolve_module(module_path)
        self._lock = _module_lock(self._module)
        self._token_label = token_label
        self._pin = pin
        self._key_label = key_label
        self._certificate = certificate
        self._closed = False
        with self._lock:
            lib = _load_module(self._module)
            try:
                token = _find_token(lib, self._module, token_label)
                with _open(token, token_label, pin) as session:
                    pub = _get_key(session, token_label, key_label, ObjectClass.PUBLIC_KEY)
                    self._public_key = _public_key(pub, token_label, key_label)
                    _get_key(session, token_label, key_label, ObjectClass.PRIVATE_KEY)
            except p11.PKCS11Error as exc:
                raise self._error("reading the key", exc) from exc
        self._self_test()

    @classmethod
    def generate(cls, module_path: str, token_label: str, pin: str, key_label: str) -> Pkcs11Signer:
        """Generate a P-256 key pair on the token; refuses a label that is already used.

        The private key is a token object that is sensitive, non-extractable and can only
        sign (no decrypt, unwrap or derive).
        """
        module = _resolve_module(module_path)
        with _module_lock(module):
            lib = _load_module(module)
            try:
                token = _find_token(lib, module, token_label)
                with _open(token, token_label, pin, rw=True) as session:
                    if next(session.get_objects({Attribute.LABEL: key_label}), None) is not None:
                        raise KeyProviderError(
                            f"token {token_label!r} already has objects labelled {key_label!r}; "
                            "refusing to add a second key under the same label"
                        )
                    key_id = os.urandom(16)  # CKA_ID pairs the public and private objects
                    session.generate_keypair(
                        KeyType.EC,
                        id=key_id,
                        label=key_label,
                        store=True,
                        capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
                        public_template={
                            Attribute.EC_PARAMS: _P256_EC_PARAMS,
                            Attribute.PRIVATE: False,
                        },
                        private_template={
                            Attribute.TOKEN: True,
                            Attribute.PRIVATE: True,
                            Attribute.SENSITIVE: True,
                            Attribute.EXTRACTABLE: False,
                        },
                    )
            except p11.PKCS11Error as exc:
                raise KeyProviderError(
                    f"generating a P-256 key {key_label!r} on token {token_label!r} failed: "
                    f"{exc!r}; check that the token is writable and supports "
                    "CKM_EC_KEY_PAIR_GEN on P-256"
                ) from exc
        return cls(module, token_label, pin, key_label)

    def with_certificate(self, certificate: x509.Certificate) -> Pkcs11Signer:
        """The same key with its issued certificate attached."""
        return Pkcs11Signer(
            self._module, self._token_label, self._pin, self._key_label, certificate
        )

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    def certificate(self) -> x509.Certificate | None:
        return self._certificate

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 over SHA-256(data) on the token; returns the 64-byte ``r || s``."""
        # CKM_ECDSA signs a digest as given: hashing here gives the ES256 signature.
        digest = hashlib.sha256(data).digest()
        with self._lock:
            if self._closed:
                raise KeyProviderError(
                    f"PKCS#11 signer for key {self._key_label!r} is closed; open a new one"
                )
            lib = _load_module(self._module)
            try:
                token = _find_token(lib, self._module, self._token_label)
                with _open(token, self._token_label, self._pin) as session:
                    key = _get_key(
                        session, self._token_label, self._key_label, ObjectClass.PRIVATE_KEY
                    )
                    signature = cast(bytes, key.sign(digest, mechanism=Mechanism.ECDSA))
            except p11.PKCS11Error as exc:
                raise self._error("signing", exc) from exc
        # PKCS#11 gives r || s, each padded to the order's size: 32 bytes each for P-256.
        if len(signature) != 64:
            raise KeyProviderError(
                f"token {self._token_label!r} returned a {len(signature)}-byte ECDSA signature; "
                "a P-256 signature is 64 bytes (r || s)"
            )
        return signature

    def close(self) -> None:
        """Stop using the token; later calls to :meth:`sign` raise KeyProviderError.

        No session stays open between signatures, so there is nothing else to release; the
        module stays loaded because other signers in the process may share it.
        """
        with self._lock:
            self._closed = True
            self._pin = ""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _self_test(self) -> None:
        probe = b"pkcs11 signer self-test"
        raw = self.sign(probe)
        r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
        try:
            self._public_key.verify(encode_dss_signature(r, s), probe, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature as exc:
            raise KeyProviderError(
                f"the private and public keys labelled {self._key_label!r} on token "
                f"{self._token_label!r} do not belong together; relabel or regenerate them"
            ) from exc

    def _error(self, action: str, exc: p11.PKCS11Error) -> KeyProviderError:
        return KeyProviderError(
            f"PKCS#11 error while {action} with key {self._key_label!r} on token "
            f"{self._token_label!r}: {exc!r}; check that the token is present and the key usable"
        )
