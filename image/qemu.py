"""Boot a built image under QEMU (``virt`` machine, cortex-a72, EDK2 firmware) and wait
for the health check's console line: the station service answers and the kiosk runs.

    python -m image.qemu [--image build/image/vn-eid-station-*.img] [--timeout 1500]
                        [--passphrase PASSPHRASE]

The image is booted the way a card is: a copy grown to a card's size (slot B and the
data partition need the room), EDK2 starting GRUB from the FAT partition, GRUB booting
root slot A's own kernel. The guest has no TPM, so the data partition asks for a
passphrase on the serial console, which this types. Everything the guest prints there is
kept in ``console-*.log`` beside the copy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from image import disk
from image.build import newest_artefact

EFI_FIRMWARE = Path("/usr/share/qemu-efi-aarch64/QEMU_EFI.fd")
# What the data partition script asks on the console (systemd's password agent).
ASK = "VN-EID-ASK "
# The throwaway card copy's passphrase: nothing real is ever behind it.
DEFAULT_PASSPHRASE = "qemu test passphrase"  # noqa: S105
HEALTH = re.compile(r"VN-EID-HEALTH (?P<result>\S+) (?P<fields>.*)")
EVENT = re.compile(r"VN-EID-[A-Z]+ .*")
RECOVERY = re.compile(r"VN-EID-RECOVERY-KEY (?P<key>[a-z]{8}(?:-[a-z]{8}){7})")
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
    result: str = "timeout"  # of the last health line: ok, failed, rollback, or why none
    fields: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    milestones: dict[str, float] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)  # every VN-EID-* console line
    exited: bool = False  # the guest rebooted or powered off (QEMU runs with -no-reboot)
    console: Path | None = None
    asked: int = 0  # passphrase prompts answered
    recovery_key: str | None = None  # shown once on the console when the TPM seals the key

    @property
    def ok(self) -> bool:
        return self.result == "ok"


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


def qemu_command(
    card: Path,
    console: Path,
    qmp: Path,
    serial: Path,
    stick: Path | None = None,
    memory_mib: int = 3072,
) -> list[str]:
    """The serial console is a socket (the test answers passphrase prompts through it)
    and is logged to ``console``. No TPM: Debian's arm64 kernel has no driver for QEMU's
    memory-mapped one (CONFIG_TCG_TIS), only the SPI one a Pi's TPM board uses."""
    if not EFI_FIRMWARE.is_file():
        raise FileNotFoundError(f"{EFI_FIRMWARE}: apt-get install qemu-efi-aarch64")
    command = [
        "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-smp", "2",
        "-m", str(memory_mib), "-accel", "tcg,thread=multi",
        "-bios", str(EFI_FIRMWARE),
        "-drive", f"file={card},if=virtio,format=raw,cache=unsafe",
        "-device", "virtio-gpu-pci", "-display", "none",
        "-device", "virtio-keyboard-pci", "-device", "virtio-tablet-pci",
        "-netdev", "user,id=n0,restrict=on",
        # No network boot ROM (ipxe-qemu): EDK2 boots from the card.
        "-device", "virtio-net-pci,netdev=n0,romfile=",
        "-chardev", f"socket,id=serial0,path={serial},server=on,wait=off,logfile={console}",
        "-serial", "chardev:serial0",
        "-qmp", f"unix:{qmp},server=on,wait=off", "-monitor", "none", "-no-reboot",
    ]  # fmt: skip
    if stick is not None:  # a USB stick, as a technician plugs one in
        command += [
            "-device", "qemu-xhci,id=xhci",
            "-drive", f"if=none,id=stick,format=raw,file={stick}",
            "-device", "usb-storage,bus=xhci.0,drive=stick",
        ]  # fmt: skip
    return command


class SerialLine:
    """The guest's serial console as a socket: drained all the time by a thread (the
    guest's UART waits while QEMU cannot hand its bytes on; QEMU's logfile keeps them),
    written to when a prompt needs an answer."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock: socket.socket | None = None
        self._reader: threading.Thread | None = None

    def poll(self) -> None:
        """Connect once QEMU listens; the thread then reads until the socket closes."""
        if self.sock is not None or not self.path.exists():
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.path))
        except OSError:
            sock.close()
            return
        self.sock = sock
        self._reader = threading.Thread(target=self._drain, args=(sock,), daemon=True)
        self._reader.start()

    @staticmethod
    def _drain(sock: socket.socket) -> None:
        try:
            while sock.recv(65536):
                pass
        except OSError:
            pass

    def send(self, text: str) -> None:
        self.poll()
        if self.sock is None:
            raise RuntimeError("the serial console is not connected")
        self.sock.sendall(text.encode())

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
            self.sock = None
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None


def usb_stick(bundles: list[Path], target: Path, size_mib: int = 0) -> Path:
    """A FAT USB stick image holding ``vn-eid-update/<bundle>`` for each bundle."""
    tree = target.parent / (target.name + ".tree")
    if tree.exists():
        shutil.rmtree(tree)
    (tree / "vn-eid-update").mkdir(parents=True)
    for bundle in bundles:
        (tree / "vn-eid-update" / bundle.name).hardlink_to(bundle)
    needed = sum(b.stat().st_size for b in bundles) // disk.MIB + 64
    disk.make_vfat(tree, target, max(size_mib, needed), "UPDATE", 0x5EED0001)
    shutil.rmtree(tree)
    return target


def _powerdown(qmp: Path) -> None:
    """Press the virtual power button (ACPI): the guest shuts down cleanly."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(qmp))
        sock.recv(65536)  # greeting
        for command in ({"execute": "qmp_capabilities"}, {"execute": "system_powerdown"}):
            sock.sendall(json.dumps(command).encode() + b"\n")
            sock.recv(65536)


def boot(
    card: Path,
    timeout_s: float,
    *,
    stick: Path | None = None,
    until: str = "health",
    echo: bool = True,
    passphrase: str | None = None,
) -> BootResult:
    """Boot the card once. ``until="health"``: stop at the first health line (ok or
    failed); ``until="VN-EID-..."``: stop at the first console event starting so;
    ``until="exit"``: run until the guest reboots or powers off by itself (an update, a
    rollback). Also stops at the timeout. A guest still running is powered off cleanly.

    ``passphrase``: typed at each of the data partition's prompts on the serial console
    (a station without a TPM chooses it at first boot and is asked it at every start);
    without one, a prompt ends the boot with result "passphrase-asked"."""
    stamp = time.strftime("%H%M%S")
    console = card.parent / f"console-{stamp}.log"
    qmp = card.parent / f"qmp-{stamp}.sock"
    serial_path = card.parent / f"serial-{stamp}.sock"
    console.write_bytes(b"")
    qmp.unlink(missing_ok=True)
    serial_path.unlink(missing_ok=True)
    result = BootResult(console=console)
    started = time.monotonic()
    proc = subprocess.Popen(
        qemu_command(card, console, qmp, serial_path, stick),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    serial = SerialLine(serial_path)
    seen = 0
    done = False
    try:
        while not done and time.monotonic() - started < timeout_s:
            time.sleep(1)
            serial.poll()
            text = console.read_text(errors="replace")
            # A prompt waits on a line of its own that is not finished yet.
            prompts = text.count(ASK)
            if prompts > result.asked:
                if passphrase is None:
                    result.result = "passphrase-asked"
                    break
                serial.send(passphrase + "\n")
                result.asked = prompts
                if echo:
                    print(f"  {time.monotonic() - started:6.0f} s  passphrase typed", flush=True)
            end = text.rfind("\n") + 1  # whole lines only: the last may be half written
            for line in text[seen:end].splitlines():
                clean = line.strip()
                elapsed = time.monotonic() - started
                for name, marker in MILESTONES.items():
                    if name not in result.milestones and marker in clean:
                        result.milestones[name] = round(elapsed, 1)
                        if echo:
                            print(f"  {elapsed:6.0f} s  {name}: {clean[:100]}", flush=True)
                recovery = RECOVERY.search(clean)
                if recovery:
                    result.recovery_key = recovery["key"]
                    continue  # a secret: not echoed, not an event
                event = EVENT.search(clean)
                if event and not event.group(0).startswith(ASK):
                    result.events.append(event.group(0))
                    if until.startswith("VN-EID-") and event.group(0).startswith(until):
                        done = True
                    if echo:
                        print(f"  {elapsed:6.0f} s  {event.group(0)}", flush=True)
                match = HEALTH.search(clean)
                if match:
                    result.result = match["result"]
                    result.fields = dict(
                        kv.split("=", 1) for kv in match["fields"].split() if "=" in kv
                    )
                    result.seconds = round(elapsed, 1)
                    if until == "health" and result.result in ("ok", "failed"):
                        done = True
            seen = end
            if proc.poll() is not None:
                result.exited = True
                if proc.returncode != 0:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    result.result = f"qemu-exited-{proc.returncode}"
                    result.fields = {"stderr": err[-2000:]}
                break
        if not result.seconds:
            result.seconds = round(time.monotonic() - started, 1)
        return result
    finally:
        serial.close()
        if proc.poll() is None:
            try:
                _powerdown(qmp)
                proc.wait(180)
            except (OSError, subprocess.TimeoutExpired):
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        qmp.unlink(missing_ok=True)
        serial_path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m image.qemu",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--image", type=Path, help="default: the newest in build/image")
    parser.add_argument("--work", type=Path, default=Path("build/image/qemu"))
    parser.add_argument("--timeout", type=float, default=1500)
    parser.add_argument(
        "--passphrase",
        default=DEFAULT_PASSPHRASE,
        help="typed at the data partition's prompts (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    image = args.image or newest_artefact(Path("build/image"))
    if shutil.which("qemu-system-aarch64") is None:
        print("qemu-system-aarch64 missing: apt-get install qemu-system-arm", file=sys.stderr)
        return 2
    print(f"booting {image} under QEMU (virt, 2 vCPUs, TCG)", flush=True)
    card = card_copy(image, args.work)
    result = boot(card, args.timeout, passphrase=args.passphrase)
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
