"""TPM 2.0 keys: an ES256 signing key that only this TPM can use (swtpm in tests).

The key is a child of the owner hierarchy's storage primary key. The primary is never made
persistent: it is re-derived with CreatePrimary from the same template whenever it is
needed, which gives the same key as long as the owner seed is unchanged (a TPM clear
changes it, and the key file then stops loading). The child's public area and its private
area (encrypted by the TPM to its parent) are kept in a 0600 file; the private key itself
never leaves the TPM in the clear.

Every operation opens its own TPM connection and flushes every transient object it loaded,
even on errors: without a resource manager (swtpm, a raw /dev/tpm0) leaked objects fill the
TPM's few object slots and later loads fail with "out of memory for object contexts".
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_ECC_CURVE,
    TPM2_RC,
    TPM2_RH,
    TPM2_ST,
    TPMA_OBJECT,
)
from tpm2_pytss.types import (
    TPM2B_DIGEST,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPMS_ECC_PARMS,
    TPMS_ECC_POINT,
    TPMS_SCHEME_HASH,
    TPMT_ECC_SCHEME,
    TPMT_KDF_SCHEME,
    TPMT_PUBLIC,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF_OBJECT,
    TPMT_TK_HASHCHECK,
    TPMU_ASYM_SCHEME,
    TPMU_PUBLIC_ID,
    TPMU_PUBLIC_PARMS,
    TPMU_SIG_SCHEME,
    TPMU_SYM_KEY_BITS,
    TPMU_SYM_MODE,
)

from enrollment.errors import KeyProviderError

__all__ = ["TpmSigner"]

_SIGNING_ATTRS = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
    | TPMA_OBJECT.SIGN_ENCRYPT
)

_registry_lock = threading.Lock()
_tpm_locks: dict[str, threading.Lock] = {}


def _tpm_lock(tcti: str) -> threading.Lock:
    """One lock per TPM: without a resource manager, clients must not interleave commands."""
    with _registry_lock:
        return _tpm_locks.setdefault(tcti, threading.Lock())


def _srk_template() -> Any:
    """TCG's ECC P-256 storage root key template (Provisioning Guidance, unique zero-filled).

    A fixed template makes CreatePrimary derive the same parent every time.
    """
    return TPM2B_PUBLIC(
        publicArea=TPMT_PUBLIC(
            type=TPM2_ALG.ECC,
            nameAlg=TPM2_ALG.SHA256,
            objectAttributes=TPMA_OBJECT.FIXEDTPM
            | TPMA_OBJECT.FIXEDPARENT
            | TPMA_OBJECT.SENSITIVEDATAORIGIN
            | TPMA_OBJECT.USERWITHAUTH
            | TPMA_OBJECT.NODA
            | TPMA_OBJECT.RESTRICTED
            | TPMA_OBJECT.DECRYPT,
            parameters=TPMU_PUBLIC_PARMS(
                eccDetail=TPMS_ECC_PARMS(
                    symmetric=TPMT_SYM_DEF_OBJECT(
                        algorithm=TPM2_ALG.AES,
                        keyBits=TPMU_SYM_KEY_BITS(aes=128),
                        mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB),
                    ),
                    scheme=TPMT_ECC_SCHEME(scheme=TPM2_ALG.NULL),
                    curveID=TPM2_ECC_CURVE.NIST_P256,
                    kdf=TPMT_KDF_SCHEME(scheme=TPM2_ALG.NULL),
                )
            ),
            unique=TPMU_PUBLIC_ID(ecc=TPMS_ECC_POINT(x=b"\0" * 32, y=b"\0" * 32)),
        )
    )


def _ecdsa_sha256() -> Any:
    return TPMT_SIG_SCHEME(
        scheme=TPM2_ALG.ECDSA,
        details=TPMU_SIG_SCHEME(ecdsa=TPMS_SCHEME_HASH(hashAlg=TPM2_ALG.SHA256)),
    )


def _signing_template() -> Any:
    """Unrestricted ECDSA-SHA256 P-256 signing key (restricted keys refuse outside digests)."""
    return TPM2B_PUBLIC(
        publicArea=TPMT_PUBLIC(
            type=TPM2_ALG.ECC,
            nameAlg=TPM2_ALG.SHA256,
            objectAttributes=_SIGNING_ATTRS,
            parameters=TPMU_PUBLIC_PARMS(
                eccDetail=TPMS_ECC_PARMS(
                    symmetric=TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.NULL),
                    scheme=TPMT_ECC_SCHEME(
                        scheme=TPM2_ALG.ECDSA,
                        details=TPMU_ASYM_SCHEME(ecdsa=TPMS_SCHEME_HASH(hashAlg=TPM2_ALG.SHA256)),
                    ),
                    curveID=TPM2_ECC_CURVE.NIST_P256,
                    kdf=TPMT_KDF_SCHEME(scheme=TPM2_ALG.NULL),
                )
            ),
        )
    )


def _describe(exc: TSS2_Exception) -> str:
    """What to do about a TSS error, in words."""
    if exc.error == TPM2_RC.OBJECT_MEMORY:
        return (
            "the TPM has no free object slots: another client leaked transient objects; "
            "use a resource manager (tcti device:/dev/tpmrm0 or tabrmd) or restart the TPM"
        )
    if exc.error in (TPM2_RC.BAD_AUTH, TPM2_RC.AUTH_FAIL):
        return "the owner hierarchy has a password; this signer needs an empty owner auth"
    if exc.error == TPM2_RC.LOCKOUT:
        return "the TPM is in dictionary-attack lockout; wait or reset the lockout"
    return f"TPM error: {exc}"


@contextlib.contextmanager
def _connect(tcti: str) -> Iterator[Any]:
    try:
        ectx = ESAPI(tcti)
    except TSS2_Exception as exc:
        raise KeyProviderError(
            f"cannot reach the TPM through TCTI {tcti!r} ({exc}); check that the TPM (or "
            "swtpm) is running and the TCTI string, e.g. swtpm:host=127.0.0.1,port=2321"
        ) from exc
    try:
        yield ectx
    finally:
        ectx.close()


@contextlib.contextmanager
def _transient(ectx: Any, handle: Any) -> Iterator[Any]:
    """Flush ``handle`` when the block ends; a flush error never hides the block's error."""
    try:
        yield handle
    except BaseException:
        with contextlib.suppress(TSS2_Exception):
            ectx.flush_context(handle)
        raise
    ectx.flush_context(handle)


def _primary(ectx: Any) -> Any:
    handle, *_ = ectx.create_primary(None, _srk_template(), ESYS_TR.OWNER)
    return handle


def _write_key_file(path: Path, blob: bytes) -> None:
    """Write ``blob`` to ``path`` atomically, mode 0600, fsynced with its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates a fresh 0600 file: a stale temporary file cannot lend its mode.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            os.write(fd, blob)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def _read_key_file(path: Path) -> tuple[Any, Any]:
    """Parse a key file into (TPM2B_PUBLIC, TPM2B_PRIVATE), checking it is an ES256 key."""
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise KeyProviderError(
            f"TPM key file {path} does not exist; create it with TpmSigner.create"
        ) from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyProviderError(
            f"TPM key file {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
            f"it must be readable by its owner only: chmod 600 {path}"
        )
    blob = path.read_bytes()
    try:
        public, used = TPM2B_PUBLIC.unmarshal(blob)
        private, used_private = TPM2B_PRIVATE.unmarshal(blob[used:])
    except TSS2_Exception as exc:
        raise KeyProviderError(
            f"{path} is not a TPM key file (marshalled TPM2B_PUBLIC + TPM2B_PRIVATE)"
        ) from exc
    if used + used_private != len(blob) or len(private) == 0:
        raise KeyProviderError(f"{path} is not a TPM key file: it has a wrong length")
    area = public.publicArea
    ecc = area.parameters.eccDetail
    if (
        area.type != TPM2_ALG.ECC
        or ecc.curveID != TPM2_ECC_CURVE.NIST_P256
        or ecc.scheme.scheme != TPM2_ALG.ECDSA
        or ecc.scheme.details.ecdsa.hashAlg != TPM2_ALG.SHA256
        or not area.objectAttributes & TPMA_OBJECT.SIGN_ENCRYPT
        or area.objectAttributes & TPMA_OBJECT.RESTRICTED
    ):
        raise KeyProviderError(f"TPM key file {path} does not hold an ECDSA-SHA256 P-256 key")
    return public, private


def _to_public_key(public: Any, path: Path) -> ec.EllipticCurvePublicKey:
    point = public.publicArea.unique.ecc
    x, y = bytes(point.x), bytes(point.y)
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(
            ec.SECP256R1(), b"\x04" + x.rjust(32, b"\0") + y.rjust(32, b"\0")
        )
    except ValueError as exc:
        raise KeyProviderError(f"TPM key file {path} holds an invalid P-256 point") from exc


class TpmSigner:
    """ES256 signer whose key only the TPM behind ``tcti`` can use.

    Thread-safe. The constructor loads the key once into the TPM, so a key file made by
    another TPM (or before the owner hierarchy was cleared) fails at start-up.
    """

    def __init__(
        self, tcti: str, key_path: Path, certificate: x509.Certificate | None = None
    ) -> None:
        self._tcti = tcti
        self._key_path = key_path
        self._certificate = certificate
        self._lock = _tpm_lock(tcti)
        self._public, self._private = _read_key_file(key_path)
        self._public_key = _to_public_key(self._public, key_path)
        with self._lock, _connect(tcti) as ectx:
            try:
                with _transient(ectx, self._load(ectx)):
                    pass
            except TSS2_Exception as exc:
                raise KeyProviderError(f"cannot load TPM key {key_path}: {_describe(exc)}") from exc

    @classmethod
    def create(cls, tcti: str, key_path: Path) -> TpmSigner:
        """Create an ES256 key in the TPM and save it to ``key_path`` (mode 0600).

        Refuses to overwrite an existing file.
        """
        if key_path.exists():
            raise KeyProviderError(f"{key_path} exists; refusing to overwrite a key")
        with _tpm_lock(tcti), _connect(tcti) as ectx:
            try:
                with _transient(ectx, _primary(ectx)) as parent:
                    private, public, *_ = ectx.create(parent, None, _signing_template())
            except TSS2_Exception as exc:
                raise KeyProviderError(f"cannot create a TPM key: {_describe(exc)}") from exc
        _write_key_file(key_path, public.marshal() + private.marshal())
        return cls(tcti, key_path)

    def with_certificate(self, certificate: x509.Certificate) -> TpmSigner:
        """The same key with its issued certificate attached."""
        return TpmSigner(self._tcti, self._key_path, certificate)

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    def certificate(self) -> x509.Certificate | None:
        return self._certificate

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 over SHA-256(data) in the TPM; returns the 64-byte ``r || s``."""
        digest = hashlib.sha256(data).digest()
        validation = TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)
        with self._lock, _connect(self._tcti) as ectx:
            try:
                with _transient(ectx, self._load(ectx)) as key:
                    signature = ectx.sign(key, TPM2B_DIGEST(digest), _ecdsa_sha256(), validation)
            except TSS2_Exception as exc:
                raise KeyProviderError(
                    f"TPM signing with {self._key_path} failed: {_describe(exc)}"
                ) from exc
        r = bytes(signature.signature.ecdsa.signatureR)
        s = bytes(signature.signature.ecdsa.signatureS)
        if len(r) > 32 or len(s) > 32:
            raise KeyProviderError(f"the TPM returned a malformed signature for {self._key_path}")
        # Some TPMs drop leading zero bytes; COSE wants each half exactly 32 bytes.
        return r.rjust(32, b"\0") + s.rjust(32, b"\0")

    def _load(self, ectx: Any) -> Any:
        """Re-derive the parent, load the key under it and flush the parent again."""
        with _transient(ectx, _primary(ectx)) as parent:
            try:
                return ectx.load(parent, self._private, self._public)
            except TSS2_Exception as exc:
                if exc.error == TPM2_RC.INTEGRITY:
                    raise KeyProviderError(
                        f"TPM key file {self._key_path} was not made by this TPM, or its "
                        "owner hierarchy was cleared since; create a new key and certify it"
                    ) from exc
                raise
