"""The rules the registry sets for every station (``GET /v1/station/config``), with the
defaults a station uses until its first sync."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StationPolicy(BaseModel):
    """One field per rule; unknown fields from a newer registry are ignored, so an old
    station keeps working after the registry adds a rule."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    min_age_years: int = Field(14, ge=0, le=120)
    finger_min_quality: int = Field(40, ge=0, le=100)
    finger_max_attempts: int = Field(3, ge=1, le=10)
    face_min_quality: int = Field(50, ge=0, le=100)
    staleness_limit_hours: float = Field(72.0, gt=0)
    """After this long without a successful sync, enrollment pauses: the operator list and
    the resident list may be out of date (someone disabled, someone enrolled elsewhere)."""
    heartbeat_seconds: float = Field(300.0, gt=0)
    inactivity_logout_seconds: float = Field(300.0, gt=0)
    lockout_failures: int = Field(5, ge=1)
    lockout_minutes: float = Field(15.0, gt=0)
    operator_match_threshold: float | None = Field(None, ge=0)
    """1:1 score an operator's finger must reach (None: the station's built-in default)."""
    same_finger_threshold: float | None = Field(None, ge=0)
    """Score above which two of a citizen's fingers count as one finger (None: default)."""


__all__ = ["StationPolicy"]
