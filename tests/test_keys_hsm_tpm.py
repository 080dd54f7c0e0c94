"""Hardware-backed signers: PKCS#11 (SoftHSM2) and TPM 2.0 (swtpm)."""

from __future__ import annotations

import contextlib
import datetime
import os
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pkcs11
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, KeyType, ObjectClass
from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import TPM2_CAP, TPM2_HT

from enrollment.errors import KeyProviderError
from enrollment.keys import Signer
from enrollment.keys.pkcs11 import Pkcs11Signer
from enrollment.keys.tpm import TpmSigner

if TYPE_CHECKING:
    from tests.conftest import SoftHsmToken, Swtpm

DATA = b"manifest bytes to be signed"


def verify(public_key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> None:
    """Verify a raw ``r || s`` ES256 signature with cryptography (raises InvalidSignature)."""
    assert len(signature) == 64
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    public_key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))


def certificate_for(public_key: ec.EllipticCurvePublicKey) -> x509.Certificate:
    """A station certificate for ``public_key``, issued by a throwaway software CA."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "test station")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ca_key, hashes.SHA256())
    )


def assert_signs_es256(signer: Signer) -> None:
    signature = signer.sign(DATA)
    verify(signer.public_key(), signature, DATA)
    with pytest.raises(InvalidSignature):
        verify(signer.public_key(), signature, DATA + b"!")


def transient_handles(tcti: str) -> list[int]:
    with ESAPI(tcti) as ectx:
        _, data = ectx.get_capability(TPM2_CAP.HANDLES, TPM2_HT.TRANSIENT << 24, 64)
        return [int(h) for h in data.data.handles]


# --- PKCS#11 -----------------------------------------------------------------------------


@pytest.fixture
def hsm_label() -> str:
    """A key label of this test's own (the token lives for the whole session)."""
    return f"station-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def hsm_signer(softhsm_token: SoftHsmToken, hsm_label: str) -> Iterator[Pkcs11Signer]:
    t = softhsm_token
    with Pkcs11Signer.generate(t.module_path, t.label, t.pin, hsm_label) as signer:
        yield signer


@pytest.mark.hsm
def test_pkcs11_signature_verifies(hsm_signer: Pkcs11Signer) -> None:
    assert isinstance(hsm_signer, Signer)
    assert hsm_signer.certificate() is None
    assert_signs_es256(hsm_signer)
    certificate = certificate_for(hsm_signer.public_key())
    with hsm_signer.with_certificate(certificate) as certified:
        assert certified.certificate() is certificate
        assert_signs_es256(certified)


@pytest.mark.hsm
def test_pkcs11_reopens_key_by_label(softhsm_token: SoftHsmToken, hsm_label: str) -> None:
    t = softhsm_token
    with Pkcs11Signer.generate(t.module_path, t.label, t.pin, hsm_label) as generated:
        public = generated.public_key()
    with Pkcs11Signer(t.module_path, t.label, t.pin, hsm_label) as reopened:
        assert reopened.public_key().public_numbers() == public.public_numbers()
        verify(public, reopened.sign(DATA), DATA)
    with pytest.raises(KeyProviderError, match="closed"):
        reopened.sign(DATA)


@pytest.mark.hsm
def test_pkcs11_private_key_never_leaves_token(
    softhsm_token: SoftHsmToken, hsm_label: str, hsm_signer: Pkcs11Signer
) -> None:
    t = softhsm_token
    # The resolved path: python-pkcs11 keys its loaded modules by the path string.
    token = pkcs11.lib(os.path.realpath(t.module_path)).get_token(token_label=t.label)
    # Logins are per process: close this session before the signer logs in again.
    with token.open(user_pin=t.pin) as session:
        key = session.get_key(
            object_class=ObjectClass.PRIVATE_KEY, key_type=KeyType.EC, label=hsm_label
        )
        assert key[Attribute.EXTRACTABLE] is False
        assert key[Attribute.SENSITIVE] is True
        assert key[Attribute.NEVER_EXTRACTABLE] is True
        assert key[Attribute.TOKEN] is True
        assert key[Attribute.SIGN] is True
        assert key[Attribute.DECRYPT] is False
        assert key[Attribute.DERIVE] is False
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            key[Attribute.VALUE]
    assert_signs_es256(hsm_signer)


@pytest.mark.hsm
def test_pkcs11_wrong_pin(
    softhsm_token: SoftHsmToken, hsm_label: str, hsm_signer: Pkcs11Signer
) -> None:
    t = softhsm_token
    with pytest.raises(KeyProviderError, match=r"PIN .* incorrect"):
        Pkcs11Signer(t.module_path, t.label, t.pin + "0", hsm_label)


@pytest.mark.hsm
def test_pkcs11_missing_token_key_module(
    softhsm_token: SoftHsmToken, hsm_label: str, hsm_signer: Pkcs11Signer
) -> None:
    t = softhsm_token
    with pytest.raises(KeyProviderError, match="no token labelled 'absent'"):
        Pkcs11Signer(t.module_path, "absent", t.pin, hsm_label)
    with pytest.raises(KeyProviderError, match="no EC public key labelled 'absent'"):
        Pkcs11Signer(t.module_path, t.label, t.pin, "absent")
    with pytest.raises(KeyProviderError, match="does not exist"):
        Pkcs11Signer("/nonexistent/libpkcs11.so", t.label, t.pin, hsm_label)
    with pytest.raises(KeyProviderError, match="refusing"):
        Pkcs11Signer.generate(t.module_path, t.label, t.pin, hsm_label)


@pytest.mark.hsm
def test_pkcs11_many_signatures_from_threads(hsm_signer: Pkcs11Signer) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        signatures = list(pool.map(hsm_signer.sign, [DATA] * 50))
    for signature in signatures:
        verify(hsm_signer.public_key(), signature, DATA)


# --- TPM 2.0 -----------------------------------------------------------------------------


@pytest.mark.tpm
def test_tpm_signature_verifies(swtpm: Swtpm, tmp_path: Path) -> None:
    key_path = tmp_path / "station.tpmkey"
    signer = TpmSigner.create(swtpm.tcti, key_path)
    assert isinstance(signer, Signer)
    assert signer.certificate() is None
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert_signs_es256(signer)
    with pytest.raises(KeyProviderError, match="refusing"):
        TpmSigner.create(swtpm.tcti, key_path)
    certificate = certificate_for(signer.public_key())
    certified = signer.with_certificate(certificate)
    assert certified.certificate() is certificate
    assert_signs_es256(certified)


@pytest.mark.tpm
def test_tpm_key_survives_restart(swtpm: Swtpm, tmp_path: Path) -> None:
    key_path = tmp_path / "station.tpmkey"
    public = TpmSigner.create(swtpm.tcti, key_path).public_key()
    swtpm.restart()
    signer = TpmSigner(swtpm.tcti, key_path)
    assert signer.public_key().public_numbers() == public.public_numbers()
    verify(public, signer.sign(DATA), DATA)


@pytest.mark.tpm
def test_tpm_key_from_another_tpm_is_refused(
    swtpm_factory: Callable[[], Swtpm], tmp_path: Path
) -> None:
    key_path = tmp_path / "station.tpmkey"
    TpmSigner.create(swtpm_factory().tcti, key_path)
    other = swtpm_factory()
    with pytest.raises(KeyProviderError, match="not made by this TPM"):
        TpmSigner(other.tcti, key_path)
    assert transient_handles(other.tcti) == []  # the re-derived parent was flushed


@pytest.mark.tpm
def test_tpm_many_signatures_leak_no_handles(swtpm: Swtpm, tmp_path: Path) -> None:
    signer = TpmSigner.create(swtpm.tcti, tmp_path / "station.tpmkey")
    # swtpm has 3 object slots and no resource manager: a leak would fail within a few signs.
    for i in range(50):
        verify(signer.public_key(), signer.sign(DATA + bytes([i])), DATA + bytes([i]))
    assert transient_handles(swtpm.tcti) == []


@pytest.mark.tpm
def test_tpm_signatures_from_threads(swtpm: Swtpm, tmp_path: Path) -> None:
    signer = TpmSigner.create(swtpm.tcti, tmp_path / "station.tpmkey")
    with ThreadPoolExecutor(max_workers=4) as pool:
        signatures = list(pool.map(signer.sign, [DATA] * 20))
    for signature in signatures:
        verify(signer.public_key(), signature, DATA)
    assert transient_handles(swtpm.tcti) == []


@pytest.mark.tpm
def test_tpm_bad_key_files(swtpm: Swtpm, tmp_path: Path) -> None:
    with pytest.raises(KeyProviderError, match="does not exist"):
        TpmSigner(swtpm.tcti, tmp_path / "missing.tpmkey")
    key_path = tmp_path / "station.tpmkey"
    TpmSigner.create(swtpm.tcti, key_path)
    key_path.chmod(0o644)
    with pytest.raises(KeyProviderError, match="chmod 600"):
        TpmSigner(swtpm.tcti, key_path)
    garbage = tmp_path / "garbage.tpmkey"
    garbage.write_bytes(b"not a key")
    garbage.chmod(0o600)
    with pytest.raises(KeyProviderError, match="not a TPM key file"):
        TpmSigner(swtpm.tcti, garbage)


@pytest.mark.tpm
def test_tpm_unreachable(swtpm: Swtpm, tmp_path: Path) -> None:
    key_path = tmp_path / "station.tpmkey"
    signer = TpmSigner.create(swtpm.tcti, key_path)
    swtpm.stop()
    with pytest.raises(KeyProviderError, match="cannot reach the TPM"):
        signer.sign(DATA)


@pytest.mark.tpm
def test_tpm_full_of_leaked_objects_says_so(swtpm: Swtpm, tmp_path: Path) -> None:
    signer = TpmSigner.create(swtpm.tcti, tmp_path / "station.tpmkey")
    # Another client without a resource manager leaves primaries loaded until none fit.
    with ESAPI(swtpm.tcti) as ectx, contextlib.suppress(TSS2_Exception):
        for _ in range(10):  # swtpm has 3 slots: this fails part-way, as intended
            ectx.create_primary(None, "ecc256")
    assert transient_handles(swtpm.tcti)
    with pytest.raises(KeyProviderError, match="no free object slots"):
        signer.sign(DATA)
