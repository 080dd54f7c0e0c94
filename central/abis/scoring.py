"""From the shards' hits to a verdict: which entries are verified, how their scores are
fused, and when a case goes to review.

1. **Shortlist.** Each searched finger's best entries (1:N over the compact templates), the
   best by face, and the entries whose demographics agree. Finger-list entries are ranked
   by the sum of their normalised 1:N scores; the best ``verify_candidates`` are kept.
2. **Verification.** Every shortlisted entry is compared on every finger both sides have,
   with full templates (:func:`biometrics.fingerprint.matcher.verify`), and on the face.
3. **Fusion.** Each finger score is z-normalised against the impostor distribution
   (:class:`~biometrics.fingerprint.fusion.ZNorm`), the face's cosine too, and the
   z-scores of everything compared are combined as ``sum / sqrt(count)`` (Stouffer; the
   face counts with weight ``face_weight``, ``(sum_f z_f + w z_face) / sqrt(n + w^2)``).
   Under the impostor hypothesis that keeps the *biometric score* on one scale whether
   ten fingers and a face were compared, two fingers, or the face alone, so one threshold
   serves amputees and face-only probes too, and a lucky face among 100k people (z about
   4) does not lift a candidate whose fingers disagree. ``finger_score`` is the same
   fusion over the fingers alone.
4. **Verdict.** A candidate is in review when its biometric score reaches
   ``thresholds.review``, or ``thresholds.with_demographics`` when name, date of birth and
   place agree. Demographics never add to the score: without biometric support above that
   floor nothing goes to review.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from biometrics.fingerprint.fusion import ZNorm, fuse
from biometrics.fingerprint.matcher import FingerTemplate, verify
from central.abis.demographics import Demographics, agree
from central.abis.gallery import EntryInfo, SearchProbe, ShardHits
from central.abis.settings import AbisSettings
from central.abis.templates import EnrollmentTemplates

FaceVector = NDArray[np.float32]
Verdict = Literal["no_match", "review"]


@dataclass(frozen=True, eq=False)
class VerificationTemplates:
    """What the shortlist is verified against: full finger templates and the face."""

    fingers: Mapping[int, FingerTemplate]
    face_model: str | None = None
    face: FaceVector | None = None


class TemplateSource(Protocol):
    """Where verification templates come from (the database in the registry)."""

    def templates(self, entry_ids: Sequence[int]) -> dict[int, VerificationTemplates]: ...


@dataclass(frozen=True)
class DedupCandidate:
    """A gallery entry that may be the same person as the probe."""

    entry_id: int
    package_id: uuid.UUID
    person_id: uuid.UUID | None
    score: float  # biometric score: Stouffer fusion of finger and face z-scores
    finger_score: float | None  # fused finger score (Stouffer z); None: no finger compared
    fingers: dict[int, float]  # position -> verify score in [0, 1]
    face_score: float | None  # cosine similarity; None: no face on one side
    demographics_agree: bool
    review: bool

    def to_json(self) -> dict[str, Any]:
        """JSON-ready (``adjudication_case.candidates``)."""
        return {
            "entry_id": self.entry_id,
            "package_id": str(self.package_id),
            "person_id": None if self.person_id is None else str(self.person_id),
            "score": round(self.score, 3),
            "finger_score": None if self.finger_score is None else round(self.finger_score, 3),
            "fingers": {str(p): round(s, 4) for p, s in sorted(self.fingers.items())},
            "face_score": None if self.face_score is None else round(self.face_score, 4),
            "demographics_agree": self.demographics_agree,
            "review": self.review,
        }


@dataclass(frozen=True)
class DedupResult:
    """The answer for one probe. ``entry_id`` is the probe's own gallery entry (new, or the
    one a previous attempt inserted: ``inserted`` says which)."""

    entry_id: int
    inserted: bool
    verdict: Verdict
    candidates: list[DedupCandidate] = field(default_factory=list)
    notes: tuple[str, ...] = ()

    def candidates_json(self) -> list[dict[str, Any]]:
        return [c.to_json() for c in self.candidates]


def search_probe(
    templates: EnrollmentTemplates, demographics: Demographics, settings: AbisSettings
) -> SearchProbe:
    """What the shards search with: compact templates of the searched positions."""
    fingers = {
        p: templates.fingers[p].compact for p in settings.search_positions if p in templates.fingers
    }
    return SearchProbe(fingers, templates.face_model, templates.face, demographics)


def merge_hits(parts: Sequence[ShardHits], settings: AbisSettings) -> ShardHits:
    """One answer from the shards' answers (each shard's lists are already its best)."""
    fingers: dict[int, list[tuple[int, float]]] = {}
    for part in parts:
        for position, hits in part.fingers.items():
            fingers.setdefault(position, []).extend(hits)
    for hits in fingers.values():
        hits.sort(key=lambda h: (-h[1], h[0]))
        del hits[settings.finger_shortlist :]
    faces = sorted((h for p in parts for h in p.faces), key=lambda h: (-h[1], h[0]))
    demographic = sorted(e for p in parts for e in p.demographic)
    entries = {e: info for p in parts for e, info in p.entries.items()}
    applied = min((p.applied_seq for p in parts), default=0)
    return ShardHits(
        fingers,
        faces[: settings.face_shortlist],
        demographic[: settings.demographic_candidates],
        entries,
        applied,
    )


def shortlist(hits: ShardHits, settings: AbisSettings) -> list[int]:
    """The entries to verify on every finger, most promising first."""
    norm = settings.finger_norm()
    prelim: dict[int, float] = {}
    for found in hits.fingers.values():
        for entry_id, score in found:
            prelim[entry_id] = prelim.get(entry_id, 0.0) + norm(score)
    ranked = sorted(prelim, key=lambda e: (-prelim[e], e))[: settings.verify_candidates]
    out = list(ranked)
    for entry_id in [e for e, _ in hits.faces] + hits.demographic:
        if entry_id not in out:
            out.append(entry_id)
    return out


def fused_fingers(scores: Mapping[int, float], norm: ZNorm) -> float | None:
    """Stouffer fusion of raw finger scores: sum of z-scores over sqrt(count)."""
    if not scores:
        return None
    return fuse(scores, "sum", norm) / math.sqrt(len(scores))


def score_candidates(
    probe: EnrollmentTemplates,
    demographics: Demographics,
    entries: Mapping[int, EntryInfo],
    entry_ids: Sequence[int],
    source: TemplateSource,
    settings: AbisSettings,
) -> list[DedupCandidate]:
    """Verify ``entry_ids`` on every finger and the face; best first."""
    finger_norm, face_norm = settings.finger_norm(), settings.face_norm()
    thresholds = settings.thresholds
    stored = source.templates(list(entry_ids))
    out = []
    for entry_id in entry_ids:
        info, theirs = entries.get(entry_id), stored.get(entry_id)
        if info is None or theirs is None:
            continue  # deleted since the shard answered
        fingers = {
            p: verify(record.full, theirs.fingers[p])
            for p, record in probe.fingers.items()
            if p in theirs.fingers
        }
        finger_score = fused_fingers(fingers, finger_norm)
        face_score: float | None = None
        if (
            probe.face is not None
            and theirs.face is not None
            and probe.face_model == theirs.face_model
        ):
            face_score = float(np.dot(probe.face, theirs.face))
        total = sum(finger_norm(v) for v in fingers.values())
        weights = float(len(fingers))
        if face_score is not None:
            total += settings.face_weight * face_norm(face_score)
            weights += settings.face_weight**2
        score = total / math.sqrt(weights) if weights > 0 else 0.0
        same = agree(demographics, info.demographics)
        review = score >= thresholds.review or (same and score >= thresholds.with_demographics)
        out.append(
            DedupCandidate(
                entry_id,
                info.package_id,
                info.person_id,
                score,
                finger_score,
                fingers,
                face_score,
                same,
                review,
            )
        )
    out.sort(key=lambda c: (-c.score, c.entry_id))
    return out


def verdict_of(candidates: Sequence[DedupCandidate]) -> Verdict:
    return "review" if any(c.review for c in candidates) else "no_match"


def reported(candidates: Sequence[DedupCandidate], settings: AbisSettings) -> list[DedupCandidate]:
    """The ``top_k`` best, plus every candidate in review whatever its rank."""
    return [c for i, c in enumerate(candidates) if i < settings.top_k or c.review]


def identify(
    probe: EnrollmentTemplates,
    demographics: Demographics,
    parts: Sequence[ShardHits],
    source: TemplateSource,
    settings: AbisSettings,
) -> tuple[Verdict, list[DedupCandidate]]:
    """Shortlist, verify, fuse and decide from the shards' answers."""
    hits = merge_hits(parts, settings)
    ids = shortlist(hits, settings)
    scored = score_candidates(probe, demographics, hits.entries, ids, source, settings)
    return verdict_of(scored), reported(scored, settings)
