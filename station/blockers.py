"""Why the station may not start a new enrollment now, as values a screen can translate.

Each blocker has a stable ``code``, the ``values`` its sentence needs, and an English
``message`` for scripts and the log. The kiosk says each code in the officer's language
with the values; it never shows the English message as the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

BlockerCode = Literal[
    "key_error", "identity_damaged", "not_provisioned", "never_synced", "stale", "disk_full"
]


@dataclass(frozen=True)
class Blocker:
    code: BlockerCode
    message: str
    """English, for scripts, the log and the technician."""
    values: Mapping[str, Any] = field(default_factory=dict)
    """What the sentence needs: ``stale``: age_h, limit_h; ``disk_full``: free_bytes,
    needed_bytes; ``key_error`` / ``identity_damaged``: detail (technical)."""

    def as_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "values": dict(self.values)}


def key_error(detail: str) -> Blocker:
    return Blocker("key_error", detail, {"detail": detail})


def identity_damaged(detail: str) -> Blocker:
    return Blocker(
        "identity_damaged", f"the station identity is damaged: {detail}", {"detail": detail}
    )


def not_provisioned() -> Blocker:
    return Blocker(
        "not_provisioned", "the station is not provisioned: a technician enters the registry token"
    )


def never_synced() -> Blocker:
    return Blocker(
        "never_synced", "the station has never synced with the registry: connect it once"
    )


def stale(age_s: float, limit_s: float) -> Blocker:
    # Whole hours: what the officer reads, in any language (the limit is set in hours).
    age_h, limit_h = round(age_s / 3600), round(limit_s / 3600)
    return Blocker(
        "stale",
        f"the station's data is {age_h} h old (limit {limit_h} h): connect to the registry or sync",
        {"age_h": age_h, "limit_h": limit_h},
    )


def disk_full(free_bytes: int, needed_bytes: int) -> Blocker:
    return Blocker(
        "disk_full",
        f"the disk is nearly full ({free_bytes // 2**20} MB free, {needed_bytes // 2**20} MB "
        "needed): upload or export the outbox before enrolling more",
        {"free_bytes": free_bytes, "needed_bytes": needed_bytes},
    )


__all__ = [
    "Blocker",
    "BlockerCode",
    "disk_full",
    "identity_damaged",
    "key_error",
    "never_synced",
    "not_provisioned",
    "stale",
]
