"""Enrollment cases: one row per citizen's enrollment at this station, and the captured
pieces it holds, encrypted (:mod:`station.store.drafts`).

A case moves through these states::

    open ──submit──> packaging ──> queued ──> acknowledged ──> issued ──> card_encoded
      ^                                          │    (registry states mirrored)
      └──────────── recapture (registry asked) ──┤
                                                 └──> rejected
    open ──cancel──> cancelled

``open`` is the working state: demographics, consent, face and fingers are stored as they
are captured, each in one transaction with the case's bookkeeping, so a power cut loses at
most the capture in progress and never leaves a half-written piece. ``packaging`` holds the
package id chosen before the package is built: a power cut there rebuilds the package under
the same id (it cannot have been sent: the outbox only sends what it recorded).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import cbor2

from station.store.database import Schema


class CaseState(StrEnum):
    open = "open"
    packaging = "packaging"
    queued = "queued"
    acknowledged = "acknowledged"
    issued = "issued"
    card_encoded = "card_encoded"
    rejected = "rejected"
    cancelled = "cancelled"


#: States in which the case's captures may still change.
EDITABLE = frozenset({CaseState.open})
#: States after which the station has nothing more to do for the case.
FINAL = frozenset({CaseState.card_encoded, CaseState.rejected, CaseState.cancelled})

CASES_SCHEMA = Schema(
    "cases",
    (
        """
        CREATE TABLE enrollment_case (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL,
            operator_id TEXT NOT NULL,
            supervisor_id TEXT,
            ticket TEXT,
            resident_ref TEXT,
            package_id TEXT UNIQUE,
            recapture_of TEXT,
            started_at TEXT NOT NULL,
            consent_at TEXT,
            completed_at TEXT,
            has_demographics INTEGER NOT NULL DEFAULT 0,
            has_face INTEGER NOT NULL DEFAULT 0,
            fingers TEXT NOT NULL DEFAULT '{}',
            approvals TEXT NOT NULL DEFAULT '{}',
            registry_state TEXT,
            receipt_number TEXT,
            reject_code TEXT,
            recapture TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX enrollment_case_state ON enrollment_case (state, updated_at);
        CREATE INDEX enrollment_case_resident ON enrollment_case (resident_ref)
        """,
        # Everyone who put something into the case: none of them may be the citizen,
        # none of them may approve it.
        "ALTER TABLE enrollment_case ADD COLUMN actors TEXT NOT NULL DEFAULT '[]'",
    ),
)


@dataclass(frozen=True)
class FingerEntry:
    """One finger as the case keeps it: the chosen capture, or an exception."""

    position: int
    wsq: bytes | None = None
    width: int = 0
    height: int = 0
    quality: int | None = None
    attempts: int = 0
    template: bytes | None = None
    """ISO/IEC 19794-2 record of the capture (for the same-finger and operator checks)."""
    low_quality: bool = False
    """Kept after the last attempt although below the policy's minimum (needs approval)."""
    exception_code: str | None = None
    exception_reason: str | None = None

    @property
    def captured(self) -> bool:
        return self.wsq is not None

    def to_bytes(self) -> bytes:
        return cbor2.dumps(
            {
                "position": self.position,
                "wsq": self.wsq,
                "width": self.width,
                "height": self.height,
                "quality": self.quality,
                "attempts": self.attempts,
                "template": self.template,
                "low_quality": self.low_quality,
                "exception_code": self.exception_code,
                "exception_reason": self.exception_reason,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> FingerEntry:
        raw = cbor2.loads(data)
        return cls(
            position=int(raw["position"]),
            wsq=raw.get("wsq"),
            width=int(raw.get("width") or 0),
            height=int(raw.get("height") or 0),
            quality=raw.get("quality"),
            attempts=int(raw.get("attempts") or 0),
            template=raw.get("template"),
            low_quality=bool(raw.get("low_quality")),
            exception_code=raw.get("exception_code"),
            exception_reason=raw.get("exception_reason"),
        )

    def summary(self) -> dict[str, Any]:
        """What the case row keeps about the finger (no image, no template)."""
        return {
            "captured": self.captured,
            "quality": self.quality,
            "attempts": self.attempts,
            "low_quality": self.low_quality,
            "exception": self.exception_code,
        }


@dataclass(frozen=True)
class FaceEntry:
    """The auto-captured ICAO portrait."""

    jpeg: bytes
    width: int
    height: int
    quality: int
    frames: int = 0
    seconds: float = 0.0

    def to_bytes(self) -> bytes:
        return cbor2.dumps(
            {
                "jpeg": self.jpeg,
                "width": self.width,
                "height": self.height,
                "quality": self.quality,
                "frames": self.frames,
                "seconds": self.seconds,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> FaceEntry:
        raw = cbor2.loads(data)
        return cls(
            jpeg=bytes(raw["jpeg"]),
            width=int(raw["width"]),
            height=int(raw["height"]),
            quality=int(raw["quality"]),
            frames=int(raw.get("frames") or 0),
            seconds=float(raw.get("seconds") or 0.0),
        )


@dataclass(frozen=True)
class Case:
    """A case row (no personal data: that lives in the encrypted drafts)."""

    id: str
    state: CaseState
    operator_id: str
    supervisor_id: str | None
    ticket: str | None
    resident_ref: str | None
    package_id: str | None
    recapture_of: str | None
    started_at: datetime
    consent_at: datetime | None
    completed_at: datetime | None
    has_demographics: bool
    has_face: bool
    fingers: dict[int, dict[str, Any]]
    approvals: dict[str, str]
    """Approval item -> supervisor id (``finger:3``, ``demographics``, ...)."""
    registry_state: str | None
    receipt_number: str | None
    reject_code: str | None
    recapture: list[dict[str, Any]] = field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    actors: tuple[str, ...] = ()
    """Every operator who opened, filled in or captured for the case."""

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Case:
        def when(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        return cls(
            id=row["id"],
            state=CaseState(row["state"]),
            operator_id=row["operator_id"],
            supervisor_id=row["supervisor_id"],
            ticket=row["ticket"],
            resident_ref=row["resident_ref"],
            package_id=row["package_id"],
            recapture_of=row["recapture_of"],
            started_at=datetime.fromisoformat(row["started_at"]),
            consent_at=when(row["consent_at"]),
            completed_at=when(row["completed_at"]),
            has_demographics=bool(row["has_demographics"]),
            has_face=bool(row["has_face"]),
            fingers={int(k): v for k, v in json.loads(row["fingers"]).items()},
            approvals=dict(json.loads(row["approvals"])),
            registry_state=row["registry_state"],
            receipt_number=row["receipt_number"],
            reject_code=row["reject_code"],
            recapture=list(json.loads(row["recapture"])) if row["recapture"] else [],
            created_at=when(row["created_at"]),
            updated_at=when(row["updated_at"]),
            actors=tuple(json.loads(row["actors"])),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state.value,
            "operator_id": self.operator_id,
            "supervisor_id": self.supervisor_id,
            "ticket": self.ticket,
            "resident_ref": self.resident_ref,
            "package_id": self.package_id,
            "recapture_of": self.recapture_of,
            "started_at": self.started_at.isoformat(),
            "consent_at": self.consent_at.isoformat() if self.consent_at else None,
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
            "has_demographics": self.has_demographics,
            "has_face": self.has_face,
            "fingers": {str(k): v for k, v in sorted(self.fingers.items())},
            "approvals": self.approvals,
            "registry_state": self.registry_state,
            "receipt_number": self.receipt_number,
            "reject_code": self.reject_code,
            "recapture": self.recapture,
            "actors": list(self.actors),
        }


__all__ = ["CASES_SCHEMA", "EDITABLE", "FINAL", "Case", "CaseState", "FaceEntry", "FingerEntry"]
