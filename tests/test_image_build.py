"""The device image end to end (slow suite, as root on x86_64 Debian 12): build it, check
its artefacts, and boot it under QEMU until the station service answers and the kiosk
runs (the health check's console line). ``VN_EID_IMAGE=<.img>`` boots an image already
built instead of building one (``make image-test`` does both steps by hand)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from image import disk, qemu

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("VN_EID_IMAGE")
    if given:
        return Path(given)
    if os.geteuid() != 0:
        pytest.fail("the image build runs as root (make image-test)")
    subprocess.run([str(ROOT / "image/host-setup.sh")], check=True)
    out = ROOT / "build/image"
    subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-m", "image.build", "--out", str(out)],
        cwd=ROOT, check=True,
    )  # fmt: skip
    summary = json.loads((out / "build.json").read_text())
    return Path(summary["image"])


def test_the_artefacts_are_complete(built: Path) -> None:
    assert built.stat().st_size < 2 * 10**9
    sums = next(built.parent.glob(built.name.removesuffix(".img") + ".sha256"))
    listed = {line.split()[1] for line in sums.read_text().splitlines()}
    assert built.name in listed
    assert built.name + ".zst" in listed
    check = subprocess.run(["sha256sum", "-c", str(sums)], cwd=built.parent,
                           capture_output=True, text=True)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    parts = disk.partition_table(built)
    assert [p["type"] for p in parts] == ["c", "83", "83"]
    sbom = json.loads(next(built.parent.glob("*.sbom.cdx.json")).read_text())
    names = {c["name"] for c in sbom["components"]}
    for needed in ("chromium", "cage", "rauc", "linux-image-6.1", "fastapi", "vn-eid"):
        assert any(n == needed or n.startswith(needed) for n in names), needed
    assert not names & {"boto3", "onnxruntime", "psycopg", "gcc", "gcc-12"}


def test_it_boots_to_a_ready_station_and_a_running_kiosk(built: Path, tmp_path: Path) -> None:
    if shutil.which("qemu-system-aarch64") is None:
        pytest.fail("qemu-system-aarch64 missing (image/host-setup.sh installs it)")
    card = qemu.card_copy(built, tmp_path)
    result = qemu.boot(card, timeout_s=1800, passphrase=qemu.DEFAULT_PASSPHRASE)
    assert result.console is not None
    tail = result.console.read_text(errors="replace")[-4000:]
    assert result.ok, f"{result.result} {result.fields}\n{tail}"
    assert result.fields["slot"] == "A"
    assert result.fields["station"] == "ready"
    assert result.fields["kiosk"] == "active"
    for step in ("grub", "kernel", "data"):
        assert step in result.milestones, (step, result.milestones)
    # The first boot made the data partition in the card's free space, encrypted (LUKS2)
    # with the passphrase asked on the console: chosen, repeated, then typed to unlock.
    table = disk.partition_table(card)
    assert len(table) == 4
    assert result.asked == 3
    with card.open("rb") as fh:
        fh.seek(int(str(table[3]["start"])) * disk.SECTOR)
        assert fh.read(6) == b"LUKS\xba\xbe"
