"""`make demo`, part 3: the central registry, embedded, as a real process over HTTP.

Starts `python -m central serve` on a free port with its data in a temporary folder
(SQLite, a blob folder, keys created at first start, the pipeline worker in the process),
then plays the people and a station: an administrator registers an office and a station
and makes a one-time token; the station enrolls with a CSR, uploads four signed packages
(three citizens and one of them again under another name); the pipeline checks quality
with NFIQ 2, deduplicates and issues; an adjudicator links the duplicate to the existing
number; the station fetches the chip data and checks it with passive authentication.

The packages are built from synthetic rolled prints and synthetic faces
(tests/registrykit.py, the same builder the registry tests use).
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from central.chipdata import ChipData  # noqa: E402
from enrollment.icao.passive import verify_passive  # noqa: E402
from enrollment.request_signing import StationRequestAuth  # noqa: E402
from tests import registrykit  # noqa: E402

STATION = "HN-BD-001"
ADMIN = ("admin", "demo administrator password")
ADJUDICATOR = ("adjudicator", "demo adjudicator password")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(client: httpx.Client, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the registry exited with {process.returncode}")
        try:
            if client.get("/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit("the registry did not become ready")


def _wait_states(
    client: httpx.Client, auth: StationRequestAuth, ids: list[str], timeout: float
) -> dict[str, dict[str, Any]]:
    final = {"issued", "adjudication", "rejected", "card_encoded"}
    deadline = time.monotonic() + timeout
    while True:
        states = {i: client.get(f"/v1/packages/{i}", auth=auth).json() for i in ids}
        if all(s.get("state") in final for s in states.values()):
            return states
        if time.monotonic() > deadline:
            raise SystemExit(f"the pipeline did not finish: {states}")
        time.sleep(1.0)


def main() -> int:
    print("== Central registry (embedded: SQLite, blob folder, in-process worker) ==")
    with tempfile.TemporaryDirectory(prefix="vn-eid-registry-") as tmp:
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        env |= {
            "PYTHONPATH": str(ROOT),
            "REGISTRY_BOOTSTRAP_ADMIN": f"{ADMIN[0]}:{ADMIN[1]}",
            "REGISTRY_WORKER__IDLE_POLL_SECONDS": "0.2",
        }
        log = Path(tmp) / "registry.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "central", "serve", "--port", str(port)],
                cwd=tmp,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                _wait_ready(client, process, 60)
                return _journey(client)
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


def _journey(client: httpx.Client) -> int:
    admin = registrykit.login(client, *ADMIN)
    signer, office = registrykit.onboard(client, admin, STATION, "00001")
    print(f"station {STATION} enrolled in office {office} (Phường Phúc Xá, Ba Đình, Hà Nội)")
    client.post(
        "/v1/users",
        json={"username": ADJUDICATOR[0], "password": ADJUDICATOR[1], "roles": ["adjudicator"]},
        headers=admin,
    ).raise_for_status()
    recipient_pem = client.get(
        "/v1/station/trust", auth=StationRequestAuth(signer, STATION)
    ).json()["package_public_key"]
    from cryptography.hazmat.primitives import serialization

    recipient = serialization.load_pem_public_key(recipient_pem.encode())
    people = [(1, 0, None), (6, 0, None), (10, 0, None), (1, 1, 77)]
    print("building four packages from synthetic prints and faces ...")
    built = [
        registrykit.package(
            person,
            sitting,
            signer=signer,
            station_id=STATION,
            recipient=recipient,  # type: ignore[arg-type]
            demographics=demo,
        )
        for person, sitting, demo in people
    ]
    auth = StationRequestAuth(signer, STATION)
    started = time.monotonic()
    for b in built:
        r = client.put(f"/v1/packages/{b.package_id}", content=b.data, auth=auth)
        r.raise_for_status()
    print(f"uploaded and acknowledged in {time.monotonic() - started:.2f} s; pipeline running ...")
    ids = [b.package_id for b in built]
    _wait_states(client, auth, ids[:3], 300)
    states = _wait_states(client, auth, ids, 300)
    adjudicator = registrykit.login(client, *ADJUDICATOR)
    for case in client.get("/v1/cases", headers=adjudicator).json():
        view = client.get(f"/v1/cases/{case['id']}", headers=adjudicator).json()
        best = view["candidates"][0]
        pairs = max((len(f["pairs"]) for f in best["fingers"]), default=0)
        print(
            f"adjudication case {case['id']}: {view['probe']['demographics']['full_name']} vs "
            f"{best['demographics']['full_name']} (score {best['scores']['score']}, face "
            f"{best['scores']['face_score']}, up to {pairs} matched minutiae on a finger) "
            "-> same person"
        )
        person = best["person_id"]  # the candidate as it is now (issued by then)
        client.post(
            f"/v1/cases/{case['id']}/decision",
            json={"decision": "same", "person_id": person, "reason": "fingers and face agree"},
            headers=adjudicator,
        ).raise_for_status()
    states = _wait_states(client, auth, ids, 300)
    deadline = time.monotonic() + 120
    while any(s["state"] != "issued" for s in states.values()) and time.monotonic() < deadline:
        time.sleep(1)
        states = _wait_states(client, auth, ids, 300)
    rows = []
    for b, (person, _, demo) in zip(built, people, strict=True):
        s = states[b.package_id]
        number = "-"
        if s["state"] == "issued":
            issued = client.get(f"/v1/packages/{b.package_id}/issuance", auth=auth).json()
            number = issued["personal_number"]
            chip = ChipData.from_bytes(base64.b64decode(issued["chip_cbor"]))
            masters = client.get("/v1/station/trust", auth=auth).json()["csca_master_list"]
            from cryptography import x509

            csca = x509.load_pem_x509_certificates(masters.encode())
            verify_passive(chip.sod, chip.data_groups(), csca)
        who = f"citizen {person}" + (f" again as #{demo}" if demo else "")
        rows.append((b.package_id[:13] + "…", who, s["receipt_number"], s["state"], number))
    print()
    print(f"{'package':<16} {'who':<22} {'receipt':<20} {'state':<12} personal number")
    for row in rows:
        print(f"{row[0]:<16} {row[1]:<22} {row[2]:<20} {row[3]:<12} {row[4]}")
    numbers = [r[4] for r in rows]
    ok = numbers[3] == numbers[0] and len(set(numbers[:3])) == 3 and "-" not in numbers
    print()
    print(
        "the duplicate kept the first enrollment's number; chips verified (passive "
        "authentication against the CSCA)"
        if ok
        else "UNEXPECTED: see the table above"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
