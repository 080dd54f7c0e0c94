"""Command line: inspect and verify packages, make keys, export the record schema.

python -m enrollment inspect FILE [--key KEY] [--trust DIR]
python -m enrollment verify FILE --trust DIR --key KEY
python -m enrollment keygen KEY            (P-256, mode 0600; writes KEY.pub.pem too)
python -m enrollment schema [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from enrollment import package, summary
from enrollment.errors import KeyProviderError, PackageError
from enrollment.keys import key_id
from enrollment.keys.software import SoftwareDecryptor, SoftwareKeySigner
from enrollment.record import EnrollmentRecord
from enrollment.trust import TrustStore

EXIT_OK, EXIT_REJECTED, EXIT_USAGE = 0, 1, 2


def _inspect(args: argparse.Namespace) -> int:
    path: Path = args.file
    limits = package.DEFAULT_LIMITS
    header = package.read_header(path, limits)
    lines = summary.header_lines(header, path.stat().st_size)
    if args.key is None:
        lines.append("(contents are encrypted: give --key to see them)")
        print("\n".join(lines))
        return EXIT_OK
    decryptor = SoftwareDecryptor.from_file(args.key)
    if args.trust is not None:
        verified = package.open_package(
            path, trust=TrustStore.from_dir(args.trust), decryptor=decryptor
        )
        lines.append(
            f"signature    valid, station {verified.signer.station_id} "
            f"({verified.signer.trusted_by}, key {verified.signer.kid.hex()[:16]}…)"
        )
        manifest, record, tx = verified.manifest, verified.record, verified.transaction
    else:
        _, sign1, contents = package.unseal_unverified(path, decryptor, limits)
        lines.append(f"signature    NOT checked (no --trust); key {sign1.kid.hex()[:16]}…")
        manifest, record, tx = contents.manifest, contents.record, contents.transaction
    lines += summary.manifest_lines(manifest)
    lines += summary.record_lines(record)
    kinds = Counter(
        ["Type-14 finger"] * len(tx.fingerprints)
        + ["Type-10 face"] * len(tx.faces)
        + [f"Type-{r.type}" for r in tx.other_records]
    )
    lines += summary.transaction_lines(kinds, tx.header.tot)
    print("\n".join(lines))
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    verified = package.open_package(
        args.file,
        trust=TrustStore.from_dir(args.trust),
        decryptor=SoftwareDecryptor.from_file(args.key),
    )
    if args.json:
        print(
            json.dumps(
                {"valid": True, "package_id": verified.package_id, "station": verified.station_id}
            )
        )
    else:
        print(f"VALID {verified.package_id} from station {verified.station_id}")
    return EXIT_OK


def _keygen(args: argparse.Namespace) -> int:
    signer = SoftwareKeySigner.generate(args.key)
    pub = args.key.with_name(args.key.name.removesuffix(".pem") + ".pub.pem")
    pub.write_bytes(
        signer.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    pub.chmod(0o644)  # public, but never writable by others whatever the umask
    print(
        f"key {args.key} (mode 0600), public key {pub}, key id {key_id(signer.public_key()).hex()}"
    )
    return EXIT_OK


def _schema(args: argparse.Namespace) -> int:
    text = json.dumps(EnrollmentRecord.model_json_schema(), indent=2, ensure_ascii=False) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m enrollment",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="summarise a package (never prints biometric data)")
    p.add_argument("file", type=Path)
    p.add_argument("--key", type=Path, help="registry private key (PEM) to see the contents")
    p.add_argument("--trust", type=Path, help="trust directory: check the signature too")
    p.set_defaults(func=_inspect)
    p = sub.add_parser("verify", help="exit 0 when the package is valid, 1 when it is not")
    p.add_argument("file", type=Path)
    p.add_argument("--trust", type=Path, required=True, help="trust directory (CA certs, keys)")
    p.add_argument("--key", type=Path, required=True, help="registry private key (PEM)")
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.set_defaults(func=_verify)
    p = sub.add_parser("keygen", help="create a P-256 software key file (mode 0600)")
    p.add_argument("key", type=Path)
    p.set_defaults(func=_keygen)
    p = sub.add_parser("schema", help="print or write the record's JSON Schema")
    p.add_argument("--out", type=Path)
    p.set_defaults(func=_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except PackageError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"valid": False, "error": exc.code, "message": exc.message}))
        else:
            print(f"REJECTED {exc.code}: {exc.message}", file=sys.stderr)
        return EXIT_REJECTED
    except (KeyProviderError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return result


if __name__ == "__main__":
    sys.exit(main())
