"""Write synthetic fingerprint sets to disk: images plus a ground-truth JSONL.

Layout of an output folder::

    DIR/manifest.json              the run's parameters (checked on --resume)
    DIR/ground_truth.jsonl         one line per impression, in (person, finger, kind,
                                   impression) order
    DIR/000000/f02_flat_1.png      person 0, right index (FGP 2), flat impression 1

Every image is a pure function of (seed, person, finger, kind, impression): the folder is
byte-identical whatever the number of workers, and any one image can be regenerated with
:func:`biometrics.fingerprint.synth.impression`. Work is split per finger (one master and
its impressions); each worker writes its own images and returns the ground-truth lines,
which the parent appends in order and flushes, so an interrupted run can be resumed.
"""

from __future__ import annotations

import ctypes
import io
import json
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from biometrics.fingerprint.synth import (
    FINGER_NAMES,
    ImpressionKind,
    MasterConfig,
    impression,
    master_finger,
)

ImageFormat = Literal["png", "wsq"]
MANIFEST = "manifest.json"
GROUND_TRUTH = "ground_truth.jsonl"


@dataclass(frozen=True)
class FingerSetSpec:
    """What to generate. Persons are numbered ``first_person`` .. ``first_person+people-1``."""

    people: int
    impressions: int
    seed: int = 0
    kinds: tuple[ImpressionKind, ...] = (ImpressionKind.ROLLED,)
    fingers: tuple[int, ...] = tuple(range(1, 11))
    first_person: int = 0
    image_format: ImageFormat = "png"
    max_rotation: float | None = None
    save_masters: bool = False

    def __post_init__(self) -> None:
        if self.people < 0 or self.impressions < 1:
            raise ValueError("need people >= 0 and impressions >= 1")
        if not self.kinds:
            raise ValueError("need at least one impression kind")
        bad = [f for f in self.fingers if not 1 <= f <= 10]
        if bad or not self.fingers:
            raise ValueError(f"finger positions must be 1-10 (ANSI/NIST FGP), got {bad}")

    def tasks(self) -> list[tuple[int, int]]:
        """(person, finger) work items in output order."""
        persons = range(self.first_person, self.first_person + self.people)
        return [(p, f) for p in persons for f in self.fingers]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["kinds"] = [str(k) for k in self.kinds]
        d["fingers"] = list(self.fingers)
        d["generator"] = {"master": asdict(MasterConfig()), "synthetic": True}
        return d


def encode(image: NDArray[np.uint8], image_format: ImageFormat) -> bytes:
    """PNG (lossless) or WSQ (FBI, 500 ppi; the ``wsq`` Pillow plugin) bytes."""
    if image_format == "wsq":
        import wsq  # noqa: F401  (registers the WSQ codec with Pillow)

        buf = io.BytesIO()
        Image.fromarray(image).save(buf, "WSQ")
        return buf.getvalue()
    # zlib's run-length strategy at level 1: on these images it is both the fastest
    # (~9 ms for a rolled print, Pillow's level 1 ~16 ms) and the smallest of the fast ones.
    params = [
        cv2.IMWRITE_PNG_COMPRESSION,
        1,
        cv2.IMWRITE_PNG_STRATEGY,
        cv2.IMWRITE_PNG_STRATEGY_RLE,
    ]
    ok, data = cv2.imencode(".png", image, params)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return bytes(data.tobytes())


def image_name(person: int, finger: int, kind: ImpressionKind, index: int, ext: str) -> str:
    """Path of one impression relative to the output folder."""
    return f"{person:06d}/f{finger:02d}_{kind}_{index}.{ext}"


def generate_finger(spec: FingerSetSpec, out: Path, person: int, finger: int) -> list[str]:
    """Generate one finger's master and impressions, write the images, and return the
    ground-truth JSON lines (strings, in order)."""
    master = master_finger(spec.seed, person, finger)
    folder = out / f"{person:06d}"
    folder.mkdir(parents=True, exist_ok=True)
    if spec.save_masters:
        grey = np.clip(128.0 - 110.0 * master.ridges, 0, 255).astype(np.uint8)
        (folder / f"f{finger:02d}_master.png").write_bytes(encode(grey, "png"))
    lines: list[str] = []
    for kind in spec.kinds:
        for index in range(spec.impressions):
            shot = impression(
                master, spec.seed, person, finger, index, kind, max_rotation=spec.max_rotation
            )
            name = image_name(person, finger, kind, index, spec.image_format)
            (out / name).write_bytes(encode(shot.image, spec.image_format))
            truth = shot.ground_truth()
            record = {
                "file": name,
                "synthetic": True,
                "seed": spec.seed,
                "person": person,
                "finger": finger,
                "finger_name": FINGER_NAMES[finger],
                "impression": index,
                "kind": str(kind),
                "class": str(master.finger_class),
                "condition": str(shot.params.condition),
                "partial": shot.params.partial,
                "width": shot.params.width,
                "height": shot.params.height,
                "ppi": 500,
                "master_singularities": [
                    {"kind": s.kind, "x": round(s.x, 1), "y": round(s.y, 1)}
                    for s in master.singularities
                ],
                "singularities": truth["singularities"],
                "params": truth["params"],
            }
            lines.append(json.dumps(record, ensure_ascii=False, sort_keys=True))
    return lines


def tune_process() -> None:
    """Process-wide settings for bulk generation (the CLI's workers and the benchmark).

    - One process per core already: OpenCV's own threads would only oversubscribe.
    - glibc hands every freed block over ~128 KB back to the kernel (munmap) and maps the
      next one afresh, so each full-size temporary of a render page-faults its way in
      again: half the time of a rolled impression. Raising the mmap and trim thresholds
      to 32 MB keeps that memory in the heap for reuse (rolled: ~26 -> ~13 ms)."""
    cv2.setNumThreads(1)
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 64 << 20)


# Worker-process state: set once per process by the pool initializer.
_WORKER: tuple[FingerSetSpec, Path] | None = None


def _init_worker(spec: FingerSetSpec, out: Path) -> None:
    global _WORKER
    _WORKER = (spec, out)
    tune_process()


def _work(task: tuple[int, int]) -> list[str]:
    assert _WORKER is not None, "worker not initialised"
    spec, out = _WORKER
    return generate_finger(spec, out, *task)


def _done_fingers(out: Path, spec: FingerSetSpec) -> tuple[set[tuple[int, int]], int]:
    """Fingers whose every impression is already in the ground truth, and the byte
    length of the complete lines (a torn last line is cut off on resume)."""
    path = out / GROUND_TRUTH
    if not path.exists():
        return set(), 0
    per_finger = len(spec.kinds) * spec.impressions
    counts: dict[tuple[int, int], int] = {}
    good = 0
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                break
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError:
                break
            key = (int(rec["person"]), int(rec["finger"]))
            counts[key] = counts.get(key, 0) + 1
            good += len(raw)
    return {k for k, n in counts.items() if n == per_finger}, good


def write_finger_set(
    spec: FingerSetSpec,
    out: Path,
    *,
    workers: int = 1,
    resume: bool = False,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Generate the set into ``out``; returns the number of impressions written.

    ``progress`` is called with the number of fingers finished after each one. With
    ``resume``, fingers already complete in ``out`` are skipped (the manifest must match);
    without it, an existing ground-truth file is replaced."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(json.dumps(spec.to_json()))  # as it reads back from disk
    manifest_path = out / MANIFEST
    done: set[tuple[int, int]] = set()
    keep = 0
    if resume and manifest_path.exists():
        previous = json.loads(manifest_path.read_text())
        if previous != manifest:
            raise ValueError(
                f"{manifest_path} was written with other parameters; "
                "use the same arguments to resume, or a new output folder"
            )
        done, keep = _done_fingers(out, spec)
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tasks = [t for t in spec.tasks() if t not in done]
    if progress and done:
        progress(len(spec.tasks()) - len(tasks))
    written = 0
    gt_path = out / GROUND_TRUTH
    with gt_path.open("r+b" if keep else "wb") as gt:
        gt.truncate(keep)
        gt.seek(keep)
        for lines in _run(spec, out, tasks, workers):
            gt.write("".join(line + "\n" for line in lines).encode())
            gt.flush()
            written += len(lines)
            if progress:
                progress(1)
    return written


def _run(
    spec: FingerSetSpec, out: Path, tasks: Sequence[tuple[int, int]], workers: int
) -> Iterator[list[str]]:
    if workers <= 1 or len(tasks) <= 1:
        for person, finger in tasks:
            yield generate_finger(spec, out, person, finger)
        return
    # fork would share the parent's OpenCV/BLAS thread pools in an undefined state.
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(spec, out)) as pool:
        # imap keeps the output order; small chunks keep the progress bar honest.
        yield from pool.imap(_work, tasks, chunksize=1)


def default_workers() -> int:
    """One worker per available core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
