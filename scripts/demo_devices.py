"""`make demo`, part 2: the station's devices, all simulated, driven by the real drivers.

The scanner simulator on a pty at USB CDC-ACM speed, the simulated camera, the card
emulator behind a private pcscd (root only) and mock GPIO: roll two fingers, take a face
that passes the quality gate, build a chip from them, personalise and verify it, and show
the health board. The workflow that strings this together for an officer comes later.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from biometrics.face.pipeline import FaceAnalyzer
from enrollment import images
from enrollment.icao.chip import build_chip
from enrollment.icao.lds import FaceImage, FingerImage
from enrollment.icao.mrz import cccd_td1
from enrollment.icao.pki import SoftwarePki
from station.capture.portrait import first_good_portrait
from station.config import StationSettings
from station.devices import StationDevices

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    fetched = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fetch_assets.py")],
        stdout=subprocess.DEVNULL,
        check=False,
    ).returncode
    if fetched != 0:
        print("devices demo: the face photos could not be fetched; skipped")
        return 0
    with tempfile.TemporaryDirectory(prefix="vneid-station-") as tmp:
        settings = StationSettings(
            run_dir=Path(tmp) / "run",
            state_dir=Path(tmp) / "state",
            scanner={"backend": "simulated", "simulator": {"seed": 7, "person": 1}},
            camera={"backend": "simulated", "seed": 3, "scene_script": ["walk_in:1", "good:60"]},
        )
        print("6. station devices (all simulated): open, identify")
        with StationDevices(settings) as devices:
            for h in devices.board:
                state = "ok" if h.ok else f"ABSENT ({h.last_error})"
                print(f"   {h.name:<13} {state:<6} {h.model or ''} {h.serial or ''}")
            devices.gpio.light.busy()

            print("7. roll the right and left index fingers (USB CDC-ACM pace, 8-bit, trimmed)")
            rolled = {}
            sim = devices.scanner_simulator
            for finger in (2, 7):
                if sim is not None:  # the citizen puts that finger on the platen
                    sim.control.present(finger=finger)
                t = time.perf_counter()
                capture = devices.scanner.capture_roll(finger, timeout=30.0)
                stats = devices.scanner.last_transfer
                sent = f"{stats.bytes / 1e6:.2f} MB" if stats else "?"
                print(
                    f"   finger {finger}: {capture.frames_used} frames, {sent}, rolled width "
                    f"{capture.width_px} px, {time.perf_counter() - t:.1f} s"
                )
                rolled[finger] = capture.image

            print("8. face: frames until the ICAO portrait passes the quality gate")
            t = time.perf_counter()
            portrait = first_good_portrait(devices.camera, FaceAnalyzer(), timeout=20.0)
            if portrait is None:
                print("   no frame passed within 20 s")
                return 1
            print(f"   portrait {portrait.image.shape[1]}x{portrait.image.shape[0]} in "
                  f"{time.perf_counter() - t:.1f} s")  # fmt: skip

            if devices.card_bay is None:
                reason = devices.board.get("card_encoder").last_error
                print(f"9. card: skipped ({reason})")
            else:
                print("9. card: personalise a blank chip, lock, read back under PACE, verify")
                now = datetime.now(UTC)
                pki = SoftwarePki.generate(now=now)
                csca = pki.csca
                h, w = portrait.image.shape[:2]
                chip, secrets = build_chip(
                    td1=cccd_td1(
                        personal_number="001090012345",
                        full_name="Nguyễn Văn An",
                        birth_date=date(1990, 1, 15),
                        sex="M",
                        expiry=date(2030, 1, 15),
                    ),
                    faces=[FaceImage(images.encode_jpeg(portrait.image, 80), w, h, gender=1)],
                    fingers=[FingerImage(images.encode_wsq(img), f) for f, img in rolled.items()],
                    document_signer=pki.ds,
                    sign=pki.sign,
                    signing_time=now - timedelta(minutes=1),
                )
                card = devices.card_bay.card("demo")
                card.insert()
                devices.encoder.wait_for_card(5.0)
                report = devices.encoder.personalise(chip, secrets)
                verified = devices.encoder.verify(chip, [csca])
                print(
                    f"   {report.apdus} APDUs, {report.payload_bytes / 1000:.0f} kB written in "
                    f"{report.seconds * 1000:.0f} ms; read back under "
                    f"{verified.read.access.upper()}: passive authentication OK "
                    f"(DG{', DG'.join(str(n) for n in sorted(verified.passive.verified))}), "
                    f"active authentication {'OK' if verified.active_authentication else 'n/a'}"
                )
                card.remove()
            devices.gpio.light.ready()
            devices.gpio.buzzer.ok()
            print("10. status light: ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
