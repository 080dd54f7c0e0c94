"""The errors a package reader raises.

Every error carries a stable machine-readable ``code`` so that the registry can answer a
station with it (and a station can show the officer what to do) without parsing messages.
"""

from __future__ import annotations


class PackageError(Exception):
    """Base class: the package cannot be accepted. ``code`` is stable across versions."""

    code = "invalid-package"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class MalformedPackageError(PackageError):
    """The bytes are not a well-formed package envelope or inner container."""

    code = "malformed"


class UnsupportedVersionError(PackageError):
    """The package declares a format version this reader does not implement."""

    code = "unsupported-version"


class SizeLimitError(PackageError):
    """Declared or actual size over a limit (file, part, image, decompressed data)."""

    code = "too-large"


class WrongRecipientError(PackageError):
    """The package is encrypted to a key this reader does not hold."""

    code = "wrong-recipient"


class DecryptionError(PackageError):
    """The ciphertext or the authenticated header was altered: decryption failed."""

    code = "decryption-failed"


class UnknownSignerError(PackageError):
    """The signing key is not in the trust store (or its certificate does not chain)."""

    code = "unknown-signer"


class RevokedSignerError(UnknownSignerError):
    """The signer is known but revoked or suspended."""

    code = "revoked-signer"


class BadSignatureError(PackageError):
    """The manifest signature does not verify with the signer's key."""

    code = "bad-signature"


class TamperedPartError(PackageError):
    """A part's bytes do not match the SHA-256 or size in the signed manifest."""

    code = "tampered-part"


class MissingPartError(PackageError):
    """The signed manifest lists a part that the package does not contain."""

    code = "missing-part"


class ExtraPartError(PackageError):
    """The package contains a part that the signed manifest does not list."""

    code = "extra-part"


class InconsistentPackageError(PackageError):
    """Signed parts disagree with each other or with the envelope (ids, station, samples)."""

    code = "inconsistent"


class InvalidRecordError(PackageError):
    """The enrollment record fails schema validation."""

    code = "invalid-record"


class MalformedTransactionError(PackageError):
    """The ANSI/NIST-ITL transaction cannot be parsed or breaks the profile."""

    code = "malformed-transaction"


class KeyProviderError(Exception):
    """A signing or decryption key cannot be loaded or used (file mode, token, TPM).

    Not a PackageError: it is a fault of this machine's keys, not of a package.
    """
