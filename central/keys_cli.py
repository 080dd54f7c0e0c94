"""`python -m central keys show | rotate-ds | rotate-csca | export-trust`.

The lead's ``central.__main__`` adds the ``keys`` command with :func:`add_keys_parser` and
runs it with :func:`run_keys`. Every command opens the registry's keys as the service does
(creating them on a new registry), prints what an operator needs, and returns an exit code.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TextIO

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select

from central.db.engine import DatabaseSettings, engine_from_settings, session_factory
from central.db.migrate import upgrade
from central.db.models import SignerCertificate
from central.keys import KeySettings, RegistryKeys
from central.signers import (
    HierarchyError,
    NoDocumentSignerError,
    current_document_signer,
    fingerprint,
)
from enrollment.errors import KeyProviderError
from enrollment.keys import key_id

__all__ = ["TRUST_FILES", "add_keys_parser", "run_keys"]

TRUST_FILES = {
    "station_ca": "station-ca.pem",
    "package_key": "registry-package-key.pem",
    "master_list": "csca-master-list.pem",
}


class KeysCommandSettings(Protocol):
    """The parts of ``RegistrySettings`` the keys commands read."""

    @property
    def database(self) -> DatabaseSettings: ...

    @property
    def keys(self) -> KeySettings: ...

    @property
    def migrate_on_start(self) -> bool: ...


def add_keys_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys`` and its subcommands to the registry's command line."""
    keys = subparsers.add_parser("keys", help="show, rotate and export the registry's keys")
    commands = keys.add_subparsers(dest="keys_command", required=True)
    commands.add_parser("show", help="fingerprints, validity and which Document Signer signs")
    for name, what in (
        ("rotate-ds", "a new Document Signer key and certificate; the old one stops signing"),
        ("rotate-csca", "a new CSCA with a link certificate from the old one, and a new DS"),
    ):
        rotate = commands.add_parser(name, help=what)
        rotate.add_argument("--actor", required=True, help="who rotates (for the audit log)")
        rotate.add_argument("--reason", default="rotation", help="why (for the audit log)")
    export = commands.add_parser(
        "export-trust", help="the station CA, package key and CSCA master list a station needs"
    )
    export.add_argument("out", type=Path, help="directory to write the PEM files into")


def _open(settings: KeysCommandSettings, now: datetime) -> RegistryKeys:
    if settings.migrate_on_start:
        upgrade(settings.database.url.get_secret_value())
    engine = engine_from_settings(settings.database)
    return RegistryKeys.open_or_create(settings.keys, engine, now=now, actor="keys command")


def _describe(cert: x509.Certificate) -> str:
    return (
        f"  subject   {cert.subject.rfc4514_string()}\n"
        f"  issuer    {cert.issuer.rfc4514_string()}\n"
        f"  valid     {cert.not_valid_before_utc:%Y-%m-%d} .. {cert.not_valid_after_utc:%Y-%m-%d}\n"
        f"  sha256    {fingerprint(cert)}"
    )


def _show(keys: RegistryKeys, out: TextIO, now: datetime) -> int:
    print(f"key directory     {keys.settings.path.resolve()}", file=out)
    print(f"signer backend    {keys.settings.signer_backend}", file=out)
    print(f"package key id    {key_id(keys.package_public_key()).hex()}", file=out)
    print("station CA", file=out)
    print(_describe(keys.station_ca), file=out)
    with session_factory(keys.engine).begin() as session:
        rows = session.execute(select(SignerCertificate).order_by(SignerCertificate.id)).scalars()
        try:
            current_id: int | None = current_document_signer(session, keys.keyring, now)[0].id
        except NoDocumentSignerError:
            current_id = None
            print("NO DOCUMENT SIGNER MAY SIGN NOW: run keys rotate-ds", file=out)
        for row in rows:
            cert = x509.load_pem_x509_certificate(row.certificate_pem.encode())
            link = row.kind.value == "csca" and cert.issuer != cert.subject
            kind = "link" if link else row.kind.value.upper()
            if row.id == current_id:
                state = "SIGNS NOW"
            elif link:
                state = "verification only"
            elif row.retired_at is not None:
                state = f"retired {row.retired_at:%Y-%m-%d %H:%M}"
            elif row.signs_until <= now:
                state = "key usage ended"
            else:
                state = "active"
            print(f"{kind} #{row.id} ({state}), key {row.key_ref}", file=out)
            print(f"  signs until {row.signs_until:%Y-%m-%d}", file=out)
            print(_describe(cert), file=out)
    return 0


def _export(keys: RegistryKeys, directory: Path, out: TextIO) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    contents = {
        TRUST_FILES["station_ca"]: keys.station_ca.public_bytes(Encoding.PEM),
        TRUST_FILES["package_key"]: keys.package_public_key_pem(),
        TRUST_FILES["master_list"]: keys.master_list_pem(),
    }
    for name, data in contents.items():
        (directory / name).write_bytes(data)
        print(f"wrote {directory / name}", file=out)
    return 0


def run_keys(
    args: argparse.Namespace,
    settings: KeysCommandSettings,
    *,
    out: TextIO | None = None,
    now: datetime | None = None,
) -> int:
    """Run the ``keys`` subcommand ``args`` names; 0 on success, 1 with a message on stderr."""
    out = out or sys.stdout
    now = now or datetime.now(UTC)
    try:
        keys = _open(settings, now)
        if args.keys_command == "show":
            return _show(keys, out, now)
        if args.keys_command == "rotate-ds":
            row = keys.rotate_document_signer(actor=args.actor, reason=args.reason, now=now)
            until = f"{row.signs_until:%Y-%m-%d}"
            print(f"new Document Signer #{row.id}, signs until {until}", file=out)
            return 0
        if args.keys_command == "rotate-csca":
            rotation = keys.rotate_csca(actor=args.actor, reason=args.reason, now=now)
            print(f"new CSCA #{rotation.csca.id}", file=out)
            if rotation.link is not None:
                print(f"link certificate #{rotation.link.id} from the previous CSCA", file=out)
            print(f"new Document Signer #{rotation.document_signer.id}", file=out)
            print("export the new master list to the stations: keys export-trust DIR", file=out)
            return 0
        if args.keys_command == "export-trust":
            return _export(keys, args.out, out)
    except (HierarchyError, KeyProviderError, OSError) as exc:
        print(f"keys {args.keys_command}: {exc}", file=sys.stderr)
        return 1
    print(f"unknown keys command {args.keys_command!r}", file=sys.stderr)
    return 2
