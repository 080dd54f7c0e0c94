"""Boot a built image under QEMU (``virt`` machine, cortex-a72, EDK2 firmware) and wait
for the health check's console line: the station service answers and the kiosk runs.

    python -m image.qemu [--image build/image/vn-eid-station-*.img] [--timeout 1500]

The image is booted the way a card is: a copy grown to a card's size (slot B and the
data partition need the room), EDK2 starting GRUB from the FAT partition, GRUB booting
root slot A's own kernel. Everything the guest prints on its serial console is kept in
``console.log`` beside the copy.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from image import disk

EFI_FIRMWARE = Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")
HEALTH = re.compile(r"VN-EID-HEALTH (?P<result>\S+) (?P<fields>.*)")
CARD_GIB = 8
# The guest has no GPU: wlroots draws the kiosk in software.
SOFTWARE_DISPLAY = "systemd.setenv=WLR_RENDERER=pixman"
MILESTONES = {
    "firmware": "UEFI firmware",
    "grub": "vn-eid: booting slot",
    "kernel": "Booting Linux on physical CPU",
    "systemd": "systemd[1]: ",
    "data": "vn-eid-data: mounted",
}


@dataclass
class BootResult:
    result: str = "timeout"
    fields: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    milestones: dict[str, float] = field(default_factory=dict)
    console: Path | None = None

    @property
    def ok(self) -> bool:
        return self.result == "ok"


def latest_image(folder: Path) -> Path:
    images = sorted(folder.glob("vn-eid-station-*.img"), key=lambda p: p.stat().st_mtime)
    if not images:
        raise FileNotFoundError(f"no vn-eid-station-*.img in {folder}: run make image first")
    return images[-1]


def card_copy(image: Path, work: Path, extra_cmdline: str = SOFTWARE_DISPLAY) -> Path:
    """A throwaway copy of the image grown to a card's size, with ``extra_cmdline`` in
    GRUB's environment (how the test asks for software rendering)."""
    work.mkdir(parents=True, exist_ok=True)
    card = work / "card.img"
    subprocess.run(["cp", "--sparse=always", str(image), str(card)], check=True)
    with card.open("r+b") as fh:
        fh.truncate(CARD_GIB * 2**30)
    set_grubenv(card, {"EXTRA_CMDLINE": extra_cmdline})
    return card


def _boot_offset(card: Path) -> int:
    first = disk.partition_table(card)[0]
    return int(str(first["start"])) * disk.SECTOR


def get_grubenv(card: Path) -> dict[str, str]:
    offset = _boot_offset(card)
    data = subprocess.run(
        ["mtype", "-i", f"{card}@@{offset}", "::EFI/BOOT/grubenv"],
        check=True, capture_output=True, env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"},
    ).stdout  # fmt: skip
    return disk.read_grubenv(data)


def set_grubenv(card: Path, changes: dict[str, str]) -> None:
    """Change GRUB's environment block on the card's FAT partition (as RAUC does)."""
    values = get_grubenv(card)
    values.update(changes)
    offset = _boot_offset(card)
    block = card.parent / "grubenv"
    block.write_bytes(disk.grubenv(values))
    subprocess.run(
        ["mcopy", "-o", "-i", f"{card}@@{offset}", str(block), "::EFI/BOOT/grubenv"],
        check=True, env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def qemu_command(card: Path, console: Path, memory_mib: int = 3072) -> list[str]:
    if not EFI_FIRMWARE.is_file():
        raise FileNotFoundError(f"{EFI_FIRMWARE}: apt-get install qemu-efi-aarch64")
    return [
        "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2",
        "-m", str(memory_mib), "-accel", "tcg,thread=multi",
        "-bios", str(EFI_FIRMWARE),
        "-drive", f"file={card},if=virtio,format=raw,cache=unsafe",
        "-device", "virtio-gpu-pci", "-display", "none",
        "-device", "virtio-keyboard-pci", "-device", "virtio-tablet-pci",
        "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0",
        "-chardev", f"file,id=serial0,path={console}", "-serial", "chardev:serial0",
        "-monitor", "none", "-no-reboot",
    ]  # fmt: skip


def boot(card: Path, timeout_s: float, echo: bool = True) -> BootResult:
    """Boot the card once, until the health line (or the timeout, or QEMU's exit)."""
    console = card.parent / f"console-{int(time.time())}.log"
    console.write_bytes(b"")
    result = BootResult(console=console)
    started = time.monotonic()
    proc = subprocess.Popen(
        qemu_command(card, console), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    seen = 0
    try:
        while time.monotonic() - started < timeout_s:
            time.sleep(1)
            text = console.read_text(errors="replace")
            end = text.rfind("\n") + 1  # whole lines only: the last may be half written
            for line in text[seen:end].splitlines():
                clean = line.strip()
                elapsed = time.monotonic() - started
                for name, marker in MILESTONES.items():
                    if name not in result.milestones and marker in clean:
                        result.milestones[name] = round(elapsed, 1)
                        if echo:
                            print(f"  {elapsed:6.0f} s  {name}: {clean[:100]}", flush=True)
                match = HEALTH.search(clean)
                if match:
                    result.result = match["result"]
                    result.fields = dict(
                        kv.split("=", 1) for kv in match["fields"].split() if "=" in kv
                    )
                    result.seconds = round(elapsed, 1)
                    if echo:
                        print(f"  {elapsed:6.0f} s  {clean}", flush=True)
                    return result
            seen = end
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                result.result = f"qemu-exited-{proc.returncode}"
                result.fields = {"stderr": err[-2000:]}
                return result
        result.seconds = round(time.monotonic() - started, 1)
        return result
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m image.qemu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--image", type=Path, help="default: the newest in build/image")
    parser.add_argument("--work", type=Path, default=Path("build/image/qemu"))
    parser.add_argument("--timeout", type=float, default=1500)
    args = parser.parse_args(argv)
    image = args.image or latest_image(Path("build/image"))
    if shutil.which("qemu-system-aarch64") is None:
        print("qemu-system-aarch64 missing: apt-get install qemu-system-arm", file=sys.stderr)
        return 2
    print(f"booting {image} under QEMU (virt, 2 vCPUs, TCG)", flush=True)
    card = card_copy(image, args.work)
    result = boot(card, args.timeout)
    summary = {
        "result": result.result, "seconds": result.seconds, "fields": result.fields,
        "milestones": result.milestones, "console": str(result.console),
    }  # fmt: skip
    (args.work / "boot.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    if not result.ok:
        print(f"boot test failed: {result.result}; console: {result.console}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
