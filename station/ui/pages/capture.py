"""The biometric steps of an enrollment: the face (a live camera preview with the quality
guidance over it, auto-capture, the chosen portrait) and the ten rolled fingers (a hand
diagram with each finger's state, one roll at a time, best of three, exceptions).

Both screens render from the case on the server: a reload during a face capture joins the
running capture again, and a reload while a roll waits for its finger stops that roll (the
scanner is never left waiting for a page that is gone). Reading a screen changes nothing:
the fingers page, once loaded, asks to stop the roll it saw waiting, by that roll's id, so
a roll started after it looked is never stopped by it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Form
from fastapi import Path as PathParam
from fastapi.responses import Response

from station.ui import errors, steps
from station.ui.i18n import _
from station.ui.pages.case import (
    approval_items,
    case_at_step,
    finger_exception,
    finger_in_sentence,
    finger_name,
)
from station.ui.web import Page, PageDep

router = APIRouter()

Case = Mapping[str, Any]
Position = Annotated[int, PathParam(ge=1, le=10)]

# --- words -------------------------------------------------------------------------------

# Face guidance: every hint key the capture gives (biometrics.face.quality.HINTS), said
# to the citizen, shortest first-person wording that works read aloud by the officer.
FACE_HINTS: dict[str, Callable[[], str]] = {
    "no_face": lambda: _("Sit in front of the camera"),
    "many_faces": lambda: _("Only one person in front of the camera"),
    "yaw_to_right": lambda: _("Turn a little to your right"),
    "yaw_to_left": lambda: _("Turn a little to your left"),
    "pitch_down": lambda: _("Lower your chin a little"),
    "pitch_up": lambda: _("Raise your chin a little"),
    "roll_to_right": lambda: _("Hold your head straight: tilt it a little to your right"),
    "roll_to_left": lambda: _("Hold your head straight: tilt it a little to your left"),
    "open_eyes": lambda: _("Open your eyes and look at the camera"),
    "close_mouth": lambda: _("Close your mouth, keep a neutral face"),
    "move_to_left": lambda: _("Move a little to your left"),
    "move_to_right": lambda: _("Move a little to your right"),
    "face_too_high": lambda: _("Face too high: lower the camera or raise the seat"),
    "face_too_low": lambda: _("Face too low: raise the camera or lower the seat"),
    "move_closer": lambda: _("Come closer to the camera"),
    "move_back": lambda: _("Move back from the camera a little"),
    "too_dark": lambda: _("Too dark: more light"),
    "too_bright": lambda: _("Too bright: less light"),
    "light_right_dark": lambda: _("Uneven light: your right side is dark"),
    "light_left_dark": lambda: _("Uneven light: your left side is dark"),
    "glare": lambda: _("Glare on the face: soften the light"),
    "deep_shadow": lambda: _("Shadows on the face: light it evenly"),
    "blurred": lambda: _("Blurred: hold still"),
    "uncover_eyes": lambda: _("Take off glasses; keep the eyes uncovered"),
    "uncover_mouth": lambda: _("Remove the mask or hand from the face"),
    "background_uneven": lambda: _("Background uneven: use the plain backdrop"),
    "background_cluttered": lambda: _("Background not plain: use the plain backdrop"),
}

# What a roll's outcome code (station.capture.tenprint.MESSAGES) means for the officer.
ROLL_OUTCOMES: dict[str, Callable[[str, str], str]] = {
    "accepted": lambda f, o: _("The %(finger)s is captured.", finger=f),
    "low_quality": lambda f, o: _(
        "The print of the %(finger)s is not good enough. Clean and dry the finger, then "
        "roll it again, slowly.",
        finger=f,
    ),
    "kept_best": lambda f, o: _(
        "Last attempt: the best print of the %(finger)s is kept. A supervisor must approve "
        "it at review.",
        finger=f,
    ),
    "same_finger": lambda f, o: _(
        "This is the same finger as the %(other)s. Roll the %(finger)s instead.",
        finger=f,
        other=o,
    ),
    "no_finger": lambda f, o: _(
        "No finger came onto the scanner. Place the %(finger)s on the glass, then press Roll.",
        finger=f,
    ),
    "too_fast": lambda f, o: _("Rolled too fast. Roll again, more slowly."),
    "frames_lost": lambda f, o: _(
        "Part of the roll was lost by the scanner. Roll again; check the scanner's cable "
        "if it repeats."
    ),
    "smeared": lambda f, o: _("The finger slipped. Keep a light, steady pressure and roll again."),
    "too_short": lambda f, o: _("Not rolled nail edge to nail edge. Roll the whole finger again."),
    "no_contact": lambda f, o: _(
        "No print on the glass. Place the finger on the glass, then roll."
    ),
    "cancelled": lambda f, o: _("The roll was stopped. Press Roll when the citizen is ready."),
    "timeout": lambda f, o: _(
        "The scanner waited too long for the finger. Press Roll, then roll at once."
    ),
    "disconnected": lambda f, o: _(
        "The scanner is disconnected. Check its USB cable, then press Roll."
    ),
    "protocol": lambda f, o: _(
        "The scanner's data arrived damaged. Roll again; check the cable if it repeats."
    ),
    "extraction": lambda f, o: _("The print could not be read. Roll again."),
    # Not the scanner's: this screen's own word after an exception is recorded.
    "exception_recorded": lambda f, o: _(
        "Exception recorded for the %(finger)s. A supervisor must approve it, now or at review.",
        finger=f,
    ),
    "scanner_error": lambda f, o: _(
        "The scanner reported an error. Roll again; call the technician if it repeats."
    ),
}
GOOD_OUTCOMES = frozenset({"accepted"})
WARN_OUTCOMES = frozenset({"kept_best", "low_quality", "cancelled", "exception_recorded"})

FACE_ENDINGS: dict[str, Callable[[], str]] = {
    "timeout": lambda: _(
        "The photo could not be taken in time. Correct what is listed below, then press "
        "Start the camera again."
    ),
    "camera": lambda: _(
        "The camera stopped sending pictures. Check its cable, then press Start the camera "
        "again; call the technician if it keeps happening."
    ),
    "cancelled": lambda: _("The camera was stopped. Press Start the camera when ready."),
}

errors.register(
    bad_exception=lambda: _("Choose one of the listed exception reasons, then save again."),
    bad_position=lambda: _("That finger does not exist. Choose a finger on the diagram."),
    bad_finger=lambda: _("A finger needs a print or an exception. Roll it or record why not."),
    no_portrait=lambda: _("No photo is stored for this enrollment yet. Take the photo first."),
    no_preview=lambda: _("The camera is not running for this enrollment. Start the camera."),
)


def upper_first(text: str) -> str:
    """``text`` as a label: its first letter in capitals (the names are mid-sentence
    words)."""
    return text[:1].upper() + text[1:]


def exception_label(code: str) -> str:
    """An exception reason as a choice or after a colon ("Bandaged or injured")."""
    return upper_first(finger_exception(code))


def hand_of(position: int) -> str:
    return "right" if position <= 5 else "left"


def quality_word(quality: int | None, min_quality: int) -> tuple[str, str]:
    """(level, words) of an NFIQ 2 score against the station's minimum: poor below it,
    good from 20 points above it, acceptable in between."""
    if quality is None:
        return "none", ""
    if quality < min_quality:
        return "poor", _("poor")
    if quality < min(100, min_quality + 20):
        return "acceptable", _("acceptable")
    return "good", _("good")


def finger_state(entry: Mapping[str, Any]) -> str:
    """The diagram's state of one finger: todo, captured (good), low, exception."""
    status = entry["status"]
    if status == "exception":
        return "exception"
    if status == "captured":
        return "low" if entry.get("low_quality") else "captured"
    return "todo"


STATE_WORDS: dict[str, Callable[[], str]] = {
    "todo": lambda: _("to do"),
    "current": lambda: _("now"),
    "captured": lambda: _("captured, good"),
    "low": lambda: _("captured, low quality"),
    "exception": lambda: _("exception"),
}
STATE_SYMBOLS = {"todo": "○", "current": "▶", "captured": "✓", "low": "!", "exception": "✕"}


# --- shared ------------------------------------------------------------------------------


def _chrome(case: Case, step: str) -> dict[str, Any]:
    return {"case": case, "trail": steps.trail(case, step), "step_label": steps.label(step)}


# --- face --------------------------------------------------------------------------------


@router.get("/cases/{case_id}/face")
async def face(page: PageDep, case_id: str) -> Response:
    case, elsewhere = await case_at_step(page, case_id, "face")
    if elsewhere is not None:
        return elsewhere
    status = await page.api.get(f"/cases/{case_id}/face")
    state = status["state"]
    if state == "running":
        mode = "live"
    elif case["has_face"]:
        mode = "portrait"
    else:
        mode = "start"
    result = status.get("result") or {}
    ending = None
    if state == "ended" and result.get("reason") in FACE_ENDINGS:
        ending = FACE_ENDINGS[result["reason"]]()
    if status.get("error"):
        ending = _(
            "The photo could not be taken: the station had an internal error. Press Start "
            "the camera again; call the technician if it keeps happening."
        )
    top_hints = [FACE_HINTS[k]() for k in result.get("top_hints", []) if k in FACE_HINTS]
    return await page.render(
        "capture/face.html",
        mode=mode,
        ending=ending,
        ending_detail=result.get("detail") or status.get("error"),
        top_hints=top_hints,
        quality=result.get("quality") if result.get("reason") == "captured" else None,
        hints={key: text() for key, text in FACE_HINTS.items()},
        **_chrome(case, "face"),
    )


@router.get("/cases/{case_id}/portrait.jpg")
async def portrait(page: PageDep, case_id: str) -> Response:
    """The stored portrait (the face and review screens show it)."""
    answer = await page.api.response("GET", f"/cases/{case_id}/face/portrait.jpg")
    return Response(answer.content, media_type="image/jpeg", headers={"cache-control": "no-store"})


@router.post("/cases/{case_id}/face/start")
async def face_start(page: PageDep, case_id: str) -> Response:
    await page.api.post(f"/cases/{case_id}/face/start", {})
    return page.redirect(f"/cases/{case_id}/face")


@router.post("/cases/{case_id}/face/stop")
async def face_stop(page: PageDep, case_id: str) -> Response:
    await page.api.post(f"/cases/{case_id}/face/cancel")
    # The loop ends within a frame; the page then shows how it ended.
    await page.api.get(f"/cases/{case_id}/face", wait_s=5)
    return page.redirect(f"/cases/{case_id}/face")


# --- fingers -----------------------------------------------------------------------------


def _fingers_view(
    case: Case,
    state: Mapping[str, Any],
    selected: int | None,
    outcome: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What the fingers screen shows: the diagram's fingers, the selected finger's panel,
    the outcome of the last roll or exception."""
    min_quality = int(state["min_quality"])
    entries = {int(e["position"]): e for e in state["fingers"]}
    fingers = []
    for position in steps.FINGER_POSITIONS:
        entry = entries[position]
        kind = finger_state(entry)
        shown = "current" if position == selected else kind
        level, words = quality_word(entry.get("quality"), min_quality)
        fingers.append(
            {
                "position": position,
                "name": finger_name(position),
                "in_sentence": finger_in_sentence(position),
                "hand": hand_of(position),
                "state": kind,
                "shown": shown,
                "symbol": STATE_SYMBOLS[shown],
                "words": STATE_WORDS[kind](),
                "quality": entry.get("quality"),
                "level": level,
                "level_words": words,
                "attempts": entry.get("attempts") or 0,
                "exception": entry.get("exception"),
                "exception_name": exception_label(entry["exception"])
                if entry.get("exception")
                else None,
                "exception_reason": entry.get("exception_reason"),
            }
        )
    said = None
    if outcome is not None:
        position = int(outcome["position"])
        code = str(outcome.get("code") or "scanner_error")
        other = finger_in_sentence(int(outcome["same_as"])) if outcome.get("same_as") else ""
        say = ROLL_OUTCOMES.get(code, ROLL_OUTCOMES["scanner_error"])
        level, words = quality_word(outcome.get("quality"), min_quality)
        said = {
            "position": position,
            "code": code,
            "text": say(finger_in_sentence(position), other),
            "tone": _tone(code),
            "quality": outcome.get("quality"),
            "level": level,
            "level_words": words,
            "attempts": outcome.get("attempts") or 0,
            "done": bool(outcome.get("done")),
        }
    warnings = [
        _(
            "The prints taken for the right hand look like a left hand. Check that the right "
            "hand was rolled; if not, tap its fingers and capture them again."
        )
        if w.get("hand") == "right"
        else _(
            "The prints taken for the left hand look like a right hand. Check that the left "
            "hand was rolled; if not, tap its fingers and capture them again."
        )
        for w in state.get("hand_warnings") or []
    ]
    codes = [
        {"code": c["code"], "name": exception_label(c["code"])} for c in state["exception_codes"]
    ]
    current = fingers[selected - 1] if selected is not None else None
    return {
        "fingers": fingers,
        "current": current,
        "said": said,
        "warnings": warnings,
        "exception_codes": codes,
        "max_attempts": int(state["max_attempts"]),
        "min_quality": min_quality,
        "complete": all(f["state"] != "todo" for f in fingers),
        "pending_approval": [f for f in fingers if f["state"] in ("low", "exception")],
        "state_words": {k: v() for k, v in STATE_WORDS.items()},
        "state_symbols": STATE_SYMBOLS,
        "swap": time.monotonic_ns(),  # tells one rendering from the next (tests, scripts)
        **_chrome(case, "fingers"),
    }


async def _approval(page: Page, case_id: str, selected: int | None) -> dict[str, Any]:
    """What the supervisor's approval panel of the case screens (case/_approval.html)
    needs, for the fingers waiting for an approval."""
    review = await page.api.get(f"/cases/{case_id}/review")
    return {
        "approvals": [i for i in approval_items(review) if i["code"].startswith("finger:")],
        "case_id": case_id,
        "return_to": _fingers_url(case_id, selected),
    }


def _fingers_url(case_id: str, selected: int | None) -> str:
    """The fingers screen at ``selected`` (what a reload comes back to)."""
    return f"/cases/{case_id}/fingers" + (f"?at={selected}" if selected is not None else "")


def _tone(code: str) -> str:
    if code in GOOD_OUTCOMES:
        return "ok"
    return "warn" if code in WARN_OUTCOMES else "error"


def _next_to_do(state: Mapping[str, Any], after: int) -> int | None:
    """The next finger still to do in the standard sequence after ``after`` (wrapping)."""
    todo = {int(e["position"]) for e in state["fingers"] if finger_state(e) == "todo"}
    for position in list(range(after + 1, 11)) + list(range(1, after + 1)):
        if position in todo:
            return position
    return None


def _selected(state: Mapping[str, Any], at: int | None) -> int | None:
    if at is not None and 1 <= at <= 10:
        return at
    return _next_to_do(state, 0)


async def _fingers_fragment(
    page: Page,
    case_id: str,
    selected: int | None,
    outcome: Mapping[str, Any] | None = None,
) -> Response:
    case = await page.api.get(f"/cases/{case_id}")
    state = await page.api.get(f"/cases/{case_id}/fingers")
    if not page.is_htmx:
        return page.redirect(_fingers_url(case_id, selected))
    view = _fingers_view(case, state, selected, outcome)
    response = await page.render(
        "capture/_fingers.html", **view, **await _approval(page, case_id, selected)
    )
    # A reload lands on the finger the screen moved to.
    response.headers["hx-replace-url"] = _fingers_url(case_id, selected)
    return response


@router.get("/cases/{case_id}/fingers")
async def fingers(page: PageDep, case_id: str, at: int | None = None) -> Response:
    case, elsewhere = await case_at_step(page, case_id, "fingers")
    if elsewhere is not None:
        return elsewhere
    state = await page.api.get(f"/cases/{case_id}/fingers")
    selected = _selected(state, at)
    view = _fingers_view(case, state, selected)
    # A page (re)loaded here has no roll waiting for it: the roll running now was left by
    # the page before (a reload while the scanner waited). The page, once loaded, stops
    # that roll by its id (a GET changes nothing: a prefetch must not stop a roll).
    return await page.render(
        "capture/fingers.html",
        left_roll=state.get("roll"),
        **view,
        **await _approval(page, case_id, selected),
    )


@router.post("/cases/{case_id}/fingers/{position}/roll")
async def roll(page: PageDep, case_id: str, position: Position) -> Response:
    outcome = await page.api.post(f"/cases/{case_id}/fingers/{position}/roll", {})
    selected: int | None = position
    if outcome.get("done"):
        state = await page.api.get(f"/cases/{case_id}/fingers")
        selected = _next_to_do(state, position)
    return await _fingers_fragment(page, case_id, selected, outcome)


@router.post("/cases/{case_id}/fingers/cancel")
async def cancel_roll(
    page: PageDep, case_id: str, roll: Annotated[str | None, Form(max_length=64)] = None
) -> Response:
    """Stop the roll ``roll`` (the one a loaded page saw left waiting), or with no id
    whatever roll runs (the Cancel button, a page going away while its roll waits)."""
    await page.api.post(f"/cases/{case_id}/fingers/cancel", {"roll": roll or None})
    return Response(status_code=204)


@router.post("/cases/{case_id}/fingers/{position}/exception")
async def exception(
    page: PageDep,
    case_id: str,
    position: Position,
    code: Annotated[str, Form(min_length=1, max_length=40)],
    reason: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    await page.api.post(
        f"/cases/{case_id}/fingers/{position}/exception",
        {"code": code, "reason": reason.strip() or None},
    )
    state = await page.api.get(f"/cases/{case_id}/fingers")
    said = {"position": position, "code": "exception_recorded", "done": True}
    return await _fingers_fragment(page, case_id, _next_to_do(state, position), said)


__all__ = ["router"]
