"""Station-signed HTTP requests: RFC 9421 HTTP Message Signatures over an RFC 9530 digest.

Both sides use this module, so the station signs exactly what the registry verifies:

- The station adds ``Content-Digest: sha-256=:<base64>:`` (RFC 9530) for its body, then
  signs ``@method``, ``@target-uri`` and ``content-digest`` with ``created``, ``nonce``,
  ``keyid`` (the station id) and ``alg="ecdsa-p256-sha256"``, under the label
  ``station``. The key is any :class:`enrollment.keys.Signer` (software file, PKCS#11,
  TPM): :class:`SignerAlgorithm` adapts it to ``http_message_signatures``, which otherwise
  only signs with a private key object it can hold.
- The registry reads the ``keyid`` (:func:`signature_key_id`), finds the station's
  certificate, and calls :func:`verify_request`. The signature covers the digest header,
  not the body: whoever reads the body must compare it with
  :attr:`SignedRequest.content_sha256` (:class:`BodyDigest` does it chunk by chunk, for
  uploads too large to hold).

Replay protection (remembering nonces) is the verifier's job: this module only checks the
signature and its time window.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from http_message_signatures._algorithms import HTTPSignatureAlgorithm, signature_algorithms
from http_message_signatures.exceptions import InvalidSignature
from http_message_signatures.http_sfv.dictionary import Dictionary as SfvDictionary
from http_message_signatures.http_sfv.item import InnerList as SfvInnerList
from http_message_signatures.resolvers import HTTPSignatureKeyResolver
from http_message_signatures.signatures import HTTPMessageSigner, HTTPMessageVerifier

from enrollment.keys import Signer

__all__ = [
    "ALGORITHM_ID",
    "COVERED_COMPONENTS",
    "SIGNATURE_LABEL",
    "BodyDigest",
    "HttpMessage",
    "RequestSignatureError",
    "SignedRequest",
    "SignerAlgorithm",
    "StationRequestAuth",
    "content_digest",
    "parse_content_digest",
    "sign_request",
    "signature_key_id",
    "verify_request",
]

ALGORITHM_ID = "ecdsa-p256-sha256"
SIGNATURE_LABEL = "station"
COVERED_COMPONENTS = ("@method", "@target-uri", "content-digest")
"""What every station signature must cover: the verb, the full URI (scheme, host, path and
query: a signature for one endpoint or host is useless at another), and the body's digest."""

_NONCE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")  # fits RequestNonce.nonce (64 characters)
_SHA256_ITEM = re.compile(r"(?:^|,)\s*sha-256=:([A-Za-z0-9+/=]*):\s*(?:;[^,]*)?(?=,|$)")


class HttpMessage(Protocol):
    """What signing and verifying read from a request: httpx.Request has all three."""

    @property
    def method(self) -> str: ...

    @property
    def url(self) -> Any: ...  # str() gives the absolute target URI

    @property
    def headers(self) -> Any: ...  # a case-insensitive mapping of header fields


class RequestSignatureError(ValueError):
    """A signed request is refused; ``code`` is the machine-readable reason."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


# --- RFC 9530 Content-Digest ------------------------------------------------------------


def content_digest(body: bytes) -> str:
    """The ``Content-Digest`` field value for ``body``: ``sha-256=:<base64>:``."""
    return _digest_field(hashlib.sha256(body).digest())


def _digest_field(sha256: bytes) -> str:
    return f"sha-256=:{base64.b64encode(sha256).decode('ascii')}:"


def content_digest_of_chunks(chunks: Iterable[bytes]) -> str:
    """``Content-Digest`` for a body sent as a stream: the station hashes the file first."""
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk)
    return _digest_field(hasher.digest())


def parse_content_digest(value: str) -> bytes:
    """The SHA-256 a ``Content-Digest`` field declares (other algorithms are ignored)."""
    match = _SHA256_ITEM.search(value)
    if match is None:
        raise RequestSignatureError(
            "bad_content_digest",
            "Content-Digest must carry a sha-256 member (RFC 9530): sha-256=:<base64>:",
        )
    try:
        digest = base64.b64decode(match.group(1), validate=True)
    except binascii.Error as exc:
        raise RequestSignatureError(
            "bad_content_digest", "Content-Digest sha-256 value is not valid base64"
        ) from exc
    if len(digest) != 32:
        raise RequestSignatureError(
            "bad_content_digest", "Content-Digest sha-256 value must be 32 bytes"
        )
    return digest


class BodyDigest:
    """Checks a body read in chunks against the digest the signature covered, and stops a
    body that grows past ``limit`` bytes before it is all read."""

    def __init__(self, expected_sha256: bytes, limit: int | None = None) -> None:
        self._expected = expected_sha256
        self._limit = limit
        self._hasher = hashlib.sha256()
        self.size = 0

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._limit is not None and self.size > self._limit:
            raise RequestSignatureError(
                "body_too_large",
                f"request body exceeds {self._limit} bytes: send a smaller body "
                "(large packages go through the resumable upload)",
            )
        self._hasher.update(chunk)

    def verify(self) -> None:
        """Raise unless the bytes seen so far are exactly the signed body."""
        if not secrets.compare_digest(self._hasher.digest(), self._expected):
            raise RequestSignatureError(
                "content_digest_mismatch",
                "the body received does not match the signed Content-Digest: it was altered "
                "or cut short on the way; send the request again",
            )


# --- The signature algorithm over a Signer -----------------------------------------------


class SignerAlgorithm(HTTPSignatureAlgorithm):
    """``ecdsa-p256-sha256`` (RFC 9421 3.3.4) through an :class:`enrollment.keys.Signer`.

    The Signer already returns the raw 64-byte ``r || s`` form RFC 9421 asks for, so a
    TPM or HSM key signs without its private key ever reaching this process.
    """

    algorithm_id = ALGORITHM_ID

    def __init__(
        self,
        public_key: ec.EllipticCurvePublicKey | None = None,
        private_key: Signer | None = None,
    ) -> None:
        if public_key is not None and not (
            isinstance(public_key, ec.EllipticCurvePublicKey)
            and isinstance(public_key.curve, ec.SECP256R1)
        ):
            raise RequestSignatureError("bad_key", "station keys must be EC P-256")
        self.public_key = public_key
        self.signer = private_key

    def sign(self, message: bytes) -> bytes:
        if self.signer is None:
            raise RuntimeError("SignerAlgorithm.sign needs a Signer (private_key=...)")
        return self.signer.sign(message)

    def verify(self, signature: bytes, message: bytes) -> None:
        if self.public_key is None:
            raise RuntimeError("SignerAlgorithm.verify needs a public key")
        if len(signature) != 64:
            raise InvalidSignature("ecdsa-p256-sha256 signatures are 64 bytes (r || s)")
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        try:
            self.public_key.verify(der, message, ec.ECDSA(hashes.SHA256()))
        except CryptoInvalidSignature as exc:
            raise InvalidSignature("signature does not verify with the station's key") from exc


# The library refuses algorithm classes it has not registered. Ours is registered under its
# own name, so the standard id keeps meaning the library's class for everyone else.
signature_algorithms.setdefault("enrollment:" + ALGORITHM_ID, SignerAlgorithm)


class _FixedKeys(HTTPSignatureKeyResolver):
    """One key for one key id: the caller already decided which key this request needs."""

    def __init__(
        self,
        key_id: str,
        *,
        signer: Signer | None = None,
        public_key: ec.EllipticCurvePublicKey | None = None,
    ) -> None:
        self._key_id = key_id
        self._signer = signer
        self._public_key = public_key

    def resolve_private_key(self, key_id: str) -> Signer | None:
        if key_id != self._key_id:
            raise InvalidSignature(f"no signing key for {key_id!r}")
        return self._signer

    def resolve_public_key(self, key_id: str) -> ec.EllipticCurvePublicKey | None:
        if key_id != self._key_id:
            raise InvalidSignature(f"signature keyid {key_id!r} is not {self._key_id!r}")
        return self._public_key


# --- Signing (the station) --------------------------------------------------------------


def new_nonce() -> str:
    """192 random bits, URL-safe: unique per request for as long as the registry looks."""
    return secrets.token_urlsafe(24)


def sign_request(
    message: HttpMessage,
    signer: Signer,
    station_id: str,
    *,
    created: datetime | None = None,
    nonce: str | None = None,
) -> None:
    """Sign ``message`` in place (adds ``Signature-Input`` and ``Signature``).

    ``message`` must already carry ``Content-Digest`` (see :func:`content_digest`);
    :class:`StationRequestAuth` adds it from the body when it is in memory.
    """
    if "content-digest" not in message.headers:
        raise ValueError(
            "set the Content-Digest header (enrollment.request_signing.content_digest) "
            "before signing: the signature covers the body through it"
        )
    HTTPMessageSigner(
        signature_algorithm=SignerAlgorithm,
        key_resolver=_FixedKeys(station_id, signer=signer),
    ).sign(
        message,
        key_id=station_id,
        created=created or datetime.now(UTC),
        nonce=nonce or new_nonce(),
        label=SIGNATURE_LABEL,
        covered_component_ids=COVERED_COMPONENTS,
    )


class StationRequestAuth(httpx.Auth):
    """httpx authentication that signs every request with the station's key.

    ``httpx.Client(auth=StationRequestAuth(signer, "HN-BD-001"))``. A body held in memory
    gets its ``Content-Digest`` here; a streamed body (an upload from a file) must come with
    the header already set (:func:`content_digest_of_chunks`), since the stream cannot be
    read twice. Each attempt is signed afresh, with a new nonce and ``created`` time.
    """

    def __init__(self, signer: Signer, station_id: str) -> None:
        self.signer = signer
        self.station_id = station_id

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if "content-digest" not in request.headers:
            try:
                body = request.content
            except httpx.RequestNotRead as exc:
                raise ValueError(
                    "streamed request without a Content-Digest header: compute it from the "
                    "file before sending (content_digest_of_chunks)"
                ) from exc
            request.headers["Content-Digest"] = content_digest(body)
        sign_request(request, self.signer, self.station_id)
        yield request


# --- Verifying (the registry) -----------------------------------------------------------


@dataclass(frozen=True)
class SignedRequest:
    """What a verified signature vouches for."""

    key_id: str
    created: datetime
    nonce: str
    content_sha256: bytes
    """The body's SHA-256 the signature covered: compare the bytes actually received."""


def _signature_input(headers: Mapping[str, str]) -> tuple[str, Any]:
    value = headers.get("signature-input")
    if not value or "signature" not in headers:
        raise RequestSignatureError(
            "signature_missing",
            "sign the request: Signature-Input and Signature headers (RFC 9421) are required",
        )
    parsed = SfvDictionary()
    try:
        parsed.parse(value.encode())
    except ValueError as exc:
        raise RequestSignatureError(
            "bad_signature", "Signature-Input is not a structured dictionary (RFC 8941)"
        ) from exc
    if len(parsed) != 1:
        raise RequestSignatureError("bad_signature", "send exactly one signature per request")
    label, inner = next(iter(parsed.items()))
    if not isinstance(inner, SfvInnerList):
        raise RequestSignatureError("bad_signature", "Signature-Input member must be a list")
    return str(label), inner


def signature_key_id(headers: Mapping[str, str]) -> str:
    """The ``keyid`` (station id) a request claims, before anything is verified."""
    _, inner = _signature_input(headers)
    key_id = inner.params.get("keyid")
    if not isinstance(key_id, str) or not key_id:
        raise RequestSignatureError("bad_signature", "the signature has no keyid (station id)")
    return key_id


class _Verifier(HTTPMessageVerifier):
    # The library judges time with the local naive clock and its own skew; verify_request
    # checks the window itself against an injectable clock, after the signature holds.
    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        return None


def verify_request(
    message: HttpMessage,
    public_key: ec.EllipticCurvePublicKey,
    *,
    now: datetime,
    max_age: timedelta,
    clock_skew: timedelta,
) -> SignedRequest:
    """Verify a station's signature on ``message`` with ``public_key``.

    Checks: one signature, covering at least :data:`COVERED_COMPONENTS`, with ``created``,
    ``nonce`` and ``keyid`` (and ``alg``, if given, ``ecdsa-p256-sha256``); the signature
    verifies; ``created`` is at most ``max_age`` old and at most ``clock_skew`` ahead of
    ``now``. Raises :class:`RequestSignatureError` otherwise. Does not read the body.
    """
    headers = message.headers
    _, inner = _signature_input(headers)
    key_id = signature_key_id(headers)
    covered = [str(item.value) for item in inner]
    missing = [c for c in COVERED_COMPONENTS if c not in covered]
    if missing:
        raise RequestSignatureError(
            "bad_signature", f"the signature must also cover: {', '.join(missing)}"
        )
    params = inner.params
    created_ts, nonce = params.get("created"), params.get("nonce")
    if not isinstance(created_ts, int) or isinstance(created_ts, bool):
        raise RequestSignatureError("bad_signature", "the signature needs an integer 'created'")
    if not isinstance(nonce, str) or not _NONCE.match(nonce):
        raise RequestSignatureError(
            "bad_signature", "the signature needs a nonce of 16-64 characters [A-Za-z0-9_-]"
        )
    digest_header = headers.get("content-digest")
    if digest_header is None:
        raise RequestSignatureError("bad_signature", "Content-Digest header is missing")
    content_sha256 = parse_content_digest(digest_header)
    try:
        _Verifier(
            signature_algorithm=SignerAlgorithm,
            key_resolver=_FixedKeys(key_id, public_key=public_key),
        ).verify(message)
    except InvalidSignature as exc:
        raise RequestSignatureError(
            "bad_signature",
            f"the signature does not verify ({exc}): sign with the key of the station's "
            "certificate, over the request exactly as sent",
        ) from exc
    created = datetime.fromtimestamp(created_ts, UTC)
    if created > now + clock_skew:
        raise RequestSignatureError(
            "signature_from_future",
            f"signature created {int((created - now).total_seconds())} s in the future: "
            "set the station's clock (NTP)",
        )
    if now - created > max_age:
        raise RequestSignatureError(
            "stale_signature",
            f"signature created {int((now - created).total_seconds())} s ago, more than "
            f"{int(max_age.total_seconds())} s: sign each request when sending it, and "
            "check the station's clock",
        )
    expires = params.get("expires")
    if isinstance(expires, int) and datetime.fromtimestamp(expires, UTC) < now - clock_skew:
        raise RequestSignatureError("stale_signature", "the signature has expired")
    return SignedRequest(key_id, created, nonce, content_sha256)
