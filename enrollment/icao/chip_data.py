"""The chip data of one card as it crosses from the registry to the enrolling station.

The registry builds it at issuance (``central.chipdata.build_chip_data``), stores it as
deterministic CBOR (:meth:`ChipData.to_bytes`) and serves it to the station that enrolled
the person (``GET /v1/packages/{id}/issuance``: the CBOR base64 in ``chip_cbor`` and a
JSON view, :meth:`ChipData.to_json`). The station decodes the CBOR
(:meth:`ChipData.from_bytes`) and writes the files and the chip's private keys onto a
blank card. Both sides use this one codec so that they cannot drift apart: it belongs to
the shared contract, with no database and no HTTP in it.

The chip's private keys (Active and Chip Authentication) are secrets that must reach the
card and nothing else: whoever holds a copy drops it once the card is encoded
(:meth:`ChipData.without_secrets`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from enrollment import cbor
from enrollment.errors import MalformedPackageError
from enrollment.icao.chip import FID_COM, FID_SOD, ChipSecrets, fid_of

__all__ = ["CHIP_DATA_VERSION", "ChipData", "ChipDataError"]

CHIP_DATA_VERSION = 1


class ChipDataError(ValueError):
    """Chip data cannot be built from this enrollment, or stored chip data is unreadable."""


def _file_name(fid: int) -> str:
    if fid == FID_COM:
        return "EF.COM"
    if fid == FID_SOD:
        return "EF.SOD"
    return f"DG{fid - 0x0100}"


def _fid_of_name(name: str) -> int:
    if name == "EF.COM":
        return FID_COM
    if name == "EF.SOD":
        return FID_SOD
    if name.startswith("DG") and name[2:].isdigit():
        return fid_of(int(name[2:]))
    raise ChipDataError(f"unknown chip file {name!r}")


def _private_key(der: bytes | None, what: str) -> ec.EllipticCurvePrivateKey | None:
    if der is None:
        return None
    try:
        key = serialization.load_der_private_key(der, password=None)
    except (ValueError, TypeError) as exc:
        raise ChipDataError(f"the chip's {what} key is not PKCS#8 DER: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ChipDataError(f"the chip's {what} key is not an elliptic-curve key")
    return key


@dataclass(frozen=True)
class ChipData:
    """Everything the station writes onto one card.

    ``files``: LDS file identifier -> content (EF.COM, DG1-DG15 present, EF.SOD).
    ``active_auth_key`` / ``chip_auth_key``: PKCS#8 DER of the chip's private keys (DG15
    and DG14 carry their public halves), None once dropped from the registry's copy.
    """

    personal_number: str
    document_number: str
    issue_date: date
    expiry: date | None
    signer_id: int
    mrz: str
    mrz_information: str
    files: Mapping[int, bytes]
    active_auth_key: bytes | None
    chip_auth_key: bytes | None

    def data_groups(self) -> dict[int, bytes]:
        """{DG number: bytes}, for passive authentication."""
        return {fid - 0x0100: data for fid, data in self.files.items() if 0x0101 <= fid <= 0x0110}

    @property
    def sod(self) -> bytes:
        return self.files[FID_SOD]

    @property
    def has_secrets(self) -> bool:
        return self.active_auth_key is not None or self.chip_auth_key is not None

    def secrets(self) -> ChipSecrets:
        """The chip's private keys as key objects, what the card encoder loads.

        ChipDataError when a key is not an elliptic-curve PKCS#8 key."""
        return ChipSecrets(
            active_auth_key=_private_key(self.active_auth_key, "Active Authentication"),
            chip_auth_key=_private_key(self.chip_auth_key, "Chip Authentication"),
        )

    def without_secrets(self) -> ChipData:
        """The same chip data less the chip's private keys (what the registry keeps once
        the card is encoded)."""
        return replace(self, active_auth_key=None, chip_auth_key=None)

    def _plain(self) -> dict[str, Any]:
        return {
            "version": CHIP_DATA_VERSION,
            "personal_number": self.personal_number,
            "document_number": self.document_number,
            "issue_date": self.issue_date.isoformat(),
            "expiry": None if self.expiry is None else self.expiry.isoformat(),
            "signer_id": self.signer_id,
            "mrz": self.mrz,
            "mrz_information": self.mrz_information,
        }

    def to_bytes(self) -> bytes:
        """Deterministic CBOR: one chip, one byte string."""
        plain = self._plain()
        plain["files"] = {
            _file_name(fid): {"fid": fid, "data": data} for fid, data in self.files.items()
        }
        plain["active_auth_key"] = self.active_auth_key
        plain["chip_auth_key"] = self.chip_auth_key
        return cbor.dumps(plain)

    @classmethod
    def from_bytes(cls, data: bytes) -> ChipData:
        try:
            obj = cbor.loads_strict(data, "chip data")
        except MalformedPackageError as exc:
            raise ChipDataError(str(exc)) from exc
        try:
            if obj["version"] != CHIP_DATA_VERSION:
                raise ChipDataError(
                    f"chip data version {obj['version']} is not {CHIP_DATA_VERSION}"
                )
            files: dict[int, bytes] = {}
            for name, entry in obj["files"].items():
                fid = int(entry["fid"])
                if fid != _fid_of_name(name) or not isinstance(entry["data"], bytes):
                    raise ChipDataError(f"chip file {name} is malformed")
                files[fid] = entry["data"]
            return cls(
                personal_number=str(obj["personal_number"]),
                document_number=str(obj["document_number"]),
                issue_date=date.fromisoformat(obj["issue_date"]),
                expiry=None if obj["expiry"] is None else date.fromisoformat(obj["expiry"]),
                signer_id=int(obj["signer_id"]),
                mrz=str(obj["mrz"]),
                mrz_information=str(obj["mrz_information"]),
                files=files,
                active_auth_key=obj["active_auth_key"],
                chip_auth_key=obj["chip_auth_key"],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, ChipDataError):
                raise
            raise ChipDataError(f"chip data is malformed: {exc!r}") from exc

    def to_json(self) -> dict[str, Any]:
        """The view the station fetches: each file as {fid (hex), data (base64)}, and the
        chip's private keys as base64 PKCS#8 DER (null once dropped)."""

        def b64(data: bytes | None) -> str | None:
            return None if data is None else base64.b64encode(data).decode()

        plain = self._plain()
        plain["files"] = {
            _file_name(fid): {"fid": f"{fid:04X}", "data": b64(data)}
            for fid, data in sorted(self.files.items())
        }
        plain["active_auth_key"] = b64(self.active_auth_key)
        plain["chip_auth_key"] = b64(self.chip_auth_key)
        return plain
