"""Station devices: what the links and the card cost, against what the wire allows.

    .venv/bin/python bench/devices.py [--only scanner,compose,card] [--quick]

Three tables, each with a baseline measured or computed in the same run:

- **scanner**: image transfers between the real driver and the scanner simulator over a
  pty, the simulator pacing its output at the link's byte rate (UART 57,600 and 115,200
  baud; USB CDC-ACM at ~1 MB/s). Baseline: the bytes on the wire divided by the nominal
  link rate, so the ratio is the protocol's own overhead (framing, acknowledgements,
  turnarounds), which a faster or slower machine does not change.
- **compose**: rolled-print composition from the frames of synthetic rolls (CPU time, one
  thread). Baseline: pasting every frame's window onto the platen, the least any composer
  must do with the same frames.
- **card**: personalising and reading back an ICAO 9303 chip through the real pcscd and
  vpcd to our card emulator. Baseline: a GET CHALLENGE round trip through the same stack,
  so the ratio reads as "this many APDU round trips' worth".

Cost curves: transfer time against image bytes (base 256x288, flat 400x500, rolled
streams, 4- and 8-bit), stream packet size, and personalisation time against the chip's
size (with and without the fingerprints in DG3).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
from cryptography import x509
from numpy.typing import NDArray
from timing import timed

from biometrics.fingerprint.synth import ImpressionKind, impression, master_finger
from biometrics.placeholder import face_image
from enrollment import images
from enrollment.icao.chip import ChipContents, ChipSecrets, build_chip
from enrollment.icao.lds import FaceImage, FingerImage
from enrollment.icao.mrz import cccd_td1
from enrollment.icao.pki import SoftwarePki
from station.drivers.card.bay import CardBay, pcscd_unavailable, private_pcscd
from station.drivers.card.encoder import PersonalisationReport, VerificationReport
from station.drivers.fingerprint.band import trim_roll
from station.drivers.fingerprint.frames import PLATEN_HEIGHT, PLATEN_WIDTH, RollFrame
from station.drivers.fingerprint.roll_sim import roll_frames
from station.drivers.fingerprint.rolled import RollComposer
from station.drivers.fingerprint.scanner import FingerprintScanner, TransferStats
from station.drivers.fingerprint.sim_control import SimulatorProcess
from station.drivers.fingerprint.simulator import CDC_RATE

# --- scanner link ------------------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    label: str
    transport: str
    baud: int

    @property
    def rate(self) -> float:
        """Nominal payload rate of the link, bytes per second (8N1 UART: 10 bits a byte)."""
        return float(CDC_RATE) if self.transport == "cdc" else self.baud / 10.0


UART_57600 = Link("UART 57,600", "uart", 57600)
UART_115200 = Link("UART 115,200", "uart", 115200)
CDC = Link("USB CDC-ACM", "cdc", 115200)


@contextmanager
def scanner_on(
    link: Link, workdir: Path, *, stream_packet_size: int = 4096
) -> Iterator[tuple[SimulatorProcess, FingerprintScanner]]:
    name = f"{link.transport}{link.baud}-{stream_packet_size}"
    sim = SimulatorProcess(
        workdir / name,
        seed=11,
        person=3,
        baud=link.baud,
        transport=link.transport,
        stream_packet_size=stream_packet_size,
        packet_size=256,
    )
    with sim:
        scanner = FingerprintScanner(
            str(sim.link), baudrate=link.baud, timeout=5.0, stream_packet_size=stream_packet_size
        )
        with scanner:
            yield sim, scanner


@dataclass(frozen=True)
class TransferRow:
    what: str
    link: Link
    stats: list[TransferStats]
    roll_ms: tuple[float, ...] = ()
    """For rolls, per run: how long the finger took to roll (the last frame's time)."""

    def cells(self) -> list[str]:
        # Rolls of different fingers differ in size: take each run's own ratio and rate.
        med = statistics.median
        size = med(s.bytes for s in self.stats)
        took = med(s.seconds for s in self.stats)
        ratio = med(s.seconds / (s.bytes / self.link.rate) for s in self.stats)
        rate = med(s.bytes / s.seconds for s in self.stats)
        runs = zip(self.stats, self.roll_ms, strict=True) if self.roll_ms else ()
        lags = [max(0.0, s.seconds - ms / 1000) for s, ms in runs]
        lag = f"{med(lags):7.2f}" if lags else "      -"
        return [
            f"{self.what:<26}",
            f"{self.link.label:<13}",
            f"{size:>10,.0f}",
            f"{med(s.packets for s in self.stats):>7,.0f}",
            f"{size / self.link.rate:8.2f}",
            f"{took:8.2f}",
            f"{ratio:6.2f}",
            f"{rate / 1000:8.1f}",
            lag,
        ]


def transfer_rows(workdir: Path, quick: bool) -> list[TransferRow]:
    rows: list[TransferRow] = []
    reps_slow = 1 if quick else 2
    reps = 2 if quick else 3
    for link in (UART_57600, UART_115200):
        with scanner_on(link, workdir) as (_, scanner):
            stats = []
            for _ in range(reps_slow):
                scanner.capture_image(timeout=10.0)
                assert scanner.last_transfer is not None
                stats.append(scanner.last_transfer)
            rows.append(TransferRow("base image 256x288 4-bit", link, stats))
            print(f"  {link.label}: base image {statistics.median(s.seconds for s in stats):.2f} s")
        if link is UART_115200:
            with scanner_on(link, workdir) as (_, scanner):
                scanner.capture_flat(1, timeout=10.0, pack4=True)
                assert scanner.last_transfer is not None
                rows.append(TransferRow("flat 400x500 4-bit", link, [scanner.last_transfer]))
                print(f"  {link.label}: flat 4-bit {scanner.last_transfer.seconds:.2f} s")

    with scanner_on(CDC, workdir) as (sim, scanner):
        stats = []
        for _ in range(reps):
            scanner.capture_image(timeout=10.0)
            assert scanner.last_transfer is not None
            stats.append(scanner.last_transfer)
        rows.append(TransferRow("base image 256x288 4-bit", CDC, stats))
        for pack4 in (False, True):
            stats = []
            for _ in range(reps):
                scanner.capture_flat(1, timeout=10.0, pack4=pack4)
                assert scanner.last_transfer is not None
                stats.append(scanner.last_transfer)
            rows.append(TransferRow(f"flat 400x500 {4 if pack4 else 8}-bit", CDC, stats))
        for trim, pack4 in ((False, False), (False, True), (True, False), (True, True)):
            stats = []
            roll_ms = []
            for finger in range(1, reps + 1):
                sim.control.present(finger=finger)
                last: list[RollFrame] = []
                scanner.capture_roll(
                    finger, timeout=30.0, on_frame=last.append, pack4=pack4, trim=trim
                )
                assert scanner.last_transfer is not None
                stats.append(scanner.last_transfer)
                roll_ms.append(float(last[-1].t_ms))
            what = f"roll {'trimmed' if trim else 'whole windows'} {4 if pack4 else 8}-bit"
            rows.append(TransferRow(what, CDC, stats, roll_ms=tuple(roll_ms)))
            took = statistics.median(s.seconds for s in stats)
            print(f"  CDC: {what} {took:.2f} s")
    return rows


def packet_size_rows(workdir: Path, quick: bool) -> list[TransferRow]:
    """Cost curve over the stream packet size: each packet costs a header and a checksum
    on the wire and a parse on each side."""
    rows = []
    for size in (256, 1024, 4096):
        with scanner_on(CDC, workdir, stream_packet_size=size) as (_, scanner):
            stats = []
            for _ in range(2 if quick else 3):
                scanner.capture_flat(1, timeout=10.0)
                assert scanner.last_transfer is not None
                stats.append(scanner.last_transfer)
            rows.append(TransferRow(f"flat 8-bit, {size} B packets", CDC, stats))
    return rows


def print_transfers(rows: list[TransferRow]) -> None:
    head = [
        "transfer",
        "link",
        "bytes",
        "packets",
        "wire s",
        "took s",
        "ratio",
        "kB/s",
        "lag s",
    ]
    print(f"| {' | '.join(head)} |\n|{'|'.join(['---'] * 2 + ['---:'] * (len(head) - 2))}|")
    for row in rows:
        print(f"| {' | '.join(c.strip() for c in row.cells())} |")
    print(
        "\nmedians over the runs; wire s = bytes / nominal link rate; ratio = took / wire, per"
        " run; lag = what the officer waits after the finger stops rolling (rolls only)."
    )


# --- rolled composition ------------------------------------------------------------------


def paste_baseline(frames: list[RollFrame]) -> NDArray[np.uint8]:
    """The least a composer can do: copy each window onto the platen (a trimmed frame's
    window includes the columns it did not send, so this bounds its cost from above)."""
    canvas = np.full((PLATEN_HEIGHT, PLATEN_WIDTH), 255, np.uint8)
    for f in frames:
        canvas[f.y : f.y + f.height, f.x : f.x + f.width] = f.pixels
    return canvas


def cpu_ms(fn: Callable[[], object]) -> float:
    t = time.process_time()
    fn()
    return (time.process_time() - t) * 1000


def compose_table(quick: bool) -> None:
    rolls = [(p, f) for p in range(2 if quick else 4) for f in (1, 2, 7)]
    print(f"  rendering {len(rolls)} synthetic rolls ...", flush=True)
    whole_streams = [roll_frames(21, p, f) for p, f in rolls]
    streams = {"whole windows": whole_streams, "trimmed": [trim_roll(s) for s in whole_streams]}
    repeat = 2 if quick else 3
    n_frames = [len(s) for s in whole_streams]
    print(
        f"\n{len(rolls)} rolls x {repeat} runs, {min(n_frames)}-{max(n_frames)} frames a roll;"
        " CPU ms, one thread\n"
    )
    print("| stream | step | median | p95 | max |\n|---|---|---:|---:|---:|")
    ratios = {}
    for label, group in streams.items():
        per_frame: list[float] = []
        finish: list[float] = []
        whole: list[float] = []
        base: list[float] = []
        for _ in range(repeat):
            for frames in group:
                composer = RollComposer()
                t0 = time.process_time()
                for frame in frames:
                    t = time.process_time()
                    composer.add(frame)
                    per_frame.append((time.process_time() - t) * 1000)
                t = time.process_time()
                composer.finish()
                finish.append((time.process_time() - t) * 1000)
                whole.append((time.process_time() - t0) * 1000)
                base.append(cpu_ms(lambda frames=frames: paste_baseline(frames)))  # type: ignore[misc]
        for name, xs in (
            ("add() per frame", per_frame),
            ("finish()", finish),
            ("whole roll", whole),
            ("baseline: paste windows", base),
        ):
            q = statistics.quantiles(xs, n=20)[-1]
            print(f"| {label} | {name} | {statistics.median(xs):.2f} | {q:.2f} | {max(xs):.2f} |")
        ratios[label] = statistics.median(whole) / statistics.median(base)
    print("\nwhole roll / paste baseline: " + ", ".join(f"{k} {v:.0f}x" for k, v in ratios.items()))


# --- card ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChipCase:
    label: str
    chip: ChipContents
    secrets: ChipSecrets


def face_jpeg(target_kb: int) -> bytes:
    """An ICAO-proportioned portrait (480 x 640) JPEG near ``target_kb``: what DG2 holds."""
    image = face_image(5, 480, 640)
    best = b""
    for quality in range(95, 10, -5):
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=quality)
        best = buf.getvalue()
        if len(best) <= target_kb * 1000:
            break
    return best


def rolled_wsq(finger: int) -> bytes:
    shot = impression(master_finger(31, 0, finger), 31, 0, finger, 0, ImpressionKind.ROLLED)
    return images.encode_wsq(shot.image)


def chip_cases(quick: bool) -> tuple[list[ChipCase], x509.Certificate]:
    now = datetime.now(UTC)
    pki = SoftwarePki.generate(now=now)
    csca = pki.csca
    td1 = cccd_td1(
        personal_number="001090012345",
        full_name="Nguyễn Văn Đức",
        birth_date=date(1990, 1, 15),
        sex="M",
        expiry=date(2030, 1, 15),
    )
    fingers = [FingerImage(rolled_wsq(2), 2), FingerImage(rolled_wsq(7), 7)]
    cases = []
    for face_kb, with_fingers in ((8, False), (15, False), (15, True), (30, True)):
        if quick and face_kb == 8:
            continue
        jpeg = face_jpeg(face_kb)
        chip, secrets = build_chip(
            td1=td1,
            faces=[FaceImage(jpeg, 480, 640, gender=1)],
            fingers=fingers if with_fingers else [],
            document_signer=pki.ds,
            sign=pki.sign,
            signing_time=now - timedelta(minutes=1),
        )
        size = sum(len(b) for b in chip.files.values())
        what = f"DG2 {len(jpeg) / 1000:.0f} kB" + (" + DG3 2 rolled" if with_fingers else "")
        cases.append(ChipCase(f"{what} ({size / 1000:.0f} kB)", chip, secrets))
    return cases, csca


@dataclass(frozen=True)
class CardPoint:
    """One chip through one APDU mode: what the plot draws."""

    chip_bytes: int
    mode: str
    personalise_ms: float
    read_ms: float


def card_table(work: Path, quick: bool) -> list[CardPoint]:
    reason = pcscd_unavailable()
    if reason:
        print(f"skipped: {reason}")
        return []
    print("  building chips (synthetic portrait and rolled fingers, WSQ) ...", flush=True)
    cases, csca = chip_cases(quick)
    with private_pcscd(work / "pcscd") as daemon:
        bay = CardBay(daemon, work)
        try:
            return card_rows(bay, cases, csca, 3 if quick else 5)
        finally:
            bay.close()


def card_rows(
    bay: CardBay, cases: list[ChipCase], csca: x509.Certificate, reps: int
) -> list[CardPoint]:
    modes = {
        "short APDUs": {},
        "extended (4 kB)": {"extended_length": True, "write_chunk": 4096, "read_chunk": 4096},
    }
    # Baseline: one GET CHALLENGE round trip through pcscd + vpcd + the emulator.
    card = bay.card("baseline")
    card.insert()
    encoder = bay.encoder()
    encoder.wait_for_card(5.0)
    encoder.link.connect()
    encoder.link.transmit(bytes.fromhex("00A4040C07A0000002471001"))
    rtt = timed(lambda: encoder.link.transmit(bytes.fromhex("0084000008")), 200)
    encoder.link.disconnect()
    card.remove()
    encoder.link.wait_for(False, 5.0)
    base = statistics.median(rtt)
    print(f"\nbaseline: GET CHALLENGE round trip {base:.3f} ms (median of 200)\n")
    head = "| chip | mode | step | APDUs | kB sent | kB received | ms | ratio |"
    print(head + "\n|---|---|---|---:|---:|---:|---:|---:|")
    n = 0
    points = []
    for case in cases:
        for mode, settings in modes.items():
            pers: list[PersonalisationReport] = []
            vers: list[VerificationReport] = []
            for _ in range(reps):
                n += 1
                card = bay.card(f"c{n}")
                card.insert()
                enc = bay.encoder(**settings)
                enc.wait_for_card(5.0)
                pers.append(enc.personalise(case.chip, case.secrets))
                vers.append(enc.verify(case.chip, [csca]))
                card.remove()
                enc.link.wait_for(False, 5.0)
            p = pers[0]
            r = vers[0].read
            p_ms = statistics.median(x.seconds for x in pers) * 1000
            v_ms = statistics.median(x.read.seconds for x in vers) * 1000
            print(
                f"| {case.label} | {mode} | personalise | {p.apdus} | {p.bytes_sent / 1000:.1f}"
                f" | {p.bytes_received / 1000:.1f} | {p_ms:.1f} | {p_ms / base:.0f} |"
            )
            print(
                f"| {case.label} | {mode} | read back ({r.access}) + PA + AA | {r.apdus}"
                f" | {r.bytes_sent / 1000:.1f} | {r.bytes_received / 1000:.1f} | {v_ms:.1f}"
                f" | {v_ms / base:.0f} |"
            )
            size = sum(len(b) for b in case.chip.files.values())
            points.append(CardPoint(size, mode, p_ms, v_ms))
    print(
        "\nratio = ms / baseline round trip. Personalisation includes the plain read-back of"
        " DG3 before the lock; read back includes Active Authentication. A contact or"
        " contactless reader adds its own transfer time (90 kB at 424 kbit/s is ~1.7 s)."
    )
    return points


def plot(path: Path, rows: list[TransferRow], points: list[CardPoint]) -> None:
    """Cost curves at a glance: link time against bytes (left), card time against chip
    size (right); whichever sections ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in ("link", "card") if (rows if p == "link" else points)]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 5.0), dpi=110,
                             squeeze=False)  # fmt: skip
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "link":
            links = [UART_57600, UART_115200, CDC]
            xs = np.logspace(4, 7.2, 50)
            for i, link in enumerate(links):
                ax.plot(xs, xs / link.rate, ":", color=f"C{i}", lw=1)
                mine = [r for r in rows if r.link == link]
                size = [statistics.median(s.bytes for s in r.stats) for r in mine]
                took = [statistics.median(s.seconds for s in r.stats) for r in mine]
                ax.scatter(size, took, color=f"C{i}", label=f"{link.label} (dotted: wire)")
                for r, x, y in zip(mine, size, took, strict=True):
                    if r.what.startswith("roll"):
                        ax.annotate(r.what.removeprefix("roll "), (x, y), fontsize=7,
                                    xytext=(4, -10), textcoords="offset points")  # fmt: skip
            ax.set(xscale="log", yscale="log", xlabel="bytes on the link",
                   ylabel="transfer time, s", title="Scanner link: time against bytes")  # fmt: skip
        else:
            for i, mode in enumerate(sorted({p.mode for p in points})):
                pts = sorted((p for p in points if p.mode == mode), key=lambda p: p.chip_bytes)
                kb = [p.chip_bytes / 1000 for p in pts]
                ax.plot(kb, [p.personalise_ms for p in pts], "o-", color=f"C{i}",
                        label=f"personalise, {mode}")  # fmt: skip
                ax.plot(kb, [p.read_ms for p in pts], "s--", color=f"C{i}",
                        label=f"read back + PA + AA, {mode}")  # fmt: skip
            ax.set(xlabel="chip contents, kB", ylabel="ms (pcscd + vpcd + emulator)",
                   title="Card: time against chip size")  # fmt: skip
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    print(f"\nplot: {path}")


# --- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="scanner,compose,card")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--plot", type=Path, help="write the cost-curve plot (PNG) here")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    print(
        f"# bench/devices.py, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC,"
        f" {platform.processor() or platform.machine()}, CPython {platform.python_version()},"
        f" load {os.getloadavg()[0]:.1f}"
    )
    rows: list[TransferRow] = []
    points: list[CardPoint] = []
    with tempfile.TemporaryDirectory(prefix="bench-devices-") as tmp:
        work = Path(tmp)
        if "scanner" in only:
            print("\n## Scanner link (driver <-> simulator over a pty, paced)\n", flush=True)
            rows = transfer_rows(work, args.quick)
            rows += packet_size_rows(work, args.quick)
            print()
            print_transfers(rows)
        if "compose" in only:
            print("\n## Rolled composition\n", flush=True)
            compose_table(args.quick)
        if "card" in only:
            print("\n## Card personalisation (pcscd + vpcd + emulator)\n", flush=True)
            points = card_table(work, args.quick)
    if args.plot:
        plot(args.plot, rows, points)
    return 0


if __name__ == "__main__":
    sys.exit(main())
