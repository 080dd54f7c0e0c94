"""Scene scripts for the simulated camera: what happens in front of it, second by second.

A script is a list of segments, each a scene for so many seconds; a test or the demo
composes a journey from them (someone walks in, turns their head, blinks, holds still).
Every scene is a pure function of the time into its segment and the seed, so a frame is
the same whenever it is rendered.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Scene(StrEnum):
    GOOD = "good"  # steady, frontal, at the capture distance, neutral expression
    SMILE = "smile"  # as good, with the source photo's own expression (teeth, talking)
    WALK_IN = "walk_in"  # the face grows from far away to the capture distance
    TURN_HEAD = "turn_head"  # yaw to one side, the other, and back to frontal
    EYES_CLOSING = "eyes_closing"  # eyes close, stay closed, open again
    BACKLIGHT = "backlight"  # a bright window behind: auto exposure darkens the face
    BLUR = "blur"  # defocus / shake that settles to sharp
    EMPTY = "empty"  # no one there
    UNPLUGGED = "unplugged"  # the cable is pulled: reads fail, opening fails until it ends


class Segment(BaseModel):
    """One scene for ``seconds``; also written ``"walk_in:2.5"`` in configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scene: Scene
    seconds: float = Field(gt=0, le=3600)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: object) -> object:
        if isinstance(value, str):
            name, _, seconds = value.partition(":")
            return {"scene": name.strip(), "seconds": seconds.strip() or "nan"}
        return value


def parse_script(text: str) -> list[Segment]:
    """``"walk_in:2, good:3, turn_head:4"`` -> segments."""
    return [Segment.model_validate(part) for part in text.split(",") if part.strip()]


JOURNEY: tuple[Segment, ...] = tuple(
    parse_script("empty:1, walk_in:2.5, blur:1.5, turn_head:3, eyes_closing:2, good:3")
)
"""The default script: a citizen steps up and goes through the usual trouble."""

# Scene constants (seconds, degrees, shares of the frame).
WALK_START_SCALE = 0.3
WALK_START_DX = 0.3
TURN_YAW = 30.0
LID_SECONDS = 0.12  # an eyelid closes in about a tenth of a second
BACKLIGHT = 4.0  # window radiance over the subject's
BLUR_SIGMA = 5.0  # px at 480 lines, at the start of a blur segment
BLUR_SETTLE = 0.6  # share of the segment until sharp


@dataclass(frozen=True)
class SceneState:
    """What the camera sees at one instant."""

    scene: Scene
    present: bool = True
    scale: float = 1.0  # face size relative to the capture distance
    dx: float = 0.0  # horizontal offset, share of the frame width
    dy: float = 0.0
    yaw: float = 0.0  # degrees; > 0 turns toward the subject's left
    closure: float = 0.0  # eyelids: 0 open, 1 closed
    smile: bool = False  # the photo's own expression instead of a closed mouth
    backlight: float = 1.0  # background radiance multiplier
    blur: float = 0.0  # Gaussian sigma, px at 480 lines


def scene_state(scene: Scene, t: float, seconds: float, side: float = 1.0) -> SceneState:
    """The state ``t`` seconds into a ``seconds``-long segment of ``scene``; ``side``
    (+1 or -1, from the seed) picks the side a person walks in from."""
    p = min(max(t / seconds, 0.0), 1.0)
    # A person standing still still sways a little (never exactly the same frame twice).
    sway_x = 0.004 * math.sin(2 * math.pi * t / 2.7)
    sway_y = 0.003 * math.sin(2 * math.pi * t / 3.3)
    if scene in (Scene.EMPTY, Scene.UNPLUGGED):
        return SceneState(scene, present=False)
    if scene is Scene.WALK_IN:
        left = (1.0 - p) ** 2  # ease out: slows down on arrival
        step = 0.012 * abs(math.sin(2 * math.pi * 1.8 * t)) * left
        return SceneState(
            scene,
            scale=1.0 - (1.0 - WALK_START_SCALE) * left,
            dx=side * WALK_START_DX * left + sway_x,
            dy=step + sway_y,
        )
    if scene is Scene.TURN_HEAD:
        return SceneState(
            scene, yaw=side * TURN_YAW * math.sin(2 * math.pi * p), dx=sway_x, dy=sway_y
        )
    if scene is Scene.EYES_CLOSING:
        closing, opening = 0.25 * seconds, 0.75 * seconds
        closure = min(max(min(t - closing, opening - t) / LID_SECONDS, 0.0), 1.0)
        return SceneState(scene, closure=closure, dx=sway_x, dy=sway_y)
    if scene is Scene.BACKLIGHT:
        return SceneState(scene, backlight=BACKLIGHT, dx=sway_x, dy=sway_y)
    if scene is Scene.BLUR:
        settle = max(0.0, 1.0 - p / BLUR_SETTLE)
        shake = 0.01 * settle * math.sin(2 * math.pi * 3.0 * t)  # the hand-held wobble
        return SceneState(scene, blur=BLUR_SIGMA * settle, dx=sway_x + shake, dy=sway_y)
    if scene is Scene.SMILE:
        return SceneState(scene, smile=True, dx=sway_x, dy=sway_y)
    return SceneState(scene, dx=sway_x, dy=sway_y)


class SceneScript:
    """Segments in order; ``loop`` repeats them, otherwise the stream ends after them."""

    def __init__(self, segments: Sequence[Segment], loop: bool = False) -> None:
        if not segments:
            raise ValueError("a scene script needs at least one segment")
        self.segments = tuple(segments)
        self.loop = loop
        self.seconds = sum(s.seconds for s in self.segments)

    def at(self, t: float) -> tuple[Segment, float] | None:
        """The segment playing ``t`` seconds in and the time into it; None once a
        non-looping script has ended."""
        if t < 0:
            raise ValueError("t must be >= 0")
        if t >= self.seconds:
            if not self.loop:
                return None
            t %= self.seconds
        for segment in self.segments:
            if t < segment.seconds:
                return segment, t
            t -= segment.seconds
        return self.segments[-1], self.segments[-1].seconds  # float rounding at the end

    def __str__(self) -> str:
        return ", ".join(f"{s.scene.value}:{s.seconds:g}" for s in self.segments)
