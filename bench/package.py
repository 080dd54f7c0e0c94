"""Package build/open cost: time, size and memory for a realistic ten-print package.

    .venv/bin/python bench/package.py [--repeat N] [--sizes 400x500,800x750,1600x1500]

Pinned to one core. Images are encoded once up front (the station encodes each finger as
it is accepted), so "build" is what happens at the end of an enrollment: record + ANSI/NIST
transaction + manifest + ES256 signature + HPKE encryption. The baseline is AES-256-GCM
over the same bytes in the same run: the least any encrypted format can cost, so the ratios
stay comparable on a noisy shared machine.

Two image sets: the placeholder ridge images (smoother than live scans, so WSQ compresses
them better) and white noise, WSQ's worst case, which bounds the package size from above.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from numpy.typing import NDArray
from timing import timed

from biometrics.placeholder import face_image, finger_image
from enrollment import images
from enrollment.examples import example_enrollment
from enrollment.keys.software import SoftwareDecryptor, SoftwareKeySigner
from enrollment.package import build_package, open_package
from enrollment.pki import issue_station_certificate, make_station_ca
from enrollment.trust import TrustStore

FACE = (600, 800)


def fmt(samples: list[float]) -> tuple[str, str]:
    q = statistics.quantiles(samples, n=10) if len(samples) >= 2 else samples * 9
    return f"{statistics.median(samples):8.2f}", f"{q[-1]:8.2f}"


def ridges(w: int, h: int, i: int) -> NDArray[np.uint8]:
    return finger_image(100 + i, w, h)


def noise(w: int, h: int, i: int) -> NDArray[np.uint8]:
    return np.random.default_rng(i).integers(0, 256, (h, w), dtype=np.uint8)


def progress(msg: str) -> None:
    print(f"  .. {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class World:
    signer: SoftwareKeySigner
    registry: SoftwareDecryptor
    trust: TrustStore


def run_set(
    name: str,
    size: tuple[int, int],
    maker: Callable[[int], NDArray[np.uint8]],
    repeat: int,
    world: World,
) -> list[tuple[str, ...]]:
    w, h = size
    progress(f"{name} {w}x{h}: encoding ten fingers")
    raw = [maker(i) for i in range(10)]
    enc_times: list[float] = []
    fingers: list[bytes | None] = []
    for arr in raw:
        t = time.perf_counter()
        fingers.append(images.encode_wsq(arr))
        enc_times.append((time.perf_counter() - t) * 1000)
    portrait = face_image(1, *FACE)
    buf = io.BytesIO()
    face_ms = statistics.median(timed(lambda: portrait.save(io.BytesIO(), "JPEG", quality=85), 5))
    portrait.save(buf, "JPEG", quality=85)
    record, tx = example_enrollment(1, fingers, (w, h), buf.getvalue(), FACE, now=datetime.now(UTC))
    signer, registry, trust = world.signer, world.registry, world.trust
    recipient = registry.public_key()
    progress(f"{name} {w}x{h}: build/open x{repeat}")
    built = build_package(record, tx, signer=signer, recipient=recipient)
    build = timed(lambda: build_package(record, tx, signer=signer, recipient=recipient), repeat)
    opening = timed(lambda: open_package(built.data, trust=trust, decryptor=registry), repeat)
    aes = AESGCM(os.urandom(32))
    baseline = timed(lambda: aes.encrypt(os.urandom(12), built.data, None), repeat)
    tracemalloc.start()
    open_package(built.data, trust=trust, decryptor=registry)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    base = statistics.median(baseline)
    wsq_sizes = [len(f) for f in fingers if f]
    rows: list[tuple[str, ...]] = [
        (f"{name} {w}x{h}", "WSQ encode / finger", *fmt(enc_times), "",
         f"{statistics.mean(wsq_sizes) / 1024:.1f} KB avg"),
        ("", "face JPEG encode", f"{face_ms:8.2f}", "", "", f"{len(buf.getvalue()) / 1024:.1f} KB"),
        ("", "build+sign+encrypt", *fmt(build), f"{statistics.median(build) / base:7.1f}x",
         f"{len(built.data) / 1024:.1f} KB package"),
        ("", "open+verify", *fmt(opening), f"{statistics.median(opening) / base:7.1f}x",
         f"peak {peak / 1024:.0f} KB traced"),
        ("", "baseline AES-GCM", *fmt(baseline), "   1.0x", ""),
    ]  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--sizes", default="400x500,800x750,1600x1500")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = make_station_ca(ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    signer = SoftwareKeySigner(key, issue_station_certificate(ca_key, ca, "HN-BD-001",
                                                              key.public_key()))  # fmt: skip
    trust = TrustStore()
    trust.add_certificate(ca)
    world = World(signer, SoftwareDecryptor(ec.generate_private_key(ec.SECP256R1())), trust)
    rows: list[tuple[str, ...]] = []
    for text in args.sizes.split(","):
        w, h = (int(v) for v in text.split("x"))
        rows += run_set("ridges", (w, h), partial(ridges, w, h), args.repeat, world)
        if (w, h) == (800, 750):
            rows += run_set("noise", (w, h), partial(noise, w, h), args.repeat, world)
    print(f"# bench/package.py  {datetime.now(UTC):%Y-%m-%d}  {platform.machine()} "
          f"{platform.python_implementation()} {platform.python_version()}  one core, "
          f"{args.repeat} runs")  # fmt: skip
    head = ("image set", "stage", "median ms", "p90 ms", "vs base", "size / memory")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for row in rows:
        print("| " + " | ".join(c.strip() for c in row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
