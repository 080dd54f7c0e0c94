"""`make demo`: one synthetic citizen through the package contract, end to end.

Creates the keys a deployment has (a station CA, a station key with its certificate, the
registry's HPKE key), builds a package from placeholder images, signs and encrypts it,
opens and verifies it as the registry would, then runs the command-line inspector on it.
Later issues grow this into the full journey (station, registry, card).
"""

from __future__ import annotations

import io
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from biometrics.placeholder import face_image, finger_image
from enrollment import images
from enrollment.examples import example_enrollment
from enrollment.keys.software import SoftwareDecryptor, SoftwareKeySigner, write_private_key
from enrollment.package import build_package, open_package
from enrollment.pki import issue_station_certificate, make_station_ca
from enrollment.trust import TrustStore

OUT = Path("data/demo")
STATION = "HN-BD-001"
FINGER = (800, 750)
FACE = (600, 800)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    trust_dir = OUT / "trust"
    trust_dir.mkdir(exist_ok=True)
    print("1. keys: station CA, station key + certificate, registry HPKE key")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = make_station_ca(ca_key)
    (trust_dir / "station-ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    station_key = ec.generate_private_key(ec.SECP256R1())
    write_private_key(OUT / "station-key.pem", station_key)
    cert = issue_station_certificate(ca_key, ca_cert, STATION, station_key.public_key())
    signer = SoftwareKeySigner(station_key, cert)
    registry_key = ec.generate_private_key(ec.SECP256R1())
    write_private_key(OUT / "registry-key.pem", registry_key)

    print("2. capture (placeholder images): ten rolled fingers 800x750 WSQ, one face JPEG")
    t0 = time.perf_counter()
    fingers: list[bytes | None] = [
        images.encode_wsq(finger_image(100 + i, *FINGER)) for i in range(10)
    ]
    fingers[9] = None  # left little finger: amputated, with a supervisor's approval
    buf = io.BytesIO()
    face_image(7, *FACE).save(buf, "JPEG", quality=85)
    record, tx = example_enrollment(
        2021, fingers, FINGER, buf.getvalue(), FACE, station_id=STATION, now=datetime.now(UTC)
    )
    t1 = time.perf_counter()

    print("3. build: sign the manifest (COSE ES256), encrypt to the registry (HPKE)")
    built = build_package(record, tx, signer=signer, recipient=registry_key.public_key())
    t2 = time.perf_counter()
    path = OUT / f"{built.package_id}.vneid"
    path.write_bytes(built.data)

    print("4. open at the registry: decrypt, verify signer and every part")
    trust = TrustStore.from_dir(trust_dir)
    verified = open_package(path, trust=trust, decryptor=SoftwareDecryptor(registry_key))
    t3 = time.perf_counter()
    print(
        f"   package {verified.package_id}: {len(built.data):,} bytes; encode {t1 - t0:.2f} s, "
        f"build {1000 * (t2 - t1):.0f} ms, open {1000 * (t3 - t2):.0f} ms"
    )

    print(f"5. python -m enrollment inspect {path} --key ... --trust ...\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "enrollment",
            "inspect",
            str(path),
            "--key",
            str(OUT / "registry-key.pem"),
            "--trust",
            str(trust_dir),
        ],
        check=False,
    )
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
