"""The data partition's key (image/overlay/usr/lib/vn-eid/data-key) against a real TPM
2.0 (swtpm) and cryptsetup, on a volume in a file: the random key is sealed by the TPM and
then wiped from the volume, and the recovery key it prints opens it.

Unlocking by the TPM maps a device (device-mapper), which this machine's containers lack;
the QEMU image tests boot the station with the passphrase path end to end."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Swtpm

DATA_KEY = Path(__file__).resolve().parents[1] / "image/overlay/usr/lib/vn-eid/data-key"
RECOVERY = re.compile(r"^[a-z]{8}(-[a-z]{8}){7}$")

pytestmark = [
    pytest.mark.tpm,
    pytest.mark.skipif(
        shutil.which("cryptsetup") is None or shutil.which("systemd-cryptenroll") is None,
        reason="cryptsetup-bin and systemd-cryptenroll are needed (make bootstrap)",
    ),
    # cryptsetup locks in /run/cryptsetup, root's (as the image build, these run as root).
    pytest.mark.skipif(os.geteuid() != 0, reason="cryptsetup needs root here"),
]


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def _luks(volume: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["cryptsetup", "luksDump", "--dump-json-metadata", str(volume)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    meta: dict[str, Any] = json.loads(out)
    return meta


def _opens(volume: Path, secret: str) -> bool:
    done = subprocess.run(
        ["cryptsetup", "open", "--test-passphrase", "--key-file", "-", str(volume)],
        input=secret, text=True, capture_output=True,
    )  # fmt: skip
    return done.returncode == 0


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    path = tmp_path / "data.img"
    with path.open("wb") as fh:
        fh.truncate(32 * 2**20)
    return path


def _env(tmp_path: Path, tcti: str) -> dict[str, str]:
    return {
        **os.environ,
        "TMPDIR": str(tmp_path),
        "SYSTEMD_TPM2_DEVICE": tcti,
        # The host's kernel has no Adiantum for user space; the device's has.
        "VN_EID_DATA_CIPHER": "aes-xts-plain64",
    }


def test_seal_binds_the_key_to_the_tpm_and_prints_a_working_recovery_key(
    swtpm: Swtpm, volume: Path, tmp_path: Path
) -> None:
    done = _run(["sh", str(DATA_KEY), "seal", str(volume)], _env(tmp_path, swtpm.tcti))
    assert done.returncode == 0, done.stderr
    recovery = done.stdout.strip()
    assert RECOVERY.match(recovery), done.stdout

    meta = _luks(volume)
    tokens = list(meta["tokens"].values())
    assert [t["type"] for t in tokens] == ["systemd-tpm2", "systemd-recovery"]
    assert tokens[0]["tpm2-pcrs"] == [7]
    # The random key's slot 0 is gone: only the TPM's and the recovery key's slots remain.
    keyslots = meta["keyslots"]
    assert sorted(keyslots) == sorted(tokens[0]["keyslots"] + tokens[1]["keyslots"])
    assert "0" not in keyslots
    segment = meta["segments"]["0"]
    assert segment["encryption"] == "aes-xts-plain64"
    assert segment["sector_size"] == 4096
    # Labelled new: data-partition formats it, then labels it vn-eid-data (a volume in use
    # is never formatted again).
    dump = subprocess.run(["cryptsetup", "luksDump", str(volume)], capture_output=True, text=True)
    assert re.search(r"^Label:\s+vn-eid-data-new$", dump.stdout, re.M), dump.stdout[:300]
    # The random key never lands on a disk: its directory is gone.
    assert not list(tmp_path.glob("vn-eid-data.*"))

    assert _opens(volume, recovery)
    assert not _opens(volume, recovery.replace(recovery[0], "z" if recovery[0] != "z" else "y", 1))


def test_seal_without_a_reachable_tpm_fails_and_prints_no_key(
    swtpm: Swtpm, volume: Path, tmp_path: Path
) -> None:
    tcti = swtpm.tcti
    swtpm.stop()
    done = _run(["sh", str(DATA_KEY), "seal", str(volume)], _env(tmp_path, tcti))
    assert done.returncode != 0
    assert done.stdout.strip() == ""
    assert not list(tmp_path.glob("vn-eid-data.*"))


def test_usage_errors_are_refused(tmp_path: Path) -> None:
    for args in ([], ["seal"], ["open", "/dev/null"], ["format", "/dev/null"]):
        done = _run(["sh", str(DATA_KEY), *args], {**os.environ, "TMPDIR": str(tmp_path)})
        assert done.returncode == 2
        assert "usage" in done.stderr
