"""What an attacker (or a buggy station) can do to a package, for the negative tests.

Anyone can encrypt to the registry's public key, so a forger can rebuild the envelope at
will; what they cannot do is sign with a trusted station key. These helpers take a package
apart (tests hold the registry key), change one thing, and put it back together.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from enrollment import cbor, cose, envelope
from enrollment.keys import Decryptor, Signer
from enrollment.manifest import MANIFEST_CONTENT_TYPE, Manifest, PartEntry, encode_part


@dataclass
class Opened:
    """A package's pieces, editable."""

    header: envelope.EnvelopeHeader
    signed_manifest: bytes
    stored: dict[str, bytes]

    @property
    def manifest(self) -> Manifest:
        from enrollment.manifest import decode_manifest

        return decode_manifest(
            cose.decode_sign1(self.signed_manifest).payload, max_parts=99, max_part_size=2**30
        )


def take_apart(data: bytes, decryptor: Decryptor) -> Opened:
    env = envelope.parse(data, max_plaintext=2**30)
    inner = cbor2.loads(envelope.open_envelope(env, decryptor))
    return Opened(env.header, inner["manifest"], dict(inner["parts"]))


def put_together(opened: Opened, recipient: ec.EllipticCurvePublicKey) -> bytes:
    """Re-encrypt (what anyone can do) without re-signing."""
    inner = cbor.dumps({"manifest": opened.signed_manifest, "parts": opened.stored})
    return envelope.seal(inner, recipient, opened.header.package_id, opened.header.created)


def resign(opened: Opened, signer: Signer, manifest: Manifest | None = None) -> None:
    """Sign (a possibly edited) manifest with ``signer``."""
    manifest = manifest or opened.manifest
    opened.signed_manifest = cose.sign1(manifest.encode(), signer, MANIFEST_CONTENT_TYPE)


def replace_part(
    opened: Opened, name: str, content: bytes, signer: Signer, encoding: str | None = None
) -> None:
    """Swap a part's content and re-sign a manifest that matches it."""
    manifest = opened.manifest
    old = manifest.part(name)
    assert old is not None
    entry, stored = encode_part(name, old.media_type, content, encoding or old.encoding)
    parts = tuple(entry if p.name == name else p for p in manifest.parts)
    opened.stored[name] = stored
    resign(opened, signer, dataclasses.replace(manifest, parts=parts))


def set_entry(opened: Opened, entry: PartEntry, stored: bytes, signer: Signer) -> None:
    """Put an arbitrary (maybe lying) manifest entry and stored bytes, signed."""
    manifest = opened.manifest
    parts = tuple(entry if p.name == entry.name else p for p in manifest.parts)
    opened.stored[entry.name] = stored
    resign(opened, signer, dataclasses.replace(manifest, parts=parts))
