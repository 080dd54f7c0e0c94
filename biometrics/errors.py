"""The errors the biometric algorithms raise.

Each carries a stable machine-readable ``code`` (as ``enrollment.errors`` does) so that a
caller can report it without parsing messages.
"""

from __future__ import annotations


class BiometricsError(Exception):
    """Base class for errors of the biometric algorithms. ``code`` is stable."""

    code = "biometrics-error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class TemplateFormatError(BiometricsError, ValueError):
    """Template bytes are malformed: wrong magic, truncated, inconsistent lengths or
    out-of-range fields. The message names the field and the offset where it failed."""

    code = "malformed-template"


class ExtractionError(BiometricsError):
    """A feature extractor could not process an image (bad input, backend failure)."""

    code = "extraction-failed"


class BackendUnavailableError(BiometricsError):
    """An optional backend (a native library, a model file) is not installed here."""

    code = "backend-unavailable"
