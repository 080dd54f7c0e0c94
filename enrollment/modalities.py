"""Biometric modalities: what each one is carried in, where it sits, why it may be absent.

Modalities are open (DESIGN.md): face and fingers now, iris, voice or DNA later. A modality
declares its ANSI/NIST-ITL record type, its position codes, its exception codes and the
positions an enrollment must account for. Adding one here changes neither the package format
version nor the pipeline: readers carry samples of a modality they do not know.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from enrollment.reference import FINGER_POSITIONS


@dataclass(frozen=True)
class Modality:
    name: str
    record_type: int  # ANSI/NIST-ITL record type that carries the sample
    positions: frozenset[int]
    # Positions an enrollment must account for, each with an image or an exception.
    required_positions: frozenset[int]
    # Exception code -> (meaning, whether the sample then has no image at all).
    exceptions: dict[str, tuple[str, bool]] = field(default_factory=dict)


FINGER = Modality(
    name="finger",
    record_type=14,
    positions=frozenset(FINGER_POSITIONS),
    required_positions=frozenset(FINGER_POSITIONS),
    exceptions={
        # ANSI/NIST-ITL AMP codes: XX amputated, UP unable to print (incl. bandaged).
        "amputated": ("finger amputated (ANSI/NIST AMP XX)", True),
        "unable_to_print": ("unable to print, e.g. worn or damaged skin (AMP UP)", True),
        "bandaged": ("bandaged or injured, temporarily unprintable (AMP UP)", True),
    },
)

FACE = Modality(
    name="face",
    record_type=10,
    positions=frozenset({0}),
    required_positions=frozenset({0}),
    exceptions={
        # The face is always captured; these say which ICAO criterion it cannot meet.
        "eyes_not_visible": ("eyes cannot be shown (blindness, eye patch)", False),
        "facial_condition": ("medical condition or deformity affects pose/expression", False),
        "religious_head_covering": ("head covering worn for religious reasons", False),
        "medical_device": ("medical device cannot be removed", False),
    },
)

_REGISTRY: dict[str, Modality] = {m.name: m for m in (FINGER, FACE)}


def register(modality: Modality) -> None:
    """Add a modality (for example iris, record type 17). Names are unique."""
    if modality.name in _REGISTRY and _REGISTRY[modality.name] != modality:
        raise ValueError(f"modality {modality.name!r} is already registered differently")
    _REGISTRY[modality.name] = modality


def get(name: str) -> Modality | None:
    return _REGISTRY.get(name)


def known() -> list[Modality]:
    return list(_REGISTRY.values())
