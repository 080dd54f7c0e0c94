"""The station's devices, built from its configuration, and their health in one place.

    settings = StationSettings()
    with StationDevices(settings) as devices:
        devices.gpio.light.ready()
        capture = devices.scanner.capture_roll(finger_hint=2)
        ...
        devices.board.as_json()       # what the status bar and the technician page show

Backends come from the configuration only: a simulated section starts its simulator (the
scanner emulator on a pty, a private pcscd with the card emulator) and then hands the
same real driver to the rest of the station. A device that cannot be opened does not stop
the others: its health cell says why, and :meth:`StationDevices.retry` tries it again
(a technician plugs the scanner in; the station carries on).
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from station.config import StationSettings
from station.drivers.camera import Camera, CameraError, make_camera
from station.drivers.camera.sim_control import CameraControlServer
from station.drivers.camera.simulated import SimulatedCamera
from station.drivers.card.bay import CardBay, PcscDaemon, pcscd_unavailable, use_pcscd
from station.drivers.card.encoder import CardEncoder
from station.drivers.card.errors import CardEncoderError
from station.drivers.fingerprint.errors import ScannerError
from station.drivers.fingerprint.scanner import FingerprintScanner
from station.drivers.fingerprint.sim_control import SimulatorProcess
from station.drivers.gpio import GpioDevices, GpioError, open_gpio
from station.drivers.health import DeviceHealthBoard, DeviceKind, HealthCell

log = logging.getLogger(__name__)
T = TypeVar("T")


class DeviceUnavailableError(RuntimeError):
    """A device the caller asked for is not open; its health cell says why."""


class StationDevices:
    """Owns every device driver (and simulator) of one station process."""

    def __init__(
        self,
        settings: StationSettings,
        board: DeviceHealthBoard | None = None,
        *,
        pcscd: PcscDaemon | None = None,
    ) -> None:
        self.settings = settings
        self.board = board or DeviceHealthBoard()
        self._given_pcscd = pcscd
        """A simulated card bay on this private pcscd instead of starting one (a process
        talks to one pcscd for its life: tests that share theirs pass it here)."""
        self._scanner: FingerprintScanner | None = None
        self._scanner_sim: SimulatorProcess | None = None
        self._camera: Camera | None = None
        self._encoder: CardEncoder | None = None
        self._gpio: GpioDevices | None = None
        self.pcscd: PcscDaemon | None = None
        self._camera_control: CameraControlServer | None = None
        self.card_bay: CardBay | None = None
        """The simulated card bay (insert and remove emulated cards), when configured."""

    # --- lifecycle -----------------------------------------------------------------------

    def open(self) -> StationDevices:
        """Open every device; failures are recorded in the health board, not raised.
        Should anything escape anyway, whatever was started is stopped first."""
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._open_each(everything=True)
        except BaseException:
            self.close()
            raise
        return self

    def retry(self) -> None:
        """Try again the devices that are not open (after a replug, say)."""
        self._open_each(everything=False)

    def _open_each(self, *, everything: bool) -> None:
        steps = (
            ("gpio", DeviceKind.GPIO, self.settings.gpio.backend, self._open_gpio,
             self._gpio is None),
            ("fingerprint", DeviceKind.FINGERPRINT, self.settings.scanner.backend,
             self._open_scanner, self._scanner is None or not self._scanner.is_open),
            ("camera", DeviceKind.CAMERA, self.settings.camera.backend, self._open_camera,
             self._camera is None or not self._camera.is_open),
            ("card_encoder", DeviceKind.CARD_ENCODER, self.settings.card.backend,
             self._open_card, self._encoder is None),
        )  # fmt: skip
        for name, kind, backend, opener, needed in steps:
            if not (everything or needed):
                continue
            try:
                opener()
            except Exception as exc:  # a library error a backend does not translate
                log.exception("opening the %s failed", name)
                self._absent(name, kind, backend, f"could not open: {exc!r}")

    def close(self) -> None:
        """Close everything, simulators last; safe to call twice."""
        for closer in (self._close_camera, self._close_scanner, self._close_card, self._close_gpio):
            try:
                closer()
            except Exception:  # closing must go on to the next device
                log.exception("closing a device failed")

    def __enter__(self) -> StationDevices:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the devices ---------------------------------------------------------------------

    @property
    def scanner(self) -> FingerprintScanner:
        return self._need(self._scanner, "fingerprint")

    @property
    def camera(self) -> Camera:
        camera = self._camera
        return self._need(camera if camera is not None and camera.is_open else None, "camera")

    @property
    def encoder(self) -> CardEncoder:
        return self._need(self._encoder, "card_encoder")

    @property
    def gpio(self) -> GpioDevices:
        return self._need(self._gpio, "gpio")

    @property
    def scanner_simulator(self) -> SimulatorProcess | None:
        """The simulated scanner's process (steer it through ``.control``), if configured."""
        return self._scanner_sim

    def _need(self, device: T | None, name: str) -> T:
        if device is None:
            try:
                why = self.board.get(name).last_error or "not opened"
            except KeyError:
                why = "not opened"
            raise DeviceUnavailableError(f"the {name.replace('_', ' ')} is not available: {why}")
        return device

    def _absent(self, name: str, kind: DeviceKind, backend: str, reason: str) -> None:
        """Record a device that could not be opened: on its driver's own cell when the
        driver was built, else on a stand-in so that the board still lists it."""
        try:
            cell = self.board.cell(name)
        except KeyError:
            cell = self.board.register(HealthCell(name, kind, backend))
        cell.absent(reason)

    # --- GPIO ----------------------------------------------------------------------------

    def _open_gpio(self) -> None:
        self.board.unregister("gpio")
        try:
            self._gpio = open_gpio(self.settings.gpio, self.board)
        except GpioError as exc:
            log.warning("GPIO unavailable: %s", exc)
            self._gpio = None

    def _close_gpio(self) -> None:
        gpio, self._gpio = self._gpio, None
        if gpio is not None:
            gpio.close()

    # --- fingerprint scanner -------------------------------------------------------------

    def _scanner_port(self) -> str:
        s = self.settings.scanner
        if s.backend == "simulated" and s.port.startswith("/dev/"):
            return str(self.settings.run_dir / "fingerprint")  # never shadow a real device
        return s.port

    def _open_scanner(self) -> None:
        s = self.settings.scanner
        port = self._scanner_port()
        if s.backend == "simulated" and self._scanner_sim is None:
            sim = s.simulator
            self._scanner_sim = SimulatorProcess(
                Path(port),
                seed=sim.seed,
                person=sim.person,
                baud=s.baudrate,
                transport=sim.transport,
                pace=sim.pace,
                stream_packet_size=s.stream_packet_size,
                fps=sim.fps,
            )
            try:
                self._scanner_sim.start()
            except RuntimeError as exc:
                self._scanner_sim = None
                self._absent("fingerprint", DeviceKind.FINGERPRINT, "simulated", str(exc))
                return
        if self._scanner is None:
            self.board.unregister("fingerprint")
            self._scanner = FingerprintScanner(
                port,
                baudrate=s.baudrate,
                password=s.password,
                timeout=s.timeout_s,
                stream_packet_size=s.stream_packet_size,
                board=self.board,
            )
        try:
            self._scanner.open()
        except ScannerError as exc:
            log.warning("fingerprint scanner unavailable: %s", exc)

    def _close_scanner(self) -> None:
        scanner, self._scanner = self._scanner, None
        if scanner is not None:
            scanner.close()
        sim, self._scanner_sim = self._scanner_sim, None
        if sim is not None:
            sim.stop()

    # --- camera --------------------------------------------------------------------------

    @property
    def camera_control_path(self) -> Path:
        """The simulated camera's control socket (who sits in front of it)."""
        return self.settings.run_dir / "camera-control"

    def _open_camera(self) -> None:
        if self._camera is None:
            self.board.unregister("camera")
            self._camera = make_camera(self.settings.camera, self.board)
            if isinstance(self._camera, SimulatedCamera):
                self._camera_control = CameraControlServer(
                    self._camera, self.camera_control_path
                ).start()
        try:
            self._camera.open()  # also reopens one whose stream ended (unplugged)
        except (CameraError, OSError, ImportError) as exc:
            log.warning("camera unavailable: %s", exc)
            self._camera.health.absent(str(exc))

    def _close_camera(self) -> None:
        control, self._camera_control = self._camera_control, None
        if control is not None:
            control.stop()
        camera, self._camera = self._camera, None
        if camera is not None:
            camera.close()

    # --- card encoder --------------------------------------------------------------------

    def _open_card(self) -> None:
        s = self.settings.card
        if s.backend == "simulated" and self.pcscd is None and self._given_pcscd is not None:
            self.pcscd = self._given_pcscd
            cards = self.settings.state_dir / "cards"
            cards.mkdir(parents=True, exist_ok=True)
            self.card_bay = CardBay(self.pcscd, cards)
        if s.backend == "simulated" and self.pcscd is None:
            reason = pcscd_unavailable()
            if reason is not None:
                self._absent("card_encoder", DeviceKind.CARD_ENCODER, "simulated", reason)
                return
            daemon = PcscDaemon(self.settings.run_dir / "pcscd")
            try:
                daemon.start()
                use_pcscd(daemon)
            except RuntimeError as exc:
                daemon.stop()
                self._absent("card_encoder", DeviceKind.CARD_ENCODER, "simulated", str(exc))
                return
            self.pcscd = daemon
            cards = self.settings.state_dir / "cards"
            cards.mkdir(parents=True, exist_ok=True)
            self.card_bay = CardBay(daemon, cards)
        settings = s.encoder
        if self.card_bay is not None and not settings.reader_pattern:
            settings = settings.model_copy(update={"reader_pattern": f"^{self.card_bay.reader}$"})
        self.board.unregister("card_encoder")
        cell = HealthCell("card_encoder", DeviceKind.CARD_ENCODER, s.backend)
        self.board.register(cell)
        encoder = CardEncoder(settings, health=cell)
        try:
            encoder.probe()
        except CardEncoderError as exc:
            log.warning("card encoder unavailable: %s", exc)
            encoder.close()
            return
        self._encoder = encoder

    def _close_card(self) -> None:
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            encoder.close()
        bay, self.card_bay = self.card_bay, None
        daemon, self.pcscd = self.pcscd, None
        try:
            if bay is not None:
                bay.close()
        finally:
            if daemon is not None and daemon is not self._given_pcscd:
                daemon.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m station.devices``: open every configured device, print its health,
    exit 0 when all are present and well (the technician's first check after an install)."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--json", action="store_true", help="print the health board as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with StationDevices(StationSettings()) as devices:
        rows = list(devices.board)
        if args.json:
            print(json.dumps([h.as_json() for h in rows], indent=2, ensure_ascii=False))
        else:
            for h in rows:
                state = "ok" if h.ok else ("ERROR" if h.present else "ABSENT")
                facts = ", ".join(
                    f"{k} {v}" for k, v in (("model", h.model), ("serial", h.serial),
                                            ("firmware", h.firmware)) if v
                )  # fmt: skip
                print(f"{h.name:<14} {state:<7} {h.backend:<10} {facts}")
                if h.last_error:
                    print(f"{'':<14} last error: {h.last_error}")
        return 0 if devices.board.all_ok() else 1


if __name__ == "__main__":
    raise SystemExit(main())
