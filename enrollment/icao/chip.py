"""Everything one card's chip holds, keyed by ISO 7816 file identifier, built from plain
values and signed through a Document Signer callable.

The private keys the chip needs for Active and Chip Authentication are returned apart
(:class:`ChipSecrets`) for the personalisation step; they are not chip files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from enrollment.icao.lds import (
    ECDSA_PLAIN_SHA256,
    ID_PACE_ECDH_GM_AES_CBC_CMAC_128,
    FaceImage,
    FingerImage,
    NationalData,
    SecurityInfos,
    build_com,
    build_dg1,
    build_dg2,
    build_dg3,
    build_dg13,
    build_dg14,
    build_dg15,
)
from enrollment.icao.mrz import Td1
from enrollment.icao.sod import SodSigner, build_sod

__all__ = [
    "FID_COM",
    "FID_SOD",
    "ChipContents",
    "ChipSecrets",
    "build_chip",
    "dg_number",
    "fid_of",
]

FID_COM = 0x011E
FID_SOD = 0x011D


def fid_of(dg: int) -> int:
    """ISO 7816 file identifier of data group ``dg`` (DG1 0x0101 ... DG16 0x0110)."""
    if not 1 <= dg <= 16:
        raise ValueError(f"no data group {dg}")
    return 0x0100 + dg


def dg_number(fid: int) -> int | None:
    """The data group a file identifier holds, or None for EF.COM / EF.SOD / others."""
    return fid - 0x0100 if 0x0101 <= fid <= 0x0110 else None


@dataclass(frozen=True)
class ChipContents:
    """The chip's LDS files and the MRZ the BAC keys derive from."""

    files: dict[int, bytes]  # file identifier -> content (EF.COM, DGs, EF.SOD)
    mrz: str  # the 90 TD1 characters, no line breaks
    mrz_information: str  # BAC seed: number + check, birth + check, expiry + check

    def data_groups(self) -> dict[int, bytes]:
        """{DG number: bytes} for the data groups present."""
        out = {}
        for fid, data in self.files.items():
            dg = dg_number(fid)
            if dg is not None:
                out[dg] = data
        return out

    @property
    def com(self) -> bytes:
        return self.files[FID_COM]

    @property
    def sod(self) -> bytes:
        return self.files[FID_SOD]


@dataclass(frozen=True)
class ChipSecrets:
    """Private keys to load into the chip at personalisation; never chip files."""

    active_auth_key: ec.EllipticCurvePrivateKey | None
    chip_auth_key: ec.EllipticCurvePrivateKey | None


def build_chip(
    *,
    td1: Td1,
    faces: Sequence[FaceImage],
    document_signer: x509.Certificate,
    sign: SodSigner,
    fingers: Sequence[FingerImage] = (),
    national_data: NationalData | None = None,
    active_authentication: bool = True,
    chip_authentication: bool = True,
    pace: bool = True,
    active_auth_key: ec.EllipticCurvePrivateKey | None = None,
    chip_auth_key: ec.EllipticCurvePrivateKey | None = None,
    signing_time: datetime | None = None,
) -> tuple[ChipContents, ChipSecrets]:
    """EF.COM, DG1, DG2, DG3 (if ``fingers``), DG13 (if ``national_data``), DG14 (if PACE
    or Chip Authentication), DG15 (if Active Authentication) and EF.SOD over all of them.

    Keys for AA / CA are generated (P-256) unless given.
    """
    mrz = td1.text()
    groups: dict[int, bytes] = {1: build_dg1(mrz), 2: build_dg2(faces)}
    if fingers:
        groups[3] = build_dg3(fingers)
    if national_data is not None:
        groups[13] = build_dg13(national_data)
    aa_key = ca_key = None
    if chip_authentication:
        ca_key = chip_auth_key or ec.generate_private_key(ec.SECP256R1())
    if active_authentication:
        aa_key = active_auth_key or ec.generate_private_key(ec.SECP256R1())
    if pace or ca_key is not None or aa_key is not None:
        groups[14] = build_dg14(
            SecurityInfos(
                pace_protocols=(ID_PACE_ECDH_GM_AES_CBC_CMAC_128,) if pace else (),
                chip_auth_key=ca_key.public_key() if ca_key else None,
                aa_signature_algorithm=ECDSA_PLAIN_SHA256 if aa_key else None,
            )
        )
    if aa_key is not None:
        groups[15] = build_dg15(aa_key.public_key())
    files = {FID_COM: build_com(list(groups))}
    files.update({fid_of(dg): data for dg, data in groups.items()})
    files[FID_SOD] = build_sod(groups, document_signer, sign, signing_time=signing_time)
    contents = ChipContents(files=files, mrz=mrz, mrz_information=td1.mrz_information())
    return contents, ChipSecrets(active_auth_key=aa_key, chip_auth_key=ca_key)
