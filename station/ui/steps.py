"""The steps of an enrollment as the kiosk walks them, and which one a case is at (worked
out from the case itself, so a reload or a restarted browser lands on the same step)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from station.ui.i18n import _

STEPS = ("demographics", "consent", "face", "fingers", "review", "done")

_LABELS: dict[str, Callable[[], str]] = {
    "demographics": lambda: _("Details"),
    "consent": lambda: _("Consent"),
    "face": lambda: _("Photo"),
    "fingers": lambda: _("Fingerprints"),
    "review": lambda: _("Review"),
    "done": lambda: _("Submitted"),
}

FINGER_POSITIONS = tuple(range(1, 11))


def label(step: str) -> str:
    return _LABELS[step]()


def fingers_complete(case: Mapping[str, Any]) -> bool:
    """Every finger captured or excused (the review step judges the quality)."""
    fingers = case.get("fingers") or {}
    for position in FINGER_POSITIONS:
        entry = fingers.get(str(position))
        if entry is None or not (entry.get("captured") or entry.get("exception")):
            return False
    return True


def current_step(case: Mapping[str, Any]) -> str:
    """The first step the case still needs (``done`` once it left the station's hands)."""
    if case["state"] != "open":
        return "done"
    if not case["has_demographics"]:
        return "demographics"
    if not case["consent_at"]:
        return "consent"
    if not case["has_face"]:
        return "face"
    if not fingers_complete(case):
        return "fingers"
    return "review"


def step_url(case_id: str, step: str) -> str:
    return f"/cases/{case_id}/{step}"


def reachable(case: Mapping[str, Any], step: str) -> bool:
    """Whether the officer may open ``step`` now: any step up to the current one (going
    back to correct something is fine); none but ``done`` once submitted."""
    current = current_step(case)
    if current == "done":
        return step == "done"
    return STEPS.index(step) <= STEPS.index(current) and step != "done"


def trail(case: Mapping[str, Any], here: str) -> list[dict[str, Any]]:
    """The step indicator's items: label, url, and done / current / ahead."""
    current = current_step(case)
    out = []
    for step in STEPS:
        index, at = STEPS.index(step), STEPS.index(current)
        out.append(
            {
                "step": step,
                "label": label(step),
                "url": step_url(case["id"], step) if reachable(case, step) else None,
                "state": "current" if step == here else ("done" if index < at else "ahead"),
            }
        )
    return out


__all__ = ["STEPS", "current_step", "fingers_complete", "label", "reachable", "step_url", "trail"]
