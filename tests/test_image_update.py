"""Updates of a booted image under QEMU (slow suite, as root): a signed bundle on a USB
stick is installed into the other slot and the station comes up from it; a bundle whose
system fails its health check rolls back to the slot it came from; a bundle signed by
another CA, or older than the running release, is refused and nothing changes. Boots the
image ``make image`` built (or ``VN_EID_IMAGE``) several times: about half an hour under
emulation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from image import bundle, qemu
from image.keys import SigningKeys, make_development_keys

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(7200)]


def _built() -> tuple[Path, Path, SigningKeys, str]:
    """The image, its root slot file system, its signing keys and its version."""
    summary_file = ROOT / "build/image/build.json"
    given = os.environ.get("VN_EID_IMAGE")
    if not summary_file.exists() and not given:
        pytest.fail("no image built: make image (or VN_EID_IMAGE=...)")
    summary = json.loads(summary_file.read_text())
    image = Path(given or summary["image"])
    root_fs = image.with_suffix(".root.ext4")
    return image, root_fs, SigningKeys.in_folder(ROOT / "build/image/keys"), summary["version"]


def _broken_root(root_fs: Path, target: Path) -> Path:
    """The same system, except that its station service exits at once: a release that
    does not come up. Its health check gives up after three minutes."""
    shutil.copy2(root_fs, target)
    drop_ins = {
        "/etc/systemd/system/vn-eid-station.service.d/broken.conf":
            "[Service]\nExecStart=\nExecStart=/bin/false\n",
        "/etc/systemd/system/vn-eid-health.service.d/limit.conf":
            "[Service]\nEnvironment=VN_EID_HEALTH_LIMIT_S=180\n",
    }  # fmt: skip
    for path, text in drop_ins.items():
        local = target.parent / Path(path).name
        local.write_text(text)
        parent = str(Path(path).parent)
        for command in (f"mkdir {parent}", f"write {local} {path}"):
            subprocess.run(["debugfs", "-w", "-R", command, str(target)],
                           check=True, capture_output=True)  # fmt: skip
    return target


def _unsigned_bundle(root_fs: Path, version: str, target: Path) -> Path:
    """A bundle's content (manifest and root image) without RAUC's signature: a bare
    squashfs, what someone without the signing key could make."""
    content = target.parent / (target.name + ".content")
    content.mkdir()
    (content / "manifest.raucm").write_text(bundle.manifest(version))
    (content / "root.ext4").hardlink_to(root_fs)
    subprocess.run(["mksquashfs", str(content), str(target), "-quiet", "-noappend"],
                   check=True, capture_output=True)  # fmt: skip
    shutil.rmtree(content)
    return target


def test_signed_update_then_a_failing_one_rolls_back_and_a_forged_one_is_refused(
    tmp_path: Path,
) -> None:
    image, root_fs, keys, version = _built()
    card = qemu.card_copy(image, tmp_path)
    good = bundle.make_bundle(root_fs, f"{version}.u1", keys, tmp_path / "good.raucb")
    bad_root = _broken_root(root_fs, tmp_path / "broken.ext4")
    bad = bundle.make_bundle(bad_root, f"{version}.broken", keys, tmp_path / "bad.raucb")
    other = make_development_keys(tmp_path / "other-ca", "someone else")
    forged = bundle.make_bundle(root_fs, f"{version}.forged", other, tmp_path / "forged.raucb")
    older = bundle.make_bundle(root_fs, "0.0.1", keys, tmp_path / "older.raucb")
    unsigned = _unsigned_bundle(root_fs, f"{version}.unsigned", tmp_path / "unsigned.raucb")

    def boot(stick: list[Path] | None, until: str) -> qemu.BootResult:
        medium = qemu.usb_stick(stick, tmp_path / "stick.img") if stick else None
        result = qemu.boot(
            card, 1800, stick=medium, until=until, passphrase=qemu.DEFAULT_PASSPHRASE
        )
        assert result.console is not None
        print(f"boot: {result.result} {result.fields} events={result.events}")
        return result

    first = boot(None, "health")  # first boot: the data partition, slot A
    assert first.ok, first.console.read_text(errors="replace")[-3000:] if first.console else ""
    assert first.fields["slot"] == "A"

    # A signed bundle on a stick: installed into B, then a reboot into it.
    installing = boot([good], "exit")
    assert installing.exited
    assert any(e.startswith("VN-EID-UPDATE installed") for e in installing.events)
    on_b = boot([good], "VN-EID-UPDATE done")  # the stick still in: not tried again
    assert on_b.ok
    assert on_b.fields["slot"] == "B"
    assert on_b.fields["version"] == version  # the bundle's root is the same system
    assert any("already-tried" in e for e in on_b.events)
    assert qemu.get_grubenv(card)["ORDER"].startswith("B")

    # A release that does not come up: installed into A, tried once, marked bad, and the
    # station goes back to B by itself.
    installing = boot([bad], "exit")
    assert any(e.startswith("VN-EID-UPDATE installed") for e in installing.events)
    failing = boot(None, "exit")
    assert failing.fields.get("slot") == "A"
    assert any(e.startswith("VN-EID-HEALTH failed") for e in failing.events)
    assert any(e.startswith("VN-EID-HEALTH rollback") for e in failing.events)
    back = boot(None, "health")
    assert back.ok
    assert back.fields["slot"] == "B"
    assert qemu.get_grubenv(card)["A_OK"] == "0"

    # Signed by another CA, or not signed at all: both refused before anything is written
    # (one stick, both bundles); still on B.
    refused = boot([forged, unsigned], "VN-EID-UPDATE done")
    assert refused.ok
    assert refused.fields["slot"] == "B"
    refusals = [e for e in refused.events if e.startswith("VN-EID-UPDATE refused")]
    assert {e.split()[2] for e in refusals} == {"file=forged.raucb", "file=unsigned.raucb"}, (
        refused.events
    )
    assert qemu.get_grubenv(card)["A_OK"] == "0"

    # Properly signed but older than what runs: refused (no going back to a release with
    # known holes from a stick).
    downgrade = boot([older], "VN-EID-UPDATE done")
    assert downgrade.fields["slot"] == "B"
    assert any("not newer" in e for e in downgrade.events), downgrade.events
