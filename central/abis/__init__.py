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

from __future__ import annotations

import importlib
from typing import Any

# Names are loaded on first use (PEP 562): every registry process imports the settings,
# and importing the matchers (numpy, scipy) with them cost each process start ~2 s.
_WHERE = {
    "Demographics": "demographics",
    "MatchedMinutiae": "matched_minutiae",
    "match_images": "matched_minutiae",
    "match_minutiae": "matched_minutiae",
    "DedupCandidate": "scoring",
    "DedupResult": "scoring",
    "Abis": "service",
    "AbisSettings": "settings",
    "AbisThresholds": "settings",
    "ImpostorStats": "settings",
    "EnrollmentTemplates": "templates",
    "Extractors": "templates",
    "FingerRecord": "templates",
    "PackageImages": "templates",
    "extract_templates": "templates",
    "images_from_package": "templates",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


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
