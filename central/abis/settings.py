"""The ``abis`` section of the registry's settings: extractor, sharding, how much each
stage keeps, and the review thresholds.

The thresholds are on the candidate's *biometric score*: the finger and face scores, each
normalised against its impostor distribution and fused (see :mod:`central.abis.scoring`).
Their defaults come from ``bench/dedup.py`` (the FPIR they give at 10k and 100k people is
in docs/registry-dedup.md and docs/benchmarks.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:  # the matchers (numpy, scipy) load when a worker scores, not with settings
    from biometrics.fingerprint.fusion import ZNorm


class ImpostorStats(BaseModel):
    """Mean and standard deviation of a matcher's impostor scores (z-normalisation)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float
    std: float = Field(gt=0)

    def znorm(self) -> ZNorm:
        from biometrics.fingerprint.fusion import ZNorm

        return ZNorm(self.mean, self.std)


class AbisThresholds(BaseModel):
    """When a candidate goes to a person for review.

    ``review``: biometric score at or above which any candidate is reviewed.
    ``with_demographics``: the lower bar for a candidate whose name, date of birth and
    place agree with the probe's. It is still a biometric score (demographics add
    nothing to it), so demographics alone never open a case: this is the floor.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    review: float = Field(6.0, gt=0)
    with_demographics: float = Field(4.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.with_demographics > self.review:
            raise ValueError(
                "abis.thresholds.with_demographics must not exceed abis.thresholds.review: "
                "agreeing demographics may lower the bar, never raise it"
            )
        return self


class AbisSettings(BaseModel):
    """Dedup engine settings; nested in ``RegistrySettings`` as ``abis``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    extractor: Literal["mindtct", "leader"] = "mindtct"
    """Minutiae extractor: mindtct (0.16 s a rolled print) or LEADER (more accurate, ~2.6 s)."""
    shards: int = Field(1, ge=1, le=256)
    """1: the gallery in the worker's own process (embedded SQLite default); N > 1: N shard
    processes, each holding the entries whose id % N is its index."""
    search_positions: tuple[int, ...] = (2, 7)
    """Finger positions held in memory and searched 1:N (right and left index); the other
    fingers are verified on the shortlist only, from the database."""
    finger_shortlist: int = Field(20, ge=1)
    """Entries each searched finger passes on."""
    face_shortlist: int = Field(10, ge=0)
    """Entries the face search passes on (0: the face only scores the shortlist)."""
    verify_candidates: int = Field(20, ge=1)
    """Entries verified on every finger (the best by the 1:N scores)."""
    demographic_candidates: int = Field(20, ge=0)
    """At most this many entries with agreeing demographics are verified too."""
    top_k: int = Field(10, ge=1)
    """Candidates reported (every candidate in review is reported, beyond top_k too)."""
    face_weight: float = Field(1.0, ge=0)
    """Weight of the face's z-score against one finger's in the biometric score."""
    finger_impostor: ImpostorStats = ImpostorStats(mean=0.032, std=0.0244)
    """Impostor scores of ``verify`` on full templates: mindtct on synthetic rolled prints
    (3,000 pairs of the accuracy set, docs/registry-dedup.md); measure again for LEADER."""
    face_impostor: ImpostorStats = ImpostorStats(mean=0.11, std=0.09)
    """SFace cosine between different real people (docs/benchmarks.md, face dedup)."""
    thresholds: AbisThresholds = AbisThresholds()

    def finger_norm(self) -> ZNorm:
        return self.finger_impostor.znorm()

    def face_norm(self) -> ZNorm:
        return self.face_impostor.znorm()

    @model_validator(mode="after")
    def _positions(self) -> Self:
        bad = [p for p in self.search_positions if not 1 <= p <= 10]
        if bad or len(set(self.search_positions)) != len(self.search_positions):
            raise ValueError(
                f"abis.search_positions must be distinct finger positions 1-10, got "
                f"{list(self.search_positions)}"
            )
        return self
