"""Fingerprints: synthetic generation, quality, minutiae, templates and matching.

The minutiae extractors are re-exported here: :class:`MindtctExtractor` (NIST mindtct,
fast) and :class:`LeaderExtractor` (the LEADER network, the accurate option); both
implement :class:`MinutiaeExtractor` and return a :class:`MinutiaSet`.
"""

from biometrics.fingerprint.leader import LeaderExtractor
from biometrics.fingerprint.minutiae import (
    MindtctExtractor,
    MinutiaeExtractor,
    MinutiaSet,
    extract_minutiae,
)

__all__ = [
    "LeaderExtractor",
    "MindtctExtractor",
    "MinutiaSet",
    "MinutiaeExtractor",
    "extract_minutiae",
]
