"""A camera that films scripted scenes with a synthetic person, in real time.

The person is one of the synthetic population's faces (chosen by the seed, as
``biometrics.synth.faces`` chooses it for an enrollment), rendered by that module and
placed in a landscape frame the way a station camera sees someone standing in front of
it. Frames follow a :class:`~.scenes.SceneScript` and are paced by the monotonic clock
at the configured rate; the frame for a sequence number is the same every time.

The person sits as a citizen is asked to at the station (``sitter``): the photo's own
head turn undone and the mouth closed (``mouth``), the photo's expression kept only for
the ``smile`` scene; preparing that runs the face models a few times, once per person.

Cost: a base render of the person (pose, eyelids) is the expensive part (2-7 ms, the head
turn's warp most), so renders are cached per whole degree of yaw, tenth of eyelid
closure and expression; a frame is then one affine warp (by whole pixels at the capture
distance), a lookup table for exposure and white balance and the synthetic mark
(docs/protocols/camera.md has the measured rates).

A sheet of paper can be held up in front of the lens (:meth:`SimulatedCamera.show`: a
token sheet's QR code, say): it covers the middle of every frame until it is taken away.
"""

from __future__ import annotations

import functools
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from biometrics.synth import faces
from station.drivers.camera.base import Camera
from station.drivers.camera.controls import ALL_CONTROLS, Control, Exposure, WhiteBalance
from station.drivers.camera.errors import CameraDisconnected, CameraNotFound
from station.drivers.camera.eyelids import close_eyes
from station.drivers.camera.frame import Frame, RGBImage
from station.drivers.camera.optics import (
    NOMINAL_EXPOSURE_US,
    exposure_factor,
    luts,
    white_balance_factors,
)
from station.drivers.camera.scenes import (
    JOURNEY,
    Scene,
    SceneScript,
    SceneState,
    Segment,
    scene_state,
)
from station.drivers.camera.sitter import Sitter, face_analyzer, sitter_for
from station.drivers.health import HealthCell

DEFAULT_ASSETS = Path(__file__).resolve().parents[3] / "data" / "assets"
"""Where scripts/fetch_assets.py puts the real source photos in a checkout."""
CACHE_ENTRIES = 64  # base renders kept (about 0.5 MB each at 480 lines)
BACKDROP_KEY = 14  # colour distance under which a portrait pixel is the backdrop
ANCHOR = (0.5, 0.45)  # the point of the portrait that stays put as a person comes closer
SHEET_SPAN = 0.6  # of the frame's height (and at most of its width): a sheet held ~30 cm away
MAX_SHEET_BYTES = 4 << 20
MAX_SHEET_SIDE = 4096
Mask = NDArray[np.uint8]


@functools.lru_cache(maxsize=len(faces.SOURCE_PHOTOS))
def studio_person(name: str, folder: str) -> faces.SourceFace:
    """The studio source made from photo ``name`` in ``folder`` (prepared once per run)."""
    path = Path(folder) / name
    if not path.is_file():
        raise CameraNotFound(
            f"the simulated camera needs the face photos: {path} is missing "
            "(run `.venv/bin/python scripts/fetch_assets.py`, or set the camera's assets folder)"
        )
    photo = np.asarray(Image.open(path).convert("RGB"))
    return faces.studio_source(name, faces.SOURCE_PHOTOS[name], photo, face_analyzer())


def person_for(seed: int, assets: Path = DEFAULT_ASSETS) -> faces.SourceFace:
    """The synthetic person with face seed ``seed``."""
    return studio_person(faces.source_for(seed), str(assets))


def load_sheet(data: bytes) -> RGBImage:
    """An image file's bytes (PNG, JPEG) as the RGB sheet :meth:`SimulatedCamera.show`
    takes; ValueError says what is wrong with them."""
    import io

    from PIL import UnidentifiedImageError

    if not data:
        raise ValueError("the sheet is empty")
    if len(data) > MAX_SHEET_BYTES:
        raise ValueError(f"the sheet's image is over {MAX_SHEET_BYTES >> 20} MB")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if max(image.size) > MAX_SHEET_SIDE:
                raise ValueError(f"the sheet is over {MAX_SHEET_SIDE} pixels on a side")
            return np.asarray(image.convert("RGB"), np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"the sheet is not an image file: {exc}") from None


def serial_for(seed: int) -> str:
    """A stable serial number per seed, so two simulated stations differ."""
    return "SIM-" + hashlib.sha256(f"camera:{seed}".encode()).hexdigest()[:10].upper()


class SceneRenderer:
    """Frames of a script for one person, as a pure function of frame index and controls."""

    def __init__(
        self,
        source: faces.SourceFace,
        script: SceneScript,
        width: int,
        height: int,
        fps: float,
        seed: int,
    ) -> None:
        self.source = source
        self.sitter: Sitter = sitter_for(source)  # neutral, frontal
        self.script = script
        self.width, self.height, self.fps = width, height, fps
        # The person's look at this sitting: small roll and framing jitter, maybe mirrored.
        self.look = faces.capture_for(seed, 1, "good")
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0xCA3E]))
        self.side = 1.0 if rng.random() < 0.5 else -1.0
        self.backdrop = tuple(int(c * self.look.gain + 0.5) for c in faces.BACKDROP)
        ph, pw = source.image.shape[:2]
        self.portrait_size = (round(pw * height / ph), height)  # (w, h) at capture distance
        self._cache: OrderedDict[tuple[int, int, bool], tuple[RGBImage, Mask]] = OrderedDict()
        self._lock = threading.Lock()
        self._ae_target: float | None = None

    # --- the person -----------------------------------------------------------------

    def appearance(self, yaw: float, closure: float, smile: bool = False) -> tuple[RGBImage, Mask]:
        """The person at capture distance with this head turn from frontal and lid
        closure (quantised to 1 degree and 0.1), mouth closed unless ``smile``, and where
        the backdrop shows (255)."""
        key = (round(yaw), round(closure * 10), smile)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        sitter = self.sitter.smiling if smile else self.sitter.neutral
        image = close_eyes(sitter, key[1] / 10)
        if key[0]:
            # Signed turns both ways, from the sitter's frontal pose.
            image = faces.turn_warp(image, sitter.points, float(key[0]))[0]
        portrait = faces.render(replace(sitter, image=image), self.look)
        portrait = np.asarray(
            cv2.resize(portrait, self.portrait_size, interpolation=cv2.INTER_AREA), np.uint8
        )
        distance = np.abs(portrait.astype(np.int16) - np.array(self.backdrop, np.int16)).max(2)
        mask = np.where(distance <= BACKDROP_KEY, 255, 0).astype(np.uint8)
        mask = np.asarray(cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)))
        with self._lock:
            self._cache[key] = (portrait, mask)
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return portrait, mask

    def compose(self, state: SceneState) -> tuple[RGBImage, Mask]:
        """The scene's radiance image (before exposure) and its background mask."""
        w, h = self.width, self.height
        if not state.present:
            canvas = np.empty((h, w, 3), np.uint8)
            canvas[:] = self.backdrop
            return canvas, np.full((h, w), 255, np.uint8)
        portrait, mask = self.appearance(state.yaw, state.closure, state.smile)
        pw, ph = self.portrait_size
        s = state.scale
        ax, ay = ANCHOR
        tx = w / 2 + state.dx * w - s * ax * pw
        ty = ay * h + state.dy * h - s * ay * ph
        if s == 1.0:
            # At capture distance the face moves by whole pixels: a sub-pixel shift would
            # resample (blur) every frame by about a tenth of its sharpness.
            tx, ty = round(tx), round(ty)
        m = np.array([[s, 0.0, tx], [0.0, s, ty]])
        canvas = np.asarray(
            cv2.warpAffine(portrait, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=self.backdrop),
            np.uint8,
        )
        background = np.asarray(cv2.warpAffine(mask, m, (w, h), borderValue=255), np.uint8)
        return canvas, background

    # --- the camera -----------------------------------------------------------------

    @staticmethod
    def meter(canvas: RGBImage, background: Mask, backlight: float) -> float:
        """Mean scene luminance as a whole-frame auto exposure measures it."""
        lum = canvas[::4, ::4].mean(axis=2, dtype=np.float32)
        bg = background[::4, ::4].astype(np.float32) / 255.0
        return float(np.mean(lum * (1.0 + bg * (backlight - 1.0))))

    def ae_target(self) -> float:
        """What auto exposure aims for: the metered level of the steady good scene, so
        that a good frame comes out as rendered."""
        if self._ae_target is None:
            canvas, background = self.compose(SceneState(Scene.GOOD))
            self._ae_target = self.meter(canvas, background, 1.0)
        return self._ae_target

    def state_at(self, index: int) -> SceneState | None:
        at = self.script.at(index / self.fps)
        if at is None:
            return None
        segment, t = at
        return scene_state(segment.scene, t, segment.seconds, self.side)

    def frame(
        self, index: int, exposure: Exposure, white_balance: WhiteBalance, gain: float
    ) -> tuple[RGBImage, dict[str, object]] | None:
        """Frame ``index`` under these controls; None after a non-looping script."""
        state = self.state_at(index)
        if state is None:
            return None
        canvas, background = self.compose(state)
        if state.blur > 0.25:
            sigma = state.blur * self.height / 480
            canvas = np.asarray(cv2.GaussianBlur(canvas, (0, 0), sigma), np.uint8)
        metered = self.meter(canvas, background, state.backlight)
        exposed = exposure_factor(exposure, metered, self.ae_target())
        factors = white_balance_factors(white_balance) * np.float32(exposed * gain)
        image = np.asarray(cv2.LUT(canvas, luts(factors)), np.uint8)
        if state.backlight != 1.0:
            window = cv2.LUT(canvas, luts(factors * np.float32(state.backlight)))
            alpha = background.astype(np.float32) / 255.0
            image = np.asarray(cv2.blendLinear(image, window, 1.0 - alpha, alpha), np.uint8)
        metadata: dict[str, object] = {
            "scene": state.scene.value,
            "exposure_us": round(exposed * NOMINAL_EXPOSURE_US),
            "gain": gain,
            "person": self.source.name,
        }
        return faces.mark_synthetic(image), metadata


class SimulatedCamera(Camera):
    """Plays ``script`` with the person of ``seed``; ``loop`` repeats it, otherwise the
    stream ends after it (``EndOfStream``). ``source`` skips loading the photos."""

    backend = "simulated"

    def __init__(
        self,
        script: Sequence[Segment | str] | SceneScript = JOURNEY,
        seed: int = 0,
        width: int = 640,
        height: int = 480,
        fps: float = 15.0,
        loop: bool = True,
        assets: Path = DEFAULT_ASSETS,
        source: faces.SourceFace | None = None,
        name: str = "camera",
        health: HealthCell | None = None,
    ) -> None:
        super().__init__(width, height, fps, name, health)
        if isinstance(script, SceneScript):
            self.script = script
        else:
            self.script = SceneScript([Segment.model_validate(s) for s in script], loop)
        self.seed = seed
        self.serial = serial_for(seed)
        """The camera's own serial: stays when another person sits down (:meth:`sit`)."""
        self.assets = assets
        self._source = source
        self._renderer: SceneRenderer | None = None
        self._t0 = 0.0
        self._next = 0
        self._replug = False
        """Set when the script unplugged the camera: the next open continues the script."""
        self._origin = 0
        """The frame at which the current person's script started (:meth:`sit`)."""
        self._sheet: RGBImage | None = None
        """The sheet held up in front of the lens (:meth:`show`), at frame scale."""

    def controls(self) -> frozenset[Control]:
        return ALL_CONTROLS

    @property
    def renderer(self) -> SceneRenderer:
        """The frame renderer (built on first use: loading the person takes ~0.2 s)."""
        if self._renderer is None:
            source = self._source or person_for(self.seed, self.assets)
            self._renderer = SceneRenderer(
                source, self.script, self._width, self._height, self._fps, self.seed
            )
        return self._renderer

    def sit(self, seed: int, script: Sequence[Segment | str] | None = None) -> None:
        """Another person sits down in front of the camera (the simulator's control, as
        a new citizen steps up): from now on the frames show ``seed``'s person playing
        ``script`` (default: the current script) from its start."""
        source = person_for(seed, self.assets)
        if script is None:
            new_script = self.script
        else:
            new_script = SceneScript([Segment.model_validate(s) for s in script], self.script.loop)
        renderer = SceneRenderer(source, new_script, self._width, self._height, self._fps, seed)
        # The camera's clock runs on (a frame being grabbed keeps its due time); the new
        # script starts at the next frame.
        origin = int((time.monotonic() - self._t0) * self._fps) + 1 if self._t0 else 0
        self.seed, self.script, self._source = seed, new_script, source
        self._renderer = renderer
        self._origin = origin
        self.health.present(person=source.name, script=str(new_script))

    def show(self, sheet: RGBImage | None) -> None:
        """Hold ``sheet`` (an RGB image: a printed page) up in front of the lens, upright
        in the middle of the frame at :data:`SHEET_SPAN` of its height; None takes it
        away. The next frame shows it."""
        if sheet is None:
            self._sheet = None
            return
        if sheet.ndim != 3 or sheet.shape[2] != 3 or min(sheet.shape[:2]) < 1:
            raise ValueError(f"a sheet is an RGB image, not an array of shape {sheet.shape}")
        h, w = sheet.shape[:2]
        scale = min(SHEET_SPAN * self._height / h, SHEET_SPAN * self._width / w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        shrink = scale < 1.0
        # Area averaging when the sheet is seen smaller than printed: as a lens blurs it.
        resized = cv2.resize(
            sheet, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        )
        self._sheet = np.ascontiguousarray(resized, np.uint8)

    @property
    def showing(self) -> bool:
        """Whether a sheet is held up in front of the lens."""
        return self._sheet is not None

    @staticmethod
    def _with_sheet(image: RGBImage, sheet: RGBImage) -> RGBImage:
        h, w = sheet.shape[:2]
        y0, x0 = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
        out = image.copy()
        out[y0 : y0 + h, x0 : x0 + w] = sheet
        return out

    def render(self, index: int) -> Frame | None:
        """Frame ``index`` as the camera would deliver it under the current controls,
        without waiting for it (tests, previews); None past a non-looping script."""
        frame = self._scene_frame(index)
        return self._held_up(frame) if frame is not None else None

    def _held_up(self, frame: Frame) -> Frame:
        """``frame`` with the sheet held up in front of the lens now, if any."""
        sheet = self._sheet  # one read: the control thread may take it away meanwhile
        if sheet is None:
            return frame
        metadata = {**frame.metadata, "sheet": True}
        return replace(frame, image=self._with_sheet(frame.image, sheet), metadata=metadata)

    def _scene_frame(self, index: int) -> Frame | None:
        out = self.renderer.frame(
            max(0, index - self._origin),
            self._exposure or "auto",
            self._white_balance or "auto",
            self._gain or 1.0,
        )
        if out is None:
            return None
        image, metadata = out
        return Frame(image, self._t0 + index / self._fps, index, metadata)

    def _unplugged_now(self) -> bool:
        now = int((time.monotonic() - self._t0) * self._fps)
        state = self.renderer.state_at(max(0, now - self._origin))
        return state is not None and state.scene is Scene.UNPLUGGED

    def _open_device(self) -> None:
        renderer = self.renderer
        if self._replug:
            # Reopened after an unplug: the script's clock kept running, as the world does;
            # the camera is back only once the unplugged segment is over.
            if self._unplugged_now():
                raise CameraNotFound("the simulated camera is unplugged (scene script)")
            self._replug = False
        else:
            self._t0 = time.monotonic()
            self._next = 0
        self.health.present(
            model="simulated camera",
            serial=self.serial,
            person=renderer.source.name,
            script=str(self.script),
            mode=f"{self._width}x{self._height}@{self._fps:g}",
        )

    def _close_device(self) -> None:
        pass

    def _grab(self) -> Frame | None:
        period = 1.0 / self._fps
        index = self._next
        # Running late (a busy machine): skip to the frame due now, as a sensor would.
        index = max(index, int((time.monotonic() - self._t0) / period))
        state = self.renderer.state_at(max(0, index - self._origin))
        if state is not None and state.scene is Scene.UNPLUGGED:
            # The cable goes at that frame's time, not when it is rendered ahead.
            if self._stop.wait(max(0.0, self._t0 + index * period - time.monotonic())):
                return None
            self._replug = True
            raise CameraDisconnected(
                "the camera stopped sending frames: check its cable, then reopen it"
            )
        frame = self._scene_frame(index)  # rendered ahead of its due time
        if frame is None:
            return None
        if self._stop.wait(max(0.0, frame.timestamp - time.monotonic())):
            return None
        self._next = index + 1
        # The sheet as held up at the frame's time, not when the scene was rendered ahead.
        return replace(self._held_up(frame), timestamp=time.monotonic())

    # Controls act in render(); storing them (the base class does) is all there is to do.
    def _apply_exposure(self, value: Exposure) -> None:
        pass

    def _apply_white_balance(self, value: WhiteBalance) -> None:
        pass

    def _apply_gain(self, value: float) -> None:
        pass
