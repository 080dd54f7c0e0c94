"""Dedup ("ABIS"): identify each enrollment against the gallery of earlier ones.

- :mod:`.settings`: ``AbisSettings`` (the registry's ``abis`` section).
- :mod:`.templates`: ``extract_templates`` (outside transactions), ``images_from_package``,
  the stored finger record.
- :mod:`.service`: ``Abis`` (``identify_and_insert``, ``link``, ``delete``, ``close``).
- :mod:`.scoring`: shortlist, ten-print fusion, face, review rule; ``DedupResult``.
- :mod:`.gallery`, :mod:`.shards`, :mod:`.store`: the in-memory shards, in this process or
  one process each, kept in step with the database's change log.
- :mod:`.matched_minutiae`: the matched minutia pairs of two fingers, for adjudication.

Design, sharding across machines and thresholds: docs/registry-dedup.md.
"""

from central.abis.demographics import Demographics
from central.abis.matched_minutiae import MatchedMinutiae, match_images, match_minutiae
from central.abis.scoring import DedupCandidate, DedupResult
from central.abis.service import Abis
from central.abis.settings import AbisSettings, AbisThresholds, ImpostorStats
from central.abis.templates import (
    EnrollmentTemplates,
    Extractors,
    FingerRecord,
    PackageImages,
    extract_templates,
    images_from_package,
)

__all__ = [
    "Abis",
    "AbisSettings",
    "AbisThresholds",
    "DedupCandidate",
    "DedupResult",
    "Demographics",
    "EnrollmentTemplates",
    "Extractors",
    "FingerRecord",
    "ImpostorStats",
    "MatchedMinutiae",
    "PackageImages",
    "extract_templates",
    "images_from_package",
    "match_images",
    "match_minutiae",
]
