"""Command-line side of station sync:

    residents import FILE.csv --office ID [--replace] [--check]
    media import FOLDER
    operators credentials USERNAME [--pin] [--password] [--finger POSITION=FILE ...]
    stations token STATION_ID [--valid-hours H] [--registry-url URL [--qr FILE.png]]

``residents import`` reads the commune's pre-loaded list (columns in
``central.residents``); bad rows are listed by line and the good ones imported (exit 1
when any row was refused, 2 when the file was). ``media import`` ingests an export folder
a station wrote to removable media and writes its signed ``receipts.cose`` (exit 1 when
any package was refused). ``operators credentials`` asks for the PIN and the password
without echoing them (or reads them, one per line, from standard input when it is not a
terminal) and takes finger templates from ISO/IEC 19794-2 files. ``stations token``
issues a station's one-time enrollment token (as ``POST /v1/stations/{id}/tokens`` does)
and, given the address stations reach this registry at, prints the station setup code
(``enrollment.setup_token``) and writes it as the token sheet's QR code; the technician
shows that sheet to the station's camera at first boot.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MAX_ERRORS_SHOWN = 50


def add_station_parsers(subparsers: Any) -> None:
    """Add ``residents``, ``media`` and ``operators`` to the registry's command line."""
    residents = subparsers.add_parser("residents", help="the communes' pre-loaded resident lists")
    actions = residents.add_subparsers(dest="residents_command", required=True)
    do_import = actions.add_parser(
        "import",
        help="import a commune's resident list (DC01) from CSV",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    do_import.add_argument("file", help="the CSV file (UTF-8; '-' reads standard input)")
    do_import.add_argument("--office", type=int, required=True, help="an office of the commune")
    do_import.add_argument(
        "--replace", action="store_true", help="mark the rows absent from the file removed"
    )
    do_import.add_argument("--check", action="store_true", help="check the file; write nothing")

    media = subparsers.add_parser("media", help="packages a station exported to removable media")
    media_actions = media.add_subparsers(dest="media_command", required=True)
    media_import = media_actions.add_parser(
        "import", help="ingest an export folder and write its signed receipts"
    )
    media_import.add_argument("folder", type=Path, help="<media>/vn-eid/<station_id>/<export_id>")

    operators = subparsers.add_parser("operators", help="station operators' credentials")
    operator_actions = operators.add_subparsers(dest="operators_command", required=True)
    creds = operator_actions.add_parser(
        "credentials", help="set an operator's PIN, password and finger templates"
    )
    creds.add_argument("username")
    creds.add_argument("--pin", action="store_true", help="ask for a PIN (4-8 digits)")
    creds.add_argument("--password", action="store_true", help="ask for a password")
    creds.add_argument(
        "--finger",
        action="append",
        default=[],
        metavar="POSITION=FILE",
        help="an ISO/IEC 19794-2 template file for finger POSITION (1-10); repeat per finger",
    )

    stations = subparsers.add_parser("stations", help="stations' one-time enrollment tokens")
    station_actions = stations.add_subparsers(dest="stations_command", required=True)
    token = station_actions.add_parser(
        "token", help="issue a station's one-time enrollment token and its token sheet's QR code"
    )
    token.add_argument("station_id")
    token.add_argument(
        "--valid-hours", type=float, default=72.0, help="how long the token is valid (max 720)"
    )
    token.add_argument(
        "--registry-url",
        help="the address stations reach this registry at (https://...): printed with the "
        "token as the station setup code",
    )
    token.add_argument(
        "--qr",
        type=Path,
        metavar="FILE.png",
        help="write the setup code as a QR code (PNG) for the token sheet (needs --registry-url)",
    )


def _ask(what: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"{what}: ")
    line = sys.stdin.readline()
    if not line:
        raise SystemExit(f"standard input ended before the {what}")
    return line.rstrip("\n")


def _residents(args: argparse.Namespace, settings: Any) -> int:
    from central.db.engine import engine_from_settings
    from central.residents import ResidentFileError, import_residents

    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    engine = engine_from_settings(settings.database)
    try:
        result = import_residents(
            engine,
            args.office,
            data,
            datetime.now(UTC),
            "cli",
            replace=args.replace,
            check=args.check,
        )
    except LookupError as exc:
        print(f"{exc}: list the offices with GET /v1/offices", file=sys.stderr)
        return 2
    except ResidentFileError as exc:
        print(f"{args.file}: {exc}; nothing imported", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    for error in result.errors[:MAX_ERRORS_SHOWN]:
        ref = f" (ref {error.ref})" if error.ref else ""
        print(f"{args.file}:{error.line}{ref}: {error.error}", file=sys.stderr)
    if len(result.errors) > MAX_ERRORS_SHOWN:
        print(f"... and {len(result.errors) - MAX_ERRORS_SHOWN} more", file=sys.stderr)
    verb = "would import" if args.check else "imported"
    print(
        f"{args.file}: commune {result.commune_code}: {verb} {result.created} new, "
        f"{result.updated} changed, {result.removed} removed; {result.unchanged} unchanged, "
        f"{len(result.errors)} refused; residents at seq {result.next}"
    )
    return 1 if result.errors else 0


def _media(args: argparse.Namespace, settings: Any) -> int:
    from central.media_import import MediaError, import_media, summary_table
    from central.services import open_registry

    registry = open_registry(settings)
    try:
        result = import_media(registry, args.folder)
    except MediaError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    finally:
        registry.close()
    print(summary_table(result))
    return 1 if result.refused else 0


def _operators(args: argparse.Namespace, settings: Any) -> int:
    from sqlalchemy.orm import Session

    from central.auth.users import Passwords, password_hasher
    from central.db.engine import engine_from_settings
    from central.station_sync import CredentialError, CredentialsIn, set_credentials

    fingers = []
    for spec in args.finger:
        position, sep, name = spec.partition("=")
        if not sep or not position.isdigit():
            print(f"--finger {spec}: write POSITION=FILE, e.g. 2=right-index.iso", file=sys.stderr)
            return 2
        template = base64.b64encode(Path(name).read_bytes()).decode()
        fingers.append({"position": int(position), "template": template})
    pin = _ask("PIN") if args.pin else None
    password = _ask("password") if args.password else None
    try:
        body = CredentialsIn.model_validate({"pin": pin, "password": password, "fingers": fingers})
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    engine = engine_from_settings(settings.database)
    try:
        with Session(engine) as session, session.begin():
            operator = set_credentials(
                session,
                Passwords(password_hasher(settings.auth)),
                args.username,
                body,
                datetime.now(UTC),
                "cli",
            )
            positions = [f["position"] for f in operator.fingers or []]
    except CredentialError as exc:
        print(f"{args.username}: {exc.detail}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(
        f"{args.username}: PIN {'set' if pin else 'none'}, password "
        f"{'set' if password else 'none'}, fingers {positions or 'none'}; the office's "
        "stations take them at their next sync"
    )
    return 0


def _stations(args: argparse.Namespace, settings: Any) -> int:
    from datetime import timedelta

    from sqlalchemy.orm import Session

    from central.db.engine import engine_from_settings
    from central.onboarding import OnboardingError, create_token
    from enrollment.setup_token import SetupCode, SetupCodeError, check_registry_url

    # Everything checked before a token is issued: a refused command wastes none.
    if not 0 < args.valid_hours <= 24 * 30:
        print("--valid-hours: more than 0, at most 720", file=sys.stderr)
        return 2
    if args.qr is not None and not args.registry_url:
        print(
            "--qr: the QR code holds the registry's address: give --registry-url", file=sys.stderr
        )
        return 2
    if args.registry_url:
        try:
            check_registry_url(args.registry_url)
        except SetupCodeError as exc:
            print(f"--registry-url: {exc}", file=sys.stderr)
            return 2
    engine = engine_from_settings(settings.database)
    try:
        with Session(engine) as session, session.begin():
            new = create_token(
                session,
                args.station_id,
                datetime.now(UTC),
                "cli",
                timedelta(hours=args.valid_hours),
            )
            code = SetupCode(args.registry_url, new.token) if args.registry_url else None
            if code is not None and args.qr is not None:
                # Written before the token is committed: a file that cannot be written
                # leaves no issued token behind. Owner-only: the sheet is a credential.
                fd = os.open(args.qr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as out:
                    os.fchmod(out.fileno(), 0o600)
                    out.write(code.png())
    except OnboardingError as exc:
        print(f"{args.station_id}: {exc.detail}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"--qr: {exc}; no token issued", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(f"station {new.station_id}: one-time token, valid until {new.expires_at.isoformat()}")
    print(f"token: {new.token}")
    if code is not None:
        print(f"setup code: {code.payload()}")
    if args.qr is not None:
        print(f"QR code: {args.qr}")
    return 0


def run_station_command(args: argparse.Namespace, settings: Any) -> int:
    if args.command == "stations":
        return _stations(args, settings)
    if args.command == "residents":
        return _residents(args, settings)
    if args.command == "media":
        return _media(args, settings)
    return _operators(args, settings)
