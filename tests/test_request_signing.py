"""Station request signatures (enrollment.request_signing): what they cover, the time
window, the RFC 9530 digest, a PKCS#11 key, and interoperability with the
http-message-signatures library's own ECDSA P-256 signer and verifier."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from http_message_signatures._algorithms import ECDSA_P256_SHA256
from http_message_signatures.exceptions import InvalidSignature
from http_message_signatures.resolvers import HTTPSignatureKeyResolver
from http_message_signatures.signatures import HTTPMessageSigner, HTTPMessageVerifier

from enrollment.keys.pkcs11 import Pkcs11Signer
from enrollment.keys.software import SoftwareKeySigner
from enrollment.request_signing import (
    COVERED_COMPONENTS,
    BodyDigest,
    RequestSignatureError,
    SignedRequest,
    StationRequestAuth,
    content_digest,
    content_digest_of_chunks,
    parse_content_digest,
    sign_request,
    signature_key_id,
    verify_request,
)
from tests.conftest import SoftHsmToken

URL = "https://registry.example.vn/v1/packages/0190a3c1?resume=1"
STATION = "HN-BD-001"
WINDOW = {"max_age": timedelta(minutes=5), "clock_skew": timedelta(seconds=30)}


@pytest.fixture(scope="module")
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def signed(
    key: ec.EllipticCurvePrivateKey,
    body: bytes = b'{"hello": "world"}',
    *,
    method: str = "POST",
    url: str = URL,
    created: datetime | None = None,
) -> httpx.Request:
    request = httpx.Request(method, url, content=body)
    request.headers["Content-Digest"] = content_digest(body)
    sign_request(request, SoftwareKeySigner(key), STATION, created=created)
    return request


def verify(
    request: httpx.Request, key: ec.EllipticCurvePrivateKey, now: datetime | None = None
) -> SignedRequest:
    return verify_request(request, key.public_key(), now=now or datetime.now(UTC), **WINDOW)


def refusal(request: httpx.Request, key: ec.EllipticCurvePrivateKey, **kw: datetime) -> str:
    with pytest.raises(RequestSignatureError) as caught:
        verify(request, key, **kw)
    return caught.value.code


def test_rfc9530_example_digest() -> None:
    # RFC 9530 section 2's example body and its sha-256 / sha-512 digests.
    assert content_digest(b'{"hello": "world"}') == (
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    )
    both = (
        "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX"
        "+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:, "
        "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
    )
    assert parse_content_digest(both) == hashlib.sha256(b'{"hello": "world"}').digest()
    with pytest.raises(RequestSignatureError):
        parse_content_digest("sha-512=:AAAA:")
    chunks = [b'{"hello"', b': "world"}']
    assert content_digest_of_chunks(chunks) == content_digest(b"".join(chunks))


def test_round_trip_covers_method_uri_and_digest(key: ec.EllipticCurvePrivateKey) -> None:
    request = signed(key)
    input_header = request.headers["Signature-Input"]
    assert input_header.startswith('station=("@method" "@target-uri" "content-digest");')
    assert 'alg="ecdsa-p256-sha256"' in input_header
    assert "nonce=" in input_header
    result = verify(request, key)
    assert result.key_id == STATION == signature_key_id(request.headers)
    assert result.content_sha256 == hashlib.sha256(b'{"hello": "world"}').digest()
    assert abs((result.created - datetime.now(UTC)).total_seconds()) < 5
    # each signing gets its own nonce
    assert signed(key).headers["Signature-Input"] != input_header


def test_tampering_is_refused(key: ec.EllipticCurvePrivateKey) -> None:
    request = signed(key)
    request.method = "PUT"
    assert refusal(request, key) == "bad_signature"

    request = signed(key)
    request.url = httpx.URL(URL.replace("resume=1", "resume=0"))
    assert refusal(request, key) == "bad_signature"

    request = signed(key)
    request.url = httpx.URL(URL.replace("registry.example.vn", "evil.example"))
    assert refusal(request, key) == "bad_signature"

    request = signed(key)  # new body and a matching digest: the signed digest differs
    request.headers["Content-Digest"] = content_digest(b"other body")
    assert refusal(request, key) == "bad_signature"

    other = ec.generate_private_key(ec.SECP256R1())
    assert refusal(signed(other), key) == "bad_signature"


def test_body_is_checked_against_the_signed_digest(key: ec.EllipticCurvePrivateKey) -> None:
    result = verify(signed(key, b"abc"), key)
    good = BodyDigest(result.content_sha256)
    good.update(b"a")
    good.update(b"bc")
    good.verify()
    bad = BodyDigest(result.content_sha256)
    bad.update(b"abd")
    with pytest.raises(RequestSignatureError) as caught:
        bad.verify()
    assert caught.value.code == "content_digest_mismatch"
    short = BodyDigest(result.content_sha256)
    short.update(b"ab")  # cut short
    with pytest.raises(RequestSignatureError):
        short.verify()
    limited = BodyDigest(result.content_sha256, limit=2)
    with pytest.raises(RequestSignatureError) as caught:
        limited.update(b"abc")
    assert caught.value.code == "body_too_large"


def test_time_window(key: ec.EllipticCurvePrivateKey) -> None:
    now = datetime.now(UTC)
    assert refusal(signed(key, created=now - timedelta(minutes=6)), key, now=now) == (
        "stale_signature"
    )
    verify(signed(key, created=now - timedelta(minutes=4)), key, now=now)
    assert refusal(signed(key, created=now + timedelta(minutes=2)), key, now=now) == (
        "signature_from_future"
    )
    verify(signed(key, created=now + timedelta(seconds=20)), key, now=now)


def test_signature_must_cover_the_required_components(key: ec.EllipticCurvePrivateKey) -> None:
    request = httpx.Request("POST", URL, content=b"x")
    request.headers["Content-Digest"] = content_digest(b"x")
    HTTPMessageSigner(signature_algorithm=ECDSA_P256_SHA256, key_resolver=Keys(key)).sign(
        request,
        key_id=STATION,
        created=datetime.now(UTC),
        nonce="n" * 24,
        label="station",
        covered_component_ids=("@method", "@target-uri"),
    )
    with pytest.raises(RequestSignatureError, match="content-digest"):
        verify(request, key)
    unsigned = httpx.Request("POST", URL, content=b"x")
    assert refusal(unsigned, key) == "signature_missing"


class Keys(HTTPSignatureKeyResolver):
    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self.key = key

    def resolve_private_key(self, key_id: str) -> ec.EllipticCurvePrivateKey:
        return self.key

    def resolve_public_key(self, key_id: str) -> ec.EllipticCurvePublicKey:
        return self.key.public_key()


def test_library_verifier_accepts_our_signature(key: ec.EllipticCurvePrivateKey) -> None:
    request = signed(key)
    results = HTTPMessageVerifier(
        signature_algorithm=ECDSA_P256_SHA256, key_resolver=Keys(key)
    ).verify(request)
    assert [r.label for r in results] == ["station"]
    covered = list(results[0].covered_components)
    assert covered == [*(f'"{c}"' for c in COVERED_COMPONENTS), '"@signature-params"']
    assert results[0].parameters["keyid"] == STATION
    request.method = "GET"
    with pytest.raises(InvalidSignature):
        HTTPMessageVerifier(signature_algorithm=ECDSA_P256_SHA256, key_resolver=Keys(key)).verify(
            request
        )


def test_we_accept_the_library_signers_signature(key: ec.EllipticCurvePrivateKey) -> None:
    body = b"package bytes"
    request = httpx.Request("PUT", URL, content=body)
    request.headers["Content-Digest"] = content_digest(body)
    HTTPMessageSigner(signature_algorithm=ECDSA_P256_SHA256, key_resolver=Keys(key)).sign(
        request,
        key_id=STATION,
        created=datetime.now(UTC),
        nonce=uuid.uuid4().hex,
        label="sig1",
        covered_component_ids=COVERED_COMPONENTS,
    )
    assert verify(request, key).nonce == request.headers["Signature-Input"].split('nonce="')[1][:32]


def test_httpx_auth_signs_each_attempt_and_needs_a_digest_for_streams(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    auth = StationRequestAuth(SoftwareKeySigner(key), STATION)
    request = httpx.Request("POST", URL, content=b"body")
    first = next(auth.auth_flow(request)).headers["Signature-Input"]
    assert request.headers["Content-Digest"] == content_digest(b"body")
    del request.headers["Signature-Input"], request.headers["Signature"]
    second = next(auth.auth_flow(request)).headers["Signature-Input"]
    assert first != second  # fresh nonce per attempt
    verify(request, key)

    def stream() -> Iterator[bytes]:
        yield b"chunk"

    streamed = httpx.Request("PUT", URL, content=stream())
    with pytest.raises(ValueError, match="Content-Digest"):
        next(auth.auth_flow(streamed))
    streamed.headers["Content-Digest"] = content_digest_of_chunks([b"chunk"])
    verify(next(auth.auth_flow(streamed)), key)


@pytest.mark.hsm
def test_pkcs11_key_signs_requests(softhsm_token: SoftHsmToken) -> None:
    t = softhsm_token
    label = f"request-signing-{uuid.uuid4().hex[:8]}"
    with Pkcs11Signer.generate(t.module_path, t.label, t.pin, label) as hsm:
        request = httpx.Request("POST", URL, content=b"from the HSM")
        next(StationRequestAuth(hsm, STATION).auth_flow(request))
        result = verify_request(request, hsm.public_key(), now=datetime.now(UTC), **WINDOW)
        assert result.key_id == STATION
        HTTPMessageVerifier(
            signature_algorithm=ECDSA_P256_SHA256,
            key_resolver=PublicOnly(hsm.public_key()),
        ).verify(request)


class PublicOnly(HTTPSignatureKeyResolver):
    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        self.key = key

    def resolve_public_key(self, key_id: str) -> ec.EllipticCurvePublicKey:
        return self.key
