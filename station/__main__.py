"""The station's command line (configuration: STATION_CONFIG / STATION_* variables).

    python -m station serve                     # the station service (ASGI on 127.0.0.1)
    python -m station provision --registry URL --token TOKEN
    python -m station status                    # JSON: identity, sync, outbox, devices
    python -m station sync                      # one sync round now
    python -m station media export /media/usb   # the outbox onto removable media
    python -m station media import-receipts /media/usb/vn-eid/<station>/<export>
    python -m station technician-pin            # hash a new technician PIN for the config
    python -m station updates check|fetch       # network updates (TUF): newer bundle?
    python -m station ssh-access apply|expire   # root: the technician's SSH request

``serve`` owns the devices; the other commands open the store without them, so a
technician can run them while the service is stopped (they refuse while it runs, because
the devices and the outbox belong to one process at a time).
"""

from __future__ import annotations

import os

# One BLAS thread: the matcher's small matrix products gain nothing from a second one
# and lose much to it on a busy device (measured: a submit's p95 1.4 s -> 0.2 s under
# load). Set before numpy loads; the service's environment may still override it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from station.config import StationSettings
from station.systemd_notify import Notifier

if TYPE_CHECKING:
    import uvicorn


def _settings(**overrides: object) -> StationSettings:
    return StationSettings(**overrides)  # type: ignore[arg-type]


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from station.api import create_app
    from station.runtime import StationRuntime
    from station.service_lock import ServiceLock

    settings = _settings()
    host = args.host or settings.service.host
    port = args.port if args.port is not None else settings.service.port
    with ServiceLock(settings.run_dir / "station.lock"):
        runtime = StationRuntime(settings).start()
        try:
            config = uvicorn.Config(
                create_app(runtime), host=host, port=port, log_level="info", access_log=False
            )
            _watch(config, Notifier())
            server = uvicorn.Server(config)

            def stop(_signum: int, _frame: FrameType | None) -> None:
                server.should_exit = True

            signal.signal(signal.SIGTERM, stop)
            server.run()
        finally:
            Notifier().stopping()
            runtime.stop()
    return 0


def _watch(config: uvicorn.Config, notifier: Notifier) -> None:
    """READY=1 on uvicorn's first tick after it listens, then WATCHDOG=1 from the same
    loop: the pings stop when the event loop stops turning."""
    if not notifier.enabled:
        return
    said_ready = False

    async def tick() -> None:
        nonlocal said_ready
        if not said_ready:
            said_ready = notifier.ready("serving")
        notifier.watchdog()

    config.callback_notify = tick
    config.timeout_notify = max(1, int(notifier.ping_interval_s()))  # uvicorn: whole seconds


def _offline_runtime() -> object:
    from station.runtime import StationRuntime
    from station.service_lock import ServiceLock

    settings = _settings(open_devices=False, background=False)
    lock = ServiceLock(settings.run_dir / "station.lock").acquire()
    runtime = StationRuntime(settings).start()
    runtime._cli_lock = lock  # type: ignore[attr-defined]  # released with the process
    return runtime


def _provision(args: argparse.Namespace) -> int:
    from station.identity import ProvisioningError
    from station.runtime import StationRuntime

    runtime = _offline_runtime()
    assert isinstance(runtime, StationRuntime)
    try:
        identity = runtime.provision(args.registry, args.token)
    except ProvisioningError as exc:
        print(f"provisioning failed: {exc}", file=sys.stderr)
        return 1
    finally:
        runtime.stop()
    print(json.dumps(identity.as_json(), indent=2))
    return 0


def _status(_: argparse.Namespace) -> int:
    from station.runtime import StationRuntime

    runtime = _offline_runtime()
    assert isinstance(runtime, StationRuntime)
    try:
        print(json.dumps(runtime.status(), indent=2, ensure_ascii=False, default=str))
    finally:
        runtime.stop()
    return 0


def _sync(_: argparse.Namespace) -> int:
    from station.runtime import StationRuntime
    from station.sync import SyncError

    runtime = _offline_runtime()
    assert isinstance(runtime, StationRuntime)
    try:
        report = runtime.sync_now()
    except SyncError as exc:
        print(f"sync failed: {exc}", file=sys.stderr)
        return 1
    finally:
        runtime.stop()
    print(f"synced in {report.seconds:.1f} s: {report.residents_applied} resident rows, "
          f"operators {'changed' if report.operators_changed else 'unchanged'}")  # fmt: skip
    return 0


def _media(args: argparse.Namespace) -> int:
    from station.media import export_to, import_receipts
    from station.runtime import StationRuntime

    runtime = _offline_runtime()
    assert isinstance(runtime, StationRuntime)
    try:
        online = runtime.online
        if online is None:
            print("the station is not provisioned", file=sys.stderr)
            return 1
        if args.media_command == "export":
            result = export_to(runtime.outbox, Path(args.path), online.identity.station_id)
            print(json.dumps(result.as_json() if hasattr(result, "as_json") else str(result),
                             indent=2, default=str))  # fmt: skip
        else:
            report = import_receipts(
                runtime.outbox,
                Path(args.path),
                online.identity.station_ca,
                station_id=online.identity.station_id,
            )
            print(json.dumps(report.as_json() if hasattr(report, "as_json") else str(report),
                             indent=2, default=str))  # fmt: skip
    finally:
        runtime.stop()
    return 0


def _technician_pin(args: argparse.Namespace) -> int:
    """Ask for a new technician PIN twice (or read it from stdin) and print its argon2 hash
    with where it goes: nothing is written, the technician puts it in the configuration."""
    import getpass

    from station.technician import hash_pin

    if args.stdin:
        pin = sys.stdin.readline().strip()
    else:
        pin = getpass.getpass("New technician PIN (6 or more digits): ")
        if getpass.getpass("The same PIN again: ") != pin:
            print("the two PINs differ; nothing changed", file=sys.stderr)
            return 1
    try:
        hashed = hash_pin(pin)
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if args.quiet:
        print(hashed)
        return 0
    print("Put this in the station configuration (/etc/vn-eid/station.toml), then restart")
    print("the station service:\n")
    print("[technician]")
    print(f'pin_hash = "{hashed}"\n')
    print(f"or in its environment: STATION_TECHNICIAN__PIN_HASH='{hashed}'")
    return 0


def _updates(args: argparse.Namespace) -> int:
    """One line for the console and the installer (/usr/lib/vn-eid/net-update); needs no
    service lock: it touches neither the devices nor the outbox."""
    from station.updates import check

    outcome = check(_settings(), download=args.updates_command == "fetch")
    print(outcome.line(), flush=True)
    return 1 if outcome.state == "refused" else 0


def _ssh_access(args: argparse.Namespace) -> int:
    """Root's side of the technician's SSH switch (vn-eid-ssh.service, and the timer that
    ends it): one line for the journal. The PIN hash is taken only from a configuration
    file that only root can change."""
    from station import ssh_access
    from station.config import config_path

    settings = _settings()
    paths = ssh_access.SshPaths(
        request=settings.ssh.request_path(settings.run_dir),
        status=settings.ssh.status_file,
        authorized_keys=settings.ssh.authorized_keys,
    )
    status: ssh_access.SshStatus | None
    if args.ssh_command == "expire":
        status = ssh_access.expire(paths)
    else:
        source = config_path()
        try:
            if source is None:
                raise ValueError("no configuration file (STATION_CONFIG)")
            ssh_access.trusted_config(source)
            pin_hash = settings.technician.pin_hash
        except (OSError, ValueError) as exc:
            print(f"VN-EID-SSH refusing the PIN hash: {exc}", file=sys.stderr)
            pin_hash = None  # the request is still taken and refused (reason no_pin)
        status = ssh_access.apply(paths, pin_hash)
    print(ssh_access.status_line(status), flush=True)
    last = status.last if status else None
    return 0 if not last or last.get("outcome") == "done" else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m station", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the station service")
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.set_defaults(run=_serve)
    prov = sub.add_parser("provision", help="first boot: enroll with the registry's token")
    prov.add_argument("--registry", required=True, help="the registry's address")
    prov.add_argument("--token", required=True, help="the one-time enrollment token")
    prov.set_defaults(run=_provision)
    sub.add_parser("status", help="identity, sync, outbox, devices").set_defaults(run=_status)
    sub.add_parser("sync", help="one sync round with the registry").set_defaults(run=_sync)
    media = sub.add_parser("media", help="removable media for stations without a network")
    media_sub = media.add_subparsers(dest="media_command", required=True)
    export = media_sub.add_parser("export", help="copy the unsent packages onto the media")
    export.add_argument("path", help="the mounted media (e.g. /media/usb)")
    receipts = media_sub.add_parser("import-receipts", help="read the registry's receipts")
    receipts.add_argument("path", help="the export folder holding receipts.cose")
    media.set_defaults(run=_media)
    pin = sub.add_parser("technician-pin", help="hash a new technician PIN for the config")
    pin.add_argument("--stdin", action="store_true", help="read the PIN from stdin")
    pin.add_argument("--quiet", action="store_true", help="print the hash only")
    pin.set_defaults(run=_technician_pin)
    updates = sub.add_parser("updates", help="network updates: signed metadata (TUF)")
    updates_sub = updates.add_subparsers(dest="updates_command", required=True)
    updates_sub.add_parser("check", help="say whether a newer bundle is published")
    updates_sub.add_parser("fetch", help="download the newest newer bundle, checked")
    updates.set_defaults(run=_updates)
    ssh = sub.add_parser("ssh-access", help="root: turn SSH on or off as the technician asked")
    ssh_sub = ssh.add_subparsers(dest="ssh_command", required=True)
    ssh_sub.add_parser("apply", help="carry out the request the station service left")
    ssh_sub.add_parser("expire", help="the hours are up: SSH off, keys emptied")
    ssh.set_defaults(run=_ssh_access)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
