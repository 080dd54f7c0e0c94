"""The image build's parts that run without building an image: the profile, the Python
dependency split against the real uv.lock, the disk layout and its assembly into a file
(read back with sfdisk, mtools and debugfs), GRUB's environment block (read back by GRUB's
own grub-editenv when installed), the SBOM, the flash tool's refusals, and the shell
scripts' syntax. The whole build and the QEMU boot are the slow test_image_build.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from image import bundle, disk, flash, keys, pydeps, sbom
from image.profile import load

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "image"


def test_the_profile_names_what_a_station_runs() -> None:
    profile = load()
    packages = profile.packages()
    needs = ("linux-image-arm64", "raspi-firmware", "chromium", "cage", "rauc", "rauc-service",
             "pcscd", "python3", "nftables", "grub-efi-arm64-bin", "u-boot-rpi")  # fmt: skip
    for needed in needs:
        assert needed in packages
    assert "gcc" not in packages  # compilers only while building, then purged
    assert len(packages) == len(set(packages))
    assert profile.architecture == "arm64"


def test_the_locked_dependencies_split_into_wheels_and_sources() -> None:
    profile = load()
    uv = ROOT / ".tools/bin/uv"
    exported = pydeps.export_locked(ROOT, uv)
    kept, sources = pydeps.binary_requirements(exported, profile)
    names = [name for name, _ in pydeps.split_requirements(kept)]
    assert "nbis-py" not in names  # registry only, x86_64 only
    assert sorted(sources) == sorted(pydeps.normalize(n) for n in profile.build_from_source)
    assert not set(sources) & set(names)
    for needed in ("fastapi", "numpy", "opencv-python-headless", "ai-edge-litert", "pyserial"):
        assert needed in names
    # Every requirement keeps its hashes: uv installs with --require-hashes.
    for _, block in pydeps.split_requirements(kept):
        assert "--hash=sha256:" in block, block
    archives = pydeps.locked_sources(ROOT / "uv.lock", sources)
    assert {a.name for a in archives} == set(sources)
    assert all(len(a.sha256) == 64 and a.url.startswith("https://") for a in archives)


def test_a_profile_naming_a_source_package_the_lock_lacks_is_an_error() -> None:
    profile = load()
    wrong = type(profile)(**{**profile.__dict__, "build_from_source": ("no-such-package",)})
    with pytest.raises(pydeps.DependencyError, match="no-such-package"):
        pydeps.binary_requirements("fastapi==1.0 \\\n    --hash=sha256:00\n", wrong)


def test_the_cached_wheel_matches_name_and_version_only(tmp_path: Path) -> None:
    source = pydeps.SourceArchive("tpm2-pytss", "3.0.0", "https://x/tpm2_pytss-3.0.0.tar.gz", "0")
    (tmp_path / "tpm2_pytss-2.9.0-cp311-cp311-linux_aarch64.whl").write_bytes(b"")
    assert pydeps.cached_wheel(tmp_path, source) is None
    (tmp_path / "tpm2_pytss-3.0.0-cp311-cp311-linux_aarch64.whl").write_bytes(b"")
    found = pydeps.cached_wheel(tmp_path, source)
    assert found is not None
    assert found.name.startswith("tpm2_pytss-3.0.0-")


def test_the_image_file_stays_under_2_gb_and_the_card_holds_both_slots() -> None:
    profile = load()
    layout = disk.Layout(profile.first_offset_mib, profile.boot_mib, profile.root_mib, 0x1234ABCD)
    assert layout.image_mib * disk.MIB < 2 * 10**9
    assert layout.card_min_mib * disk.MIB <= 8 * 2**30  # an 8 GB card is enough
    assert layout.partuuid(2) == "1234abcd-02"
    assert load().disk_id == 0x7E1D2021


def test_assembled_image_reads_back(tmp_path: Path) -> None:
    layout = disk.Layout(first_offset_mib=1, boot_mib=40, root_mib=16, disk_id=0xC0FFEE01)
    boot_tree = tmp_path / "boot"
    (boot_tree / "EFI/BOOT").mkdir(parents=True)
    (boot_tree / "config.txt").write_text("kernel=u-boot.bin\n")
    env = disk.grubenv({"ORDER": "A B", "A_OK": "1", "A_TRY": "0"})
    (boot_tree / "EFI/BOOT/grubenv").write_bytes(env)
    root_tree = tmp_path / "root"
    (root_tree / "etc/vn-eid").mkdir(parents=True)
    (root_tree / "etc/vn-eid/image-version").write_text("test-1\n")
    boot_fs, root_fs, image = tmp_path / "boot.vfat", tmp_path / "root.ext4", tmp_path / "t.img"
    disk.make_vfat(boot_tree, boot_fs, layout.boot_mib, "BOOT", layout.disk_id)
    disk.make_ext4(root_tree, root_fs, layout.root_mib, "vn-eid-root",
                   "0b5e7c1a-8d21-4f0e-9a55-3c2d1e0f9a11")  # fmt: skip
    disk.assemble(layout, boot_fs, root_fs, image)

    assert image.stat().st_size == layout.image_mib * disk.MIB
    parts = disk.partition_table(image)
    assert [p["type"] for p in parts] == ["c", "83", "83"]
    assert parts[0].get("bootable") is True
    sectors = disk.MIB // disk.SECTOR
    assert [p["start"] for p in parts] == [
        layout.boot_start * sectors,
        layout.root_a_start * sectors,
        layout.root_b_start * sectors,
    ]
    # Slot B lies past the end of the file: the card has the room, the file does not.
    assert int(str(parts[2]["start"])) * disk.SECTOR >= image.stat().st_size
    label_id = json.loads(
        subprocess.run(
            ["sfdisk", "--json", str(image)], capture_output=True, text=True, check=True
        ).stdout
    )["partitiontable"]["id"]
    assert label_id == "0xc0ffee01"

    offset = layout.boot_start * disk.MIB
    mtools_env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
    text = subprocess.run(
        ["mtype", "-i", f"{image}@@{offset}", "::config.txt"],
        capture_output=True, text=True, env=mtools_env, check=True,
    ).stdout  # fmt: skip
    assert text == "kernel=u-boot.bin\n"
    # The slot's ext4, cut out of the image, holds the tree.
    slot = tmp_path / "slot.ext4"
    with image.open("rb") as src, slot.open("wb") as dst:
        src.seek(layout.root_a_start * disk.MIB)
        dst.write(src.read(layout.root_mib * disk.MIB))
    version = subprocess.run(["debugfs", "-R", "cat /etc/vn-eid/image-version", str(slot)],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert version == "test-1\n"
    label = subprocess.run(["e2label", str(slot)], capture_output=True, text=True).stdout
    assert label.strip() == "vn-eid-root"


def test_a_root_too_big_for_its_slot_says_what_to_change(tmp_path: Path) -> None:
    tree = tmp_path / "root"
    tree.mkdir()
    (tree / "big").write_bytes(b"\1" * (6 * disk.MIB))
    with pytest.raises(RuntimeError, match="root_mib"):
        disk.make_ext4(tree, tmp_path / "r.ext4", 4, "x", "0b5e7c1a-8d21-4f0e-9a55-3c2d1e0f9a11")


def test_grubenv_block_is_what_grub_reads(tmp_path: Path) -> None:
    block = disk.grubenv({"ORDER": "B A", "A_OK": "1", "B_TRY": "1"})
    assert len(block) == disk.GRUBENV_SIZE
    assert block.startswith(b"# GRUB Environment Block\n")
    assert disk.read_grubenv(block) == {"ORDER": "B A", "A_OK": "1", "B_TRY": "1"}
    with pytest.raises(ValueError, match="1024"):
        disk.grubenv({"X": "y" * 1100})
    editenv = shutil.which("grub-editenv")
    if editenv:  # GRUB's own tool, an independent reader (and writer) of the format
        path = tmp_path / "grubenv"
        path.write_bytes(block)
        listed = subprocess.run([editenv, str(path), "list"], capture_output=True, text=True,
                                check=True).stdout  # fmt: skip
        assert listed.splitlines() == ["ORDER=B A", "A_OK=1", "B_TRY=1"]
        subprocess.run([editenv, str(path), "set", "B_OK=1"], check=True)
        assert disk.read_grubenv(path.read_bytes())["B_OK"] == "1"


def test_sbom_lists_debian_and_python_packages(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(
        "Package: cage\nStatus: install ok installed\nVersion: 0.1.4-4\nArchitecture: arm64\n\n"
        "Package: libfoo1\nStatus: install ok installed\nSource: foo (1.2-1)\n"
        "Version: 1.2-1+b1\nArchitecture: arm64\n\n"
        "Package: removed\nStatus: deinstall ok config-files\nVersion: 1\nArchitecture: all\n"
    )
    site = tmp_path / "site"
    (site / "numpy-2.4.6.dist-info").mkdir(parents=True)
    (site / "numpy-2.4.6.dist-info/METADATA").write_text(
        "Metadata-Version: 2.1\nName: numpy\nVersion: 2.4.6\nLicense-Expression: BSD-3-Clause\n"
    )
    created = datetime(2026, 12, 1, tzinfo=UTC)
    doc = sbom.cyclonedx("vn-eid-station", "0.1.0+t", root, site, created)
    assert doc["bomFormat"] == "CycloneDX"
    assert doc["specVersion"] == "1.5"
    purls = sbom.package_set(doc)
    assert purls == sorted([
        "pkg:deb/debian/cage@0.1.4-4?arch=arm64",
        "pkg:deb/debian/libfoo1@1.2-1+b1?arch=arm64",
        "pkg:pypi/numpy@2.4.6",
    ])  # fmt: skip
    libfoo = next(c for c in doc["components"] if c["name"] == "libfoo1")
    assert libfoo["properties"] == [{"name": "debian:source", "value": "foo"}]
    # The same inputs, the same document (serial number included).
    assert sbom.cyclonedx("vn-eid-station", "0.1.0+t", root, site, created) == doc


def _target(**changes: object) -> flash.Target:
    values: dict[str, object] = {
        "path": "/dev/sdz", "kind": "disk", "size": 32 * 10**9, "removable": True,
        "transport": "usb", "read_only": False, "mountpoints": (), "holds_root": False,
    }  # fmt: skip
    values.update(changes)
    return flash.Target(**values)  # type: ignore[arg-type]


def test_flash_refuses_what_is_not_a_spare_card() -> None:
    need = 6 * 2**30
    assert flash.refusals(_target(), need, fixed_disk=False, in_swap=False) == []
    cases = {
        "not a whole disk": _target(kind="part"),
        "runs from": _target(holds_root=True),
        "mounted": _target(mountpoints=("/media/usb",)),
        "swap": _target(),
        "read-only": _target(read_only=True),
        "neither removable nor on USB": _target(removable=False, transport="sata"),
        "needs at least": _target(size=4 * 10**9),
        "not a station's card": _target(size=2 * 2**40),
    }
    for words, target in cases.items():
        reasons = flash.refusals(target, need, fixed_disk=False, in_swap=words == "swap")
        assert any(words in r for r in reasons), (words, reasons)
    # A technician may insist on a fixed disk (a USB-SATA dock that says it is not USB).
    fixed = _target(removable=False, transport="sata")
    assert flash.refusals(fixed, need, fixed_disk=True, in_swap=False) == []


def test_flash_refuses_this_machines_own_disk() -> None:
    source = subprocess.run(["findmnt", "-n", "-o", "SOURCE", "/"], capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    if not source.startswith("/dev/"):
        pytest.skip(f"/ is on {source!r}, not a block device")
    parent = subprocess.run(["lsblk", "-n", "-d", "-o", "PKNAME", source], capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    own = f"/dev/{parent}" if parent else source
    image = IMAGE / "profile.toml"  # never written: refused before
    result = subprocess.run(
        ["python", "-m", "image.flash", "--device", own, "--image", str(image), "--yes"],
        cwd=ROOT, capture_output=True, text=True,
        env={"PATH": f"{Path(__import__('sys').executable).parent}:/usr/sbin:/usr/bin:/sbin:/bin"},
    )  # fmt: skip
    assert result.returncode == 1
    assert "refusing to write" in result.stderr
    assert "runs from" in result.stderr


def test_flash_writes_and_reads_back_a_zstd_image(tmp_path: Path) -> None:
    raw = tmp_path / "x.img"
    raw.write_bytes(bytes(range(256)) * 40_000 + b"end")
    subprocess.run(["zstd", "-q", str(raw), "-o", str(tmp_path / "x.img.zst")], check=True)
    card = tmp_path / "card"
    card.write_bytes(b"\xff" * (len(raw.read_bytes()) + 4096))
    digest = flash.write_and_verify(tmp_path / "x.img.zst", card, echo=False)
    assert card.read_bytes()[: raw.stat().st_size] == raw.read_bytes()
    import hashlib

    assert digest == hashlib.sha256(raw.read_bytes()).hexdigest()


def test_the_shell_scripts_parse() -> None:
    scripts = [*sorted((IMAGE / "hooks").glob("*.sh")), IMAGE / "host-setup.sh",
               *sorted((IMAGE / "overlay/usr/lib/vn-eid").iterdir())]  # fmt: skip
    for script in scripts:
        assert script.stat().st_mode & 0o111, f"{script} is not executable"
        result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


def test_the_units_name_programs_the_image_has() -> None:
    units = IMAGE / "overlay/etc/systemd/system"
    for unit in sorted(units.glob("*.service")):
        text = unit.read_text()
        for line in text.splitlines():
            if line.startswith("ExecStart="):
                program = line.split("=", 1)[1].split()[0]
                if program.startswith("/usr/lib/vn-eid/"):
                    assert (IMAGE / "overlay" / program.lstrip("/")).is_file(), (unit, program)
    station = (units / "vn-eid-station.service").read_text()
    assert "Type=notify" in station
    assert "WatchdogSec=" in station
    assert "python -m station serve" in station


_BLOCKED_IMPORTS = """
import importlib, importlib.metadata as md, pkgutil, sys
from pathlib import Path
from image import pydeps
from image.profile import load
exported = pydeps.export_locked(Path("."), Path(".tools/bin/uv"))
left = pydeps.left_out(pydeps.parse_export(exported),
                       {pydeps.normalize(n) for n in load().python_exclude})
blocked = {mod for mod, dists in md.packages_distributions().items()
           if all(pydeps.normalize(d) in left for d in dists)}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"left out of the image: {name}")
sys.meta_path.insert(0, Block())
for pkg in ("station", "enrollment", "biometrics"):
    for info in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + "."):
        try:
            importlib.import_module(info.name)
        except ImportError as exc:
            print("FAILED", info.name, exc)
print("BLOCKED", " ".join(sorted(blocked)))
"""


def test_the_station_never_imports_what_the_image_leaves_out() -> None:
    """Every module of the station (and the libraries under it) imports with the registry's
    dependencies missing, as on the device."""
    import sys

    result = subprocess.run([sys.executable, "-c", _BLOCKED_IMPORTS], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "FAILED" not in result.stdout, result.stdout
    blocked = result.stdout.split("BLOCKED", 1)[1].split()
    for module in ("boto3", "onnxruntime", "psycopg", "sqlalchemy", "nbis"):
        assert module in blocked  # the test blocks what the profile leaves out


def test_update_bundles_verify_only_against_their_signing_ca(tmp_path: Path) -> None:
    tree = tmp_path / "root"
    (tree / "etc/vn-eid").mkdir(parents=True)
    (tree / "etc/vn-eid/image-version").write_text("0.2.0+t\n")
    (tree / "payload").write_bytes(bytes(range(256)) * 4096)  # squashfs needs > 4 KiB
    root_fs = tmp_path / "root.ext4"
    disk.make_ext4(tree, root_fs, 8, "vn-eid-root", "0b5e7c1a-8d21-4f0e-9a55-3c2d1e0f9a11")
    ours = keys.make_development_keys(tmp_path / "keys")
    made = bundle.make_bundle(root_fs, "0.2.0+t", ours, tmp_path / "u.raucb")
    shown = bundle.info(made, ours.ca)
    assert "RAUC_MF_COMPATIBLE='vn-eid-station-rpi4'" in shown
    assert "RAUC_MF_VERSION='0.2.0+t'" in shown
    # Made again with the same folder: the same CA (a station's keyring keeps working).
    assert keys.make_development_keys(tmp_path / "keys").ca.read_bytes() == ours.ca.read_bytes()

    # Signed by someone else's CA: refused.
    other = keys.make_development_keys(tmp_path / "other", "someone else")
    forged = bundle.make_bundle(root_fs, "0.2.0+t", other, tmp_path / "forged.raucb")
    with pytest.raises(bundle.BundleError, match="signature"):
        bundle.info(forged, ours.ca)
    # Changed after signing: refused. (A verity bundle's signed manifest sits at its end and
    # holds the root hash of the payload; a changed payload block fails dm-verity when the
    # station installs it, which the QEMU update test covers.)
    tampered = tmp_path / "tampered.raucb"
    data = bytearray(made.read_bytes())
    data[-200] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(bundle.BundleError):
        bundle.info(tampered, ours.ca)
    # Not signed at all (a bare squashfs of the content): refused.
    unsigned = tmp_path / "unsigned.raucb"
    content = tmp_path / "content"
    content.mkdir()
    (content / "manifest.raucm").write_text(bundle.manifest("0.2.0+t"))
    shutil.copy2(root_fs, content / "root.ext4")
    subprocess.run(["mksquashfs", str(content), str(unsigned), "-quiet", "-noappend"],
                   check=True, capture_output=True)  # fmt: skip
    with pytest.raises(bundle.BundleError):
        bundle.info(unsigned, ours.ca)
