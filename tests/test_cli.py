"""`python -m enrollment`: inspect, verify, keygen, schema, as a technician runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from enrollment.keys.software import write_private_key
from enrollment.package import build_package
from enrollment.record import EnrollmentRecord
from tests.pkgkit import Kit, example, make_kit

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enrollment", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Kit, Path, Path, Path]:
    kit = make_kit()
    tmp = tmp_path_factory.mktemp("cli")
    trust = tmp / "trust"
    trust.mkdir()
    (trust / "station-ca.pem").write_bytes(kit.ca_cert.public_bytes(serialization.Encoding.PEM))
    key = tmp / "registry.pem"
    write_private_key(key, kit.registry_key)
    record, tx = example(11)
    built = build_package(record, tx, signer=kit.signer, recipient=kit.decryptor.public_key())
    pkg = tmp / "p.vneid"
    pkg.write_bytes(built.data)
    return kit, pkg, trust, key


def test_verify_valid(setup: tuple[Kit, Path, Path, Path]) -> None:
    _, pkg, trust, key = setup
    result = run("verify", pkg, "--trust", trust, "--key", key)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("VALID ")
    as_json = json.loads(run("verify", pkg, "--trust", trust, "--key", key, "--json").stdout)
    assert as_json["valid"] is True
    assert as_json["station"] == "HN-BD-001"


def test_verify_tampered(setup: tuple[Kit, Path, Path, Path], tmp_path: Path) -> None:
    _, pkg, trust, key = setup
    data = bytearray(pkg.read_bytes())
    data[-40] ^= 0xFF
    bad = tmp_path / "bad.vneid"
    bad.write_bytes(bytes(data))
    result = run("verify", bad, "--trust", trust, "--key", key)
    assert result.returncode == 1
    assert result.stderr.startswith("REJECTED decryption-failed:")
    as_json = json.loads(run("verify", bad, "--trust", trust, "--key", key, "--json").stdout)
    assert as_json == {"valid": False, "error": "decryption-failed", "message": as_json["message"]}


def test_verify_untrusted_and_wrong_key(
    setup: tuple[Kit, Path, Path, Path], tmp_path: Path
) -> None:
    _, pkg, _, key = setup
    empty = tmp_path / "empty-trust"
    empty.mkdir()
    result = run("verify", pkg, "--trust", empty, "--key", key)
    assert result.returncode == 1
    assert "REJECTED unknown-signer" in result.stderr
    other = tmp_path / "other.pem"
    assert run("keygen", other).returncode == 0
    result = run("verify", pkg, "--trust", empty, "--key", other)
    assert result.returncode == 1
    assert "REJECTED wrong-recipient" in result.stderr


def test_key_file_readable_by_others_is_refused(
    setup: tuple[Kit, Path, Path, Path], tmp_path: Path
) -> None:
    _, pkg, trust, key = setup
    loose = tmp_path / "loose.pem"
    loose.write_bytes(key.read_bytes())
    loose.chmod(0o644)
    result = run("verify", pkg, "--trust", trust, "--key", loose)
    assert result.returncode == 2
    assert "chmod 600" in result.stderr


def test_inspect_never_prints_biometric_bytes(setup: tuple[Kit, Path, Path, Path]) -> None:
    _, pkg, trust, key = setup
    header_only = run("inspect", pkg)
    assert header_only.returncode == 0
    assert "give --key" in header_only.stdout
    full = run("inspect", pkg, "--key", key, "--trust", trust)
    assert full.returncode == 0, full.stderr
    out = full.stdout
    assert "signature    valid, station HN-BD-001" in out
    assert "10 left little" in out
    assert "10 x Type-14 finger, 1 x Type-10 face" in out
    # No image bytes: the output is short, printable text without WSQ/JPEG markers.
    assert len(out) < 5000
    assert all(c.isprintable() or c == "\n" for c in out)
    assert "\xff\xa0" not in out
    assert "JFIF" not in out
    unverified = run("inspect", pkg, "--key", key)
    assert "NOT checked" in unverified.stdout


def test_inspect_not_a_package(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello")
    result = run("inspect", junk)
    assert result.returncode == 1
    assert "REJECTED malformed" in result.stderr


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    key = tmp_path / "k.pem"
    assert run("keygen", key).returncode == 0
    assert (key.stat().st_mode & 0o777) == 0o600
    assert (tmp_path / "k.pub.pem").exists()
    again = run("keygen", key)
    assert again.returncode == 2
    assert "refusing to overwrite" in again.stderr


def test_exported_schema_is_current() -> None:
    exported = json.loads((ROOT / "docs/schema/enrollment-record.v1.json").read_text())
    assert exported == EnrollmentRecord.model_json_schema(), "run `make schema`"
