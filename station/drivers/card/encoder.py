"""The card encoder driver: personalise an eMRTD chip through a PC/SC reader, read it back
under BAC secure messaging, and verify it (byte comparison + passive authentication).

    encoder = CardEncoder(EncoderSettings(reader_pattern="ACR1252"))
    encoder.wait_for_card(timeout=30)
    serial = encoder.chip_serial()                # the chip's fixed identity (CPLC)
    report = encoder.personalise(chip)            # writes, checks DG3, locks
    check = encoder.verify(chip, [csca])          # BAC read-back + passive authentication
    encoder.wait_for_removal(timeout=60)

The command set is in docs/protocols/card.md. Backends are chosen by configuration: the
same driver talks to a real reader or to our emulator behind pcscd's vpcd reader.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from station.drivers.health import DeviceKind, HealthCell

from . import profile
from .apdu import (
    SW_FILE_NOT_FOUND,
    SW_OK,
    SW_SECURITY_NOT_SATISFIED,
    SW_VERIFICATION_FAILED,
    SW_WARNING_EOF,
    ApduError,
    Command,
    Response,
    describe_sw,
)
from .bac import BacError, BacTerminal, document_keys
from .cardcrypto import CardCrypto
from .errors import (
    AccessDenied,
    BacFailed,
    CardEncoderError,
    CardLocked,
    CardProtocolError,
    CardRemoved,
    NoReader,
    PaceFailed,
    VerificationFailed,
    WriteFailed,
    WrongCardType,
)
from .hostcrypto import HostCrypto
from .pace import (
    PaceError,
    PaceTerminal,
    card_access,
    dynamic_data,
    mse_set_at,
    password_key,
    supported_pace,
)
from .pcsc import PcscLink
from .sm import SecureMessaging, SmError
from .tlv import TlvError, find, parse, total_length

if TYPE_CHECKING:
    from cryptography import x509

    from enrollment.icao.passive import PassiveAuthResult


class ChipImage(Protocol):
    """What the encoder needs of :class:`enrollment.icao.chip.ChipContents`."""

    @property
    def files(self) -> Mapping[int, bytes]: ...

    @property
    def mrz_information(self) -> str: ...


class EncoderSettings(BaseModel):
    """The card encoder's part of the station configuration."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reader_pattern: str = ""
    """Regular expression searched in the PC/SC reader names; '' takes the first reader."""
    write_chunk: int = Field(default=255, ge=16, le=65535)
    """UPDATE BINARY data bytes per APDU: 255 for short APDUs; larger needs extended."""
    read_chunk: int = Field(default=0xDF, ge=8, le=65535)
    """READ BINARY Le under BAC: 0xDF keeps the protected response inside a short APDU."""
    extended_length: bool = False
    """Send extended-length APDUs (the reader and the card must both support them)."""
    check_eac_files_before_lock: bool = True
    """Read DG3/DG4 back in plain before locking: once locked only EAC could read them."""
    card_timeout_s: float = Field(default=10.0, gt=0)
    access: Literal["auto", "pace", "bac"] = "auto"
    """Access control for reading: PACE when EF.CardAccess offers it (auto), or one only."""
    pace_on_card: bool = True
    """Personalise EF.CardAccess and the PACE password so the chip offers PACE and BAC."""
    pace_parameter_id: Literal[12, 13] = 12
    """PACE domain parameters: 12 NIST P-256 (what DG14 announces), 13 brainpoolP256r1."""


@dataclass(frozen=True)
class PersonalisationReport:
    """What a personalisation cost and did; what a benchmark prints."""

    reader: str
    atr: str
    files: dict[int, int]
    """FID -> bytes written."""
    apdus: int
    bytes_sent: int
    bytes_received: int
    seconds: float
    cleaned: tuple[int, ...] = ()
    """FIDs deleted first because a previous attempt left the card half-personalised."""
    locked: bool = True
    eac_files_checked: tuple[int, ...] = ()
    keys_loaded: tuple[str, ...] = ()
    """Chip secrets loaded: "active_authentication" when the AA key went in."""
    keys_not_loaded: tuple[str, ...] = ()
    """Chip secrets this card profile cannot take yet (Active/Chip Authentication keys)."""

    @property
    def payload_bytes(self) -> int:
        return sum(self.files.values())


@dataclass(frozen=True)
class ReadBackReport:
    files: dict[int, bytes]
    refused: tuple[int, ...]
    """FIDs the chip would not give under BAC (DG3/DG4 need EAC)."""
    missing: tuple[int, ...]
    access: str
    """"pace" or "bac": how the session was opened."""
    active_authentication: bool | None
    apdus: int
    bytes_sent: int
    bytes_received: int
    seconds: float


@dataclass(frozen=True)
class VerificationReport:
    compared: tuple[int, ...]
    """FIDs read back under BAC whose bytes equal what was written."""
    not_readable: tuple[int, ...]
    passive: PassiveAuthResult
    active_authentication: bool | None
    """True: the chip signed our challenge with DG15's key; None: no DG15 on the card."""
    read: ReadBackReport = field(repr=False)


class CardEncoder:
    """One PC/SC card encoder. Not thread-safe: one station worker drives it."""

    def __init__(
        self,
        settings: EncoderSettings | None = None,
        *,
        health: HealthCell | None = None,
        crypto: CardCrypto | None = None,
        name: str = "card-encoder",
    ) -> None:
        self.settings = settings or EncoderSettings()
        self.health = health or HealthCell(name, DeviceKind.CARD_ENCODER, "pcsc")
        self.crypto = crypto or HostCrypto()
        self.link = PcscLink(self.settings.reader_pattern)
        self._session: SecureMessaging | None = None

    # --- reader and card presence -------------------------------------------------------

    def _guard(self, error: CardEncoderError) -> CardEncoderError:
        if isinstance(error, NoReader):
            self.health.absent(str(error))
        else:
            self.health.error(f"{error.code}: {error}")
        return error

    def probe(self) -> str:
        """Find the reader; marks the health cell present (with its name) or absent."""
        try:
            reader = self.link.find_reader()
        except NoReader as exc:
            raise self._guard(exc) from None
        self.health.present(model=reader, reader=reader)
        return reader

    def wait_for_card(self, timeout: float | None = None) -> bytes:
        """Block until a card is on the reader; its ATR. NoCard after ``timeout`` s."""
        self.probe()
        try:
            return self.link.wait_for(True, self._timeout(timeout))
        except CardEncoderError as exc:
            raise self._guard(exc) from None

    def wait_for_removal(self, timeout: float | None = None) -> None:
        self.link.disconnect()
        try:
            self.link.wait_for(False, self._timeout(timeout))
        except CardEncoderError as exc:
            raise self._guard(exc) from None

    def _timeout(self, timeout: float | None) -> float:
        return self.settings.card_timeout_s if timeout is None else timeout

    def close(self) -> None:
        self.link.close()

    # --- APDU exchange ------------------------------------------------------------------

    def _send(self, command: Command) -> Response:
        raw = command.encode(self.settings.extended_length and command.needs_extended())
        try:
            return Response.decode(self.link.transmit(raw))
        except ApduError as exc:
            raise CardProtocolError(f"malformed response to {command!r}: {exc}") from exc

    def _expect(self, command: Command, what: str, error: type[CardEncoderError]) -> Response:
        response = self._send(command)
        if not response.ok:
            raise error(f"{what}: the card said {describe_sw(response.sw)}", sw=response.sw)
        return response

    def _connect_emrtd(self) -> profile.ApplicationInfo:
        """Connect and select the eMRTD application with its FCP."""
        self.probe()
        self.link.connect()
        response = self._send(profile.select_aid(fcp=True))
        if response.sw in (SW_FILE_NOT_FOUND, 0x6D00, 0x6E00):
            raise WrongCardType(
                f"this card has no eMRTD application ({describe_sw(response.sw)}); "
                "use a blank national ID card of the issued type",
                sw=response.sw,
            )
        if not response.ok:
            raise CardProtocolError(f"SELECT eMRTD application: {describe_sw(response.sw)}")
        try:
            return profile.ApplicationInfo.parse(response.data)
        except (ValueError, TlvError):
            return profile.ApplicationInfo(0, [], 0)

    # --- the chip's identity ------------------------------------------------------------

    def chip_serial(self) -> str:
        """The chip's serial number from its GlobalPlatform CPLC data (GET DATA 9F7F):
        IC fabricator, IC type, IC batch identifier and IC serial number, as upper-case
        hex ``FFFF-TTTT-BBBB-SSSSSSSS``.

        Not the contactless UID: an eMRTD chip may answer each field with a random UID
        (ICAO 9303 privacy), and the ATR names the card type, not the card. The CPLC is
        written at manufacture and never changes. WrongCardType when the card gives none.
        """
        try:
            self.probe()
            self.link.connect()
            response = self._send(profile.get_cplc())
            if not response.ok:
                raise WrongCardType(
                    f"the card does not give its chip serial (GET DATA CPLC: "
                    f"{describe_sw(response.sw)}); use a blank national ID card of the "
                    "issued type",
                    sw=response.sw,
                )
            try:
                cplc = find(parse(response.data), profile.TAG_CPLC)
            except TlvError:
                cplc = None
            if cplc is None or len(cplc) != profile.CPLC_LENGTH:
                raise CardProtocolError("the card's CPLC data is malformed")
        except CardEncoderError as exc:
            self.link.disconnect(reset=False)
            raise self._guard(exc) from None
        self.link.disconnect()
        fields = (cplc[0:2], cplc[2:4], cplc[16:18], cplc[12:16])
        return "-".join(part.hex().upper() for part in fields)

    # --- personalisation ----------------------------------------------------------------

    def personalise(
        self, chip: ChipImage, secrets: object | None = None, *, lock: bool = True
    ) -> PersonalisationReport:
        """Write the chip's files and BAC keys, check the EAC-protected files, lock it.

        A card left half-personalised by an earlier attempt (pulled mid-write) is cleaned
        and written again; a locked card is refused with CardLocked.
        """
        started = time.perf_counter()
        before = (self.link.apdus, self.link.bytes_sent, self.link.bytes_received)
        try:
            report = self._personalise(chip, secrets, lock)
        except CardEncoderError as exc:
            self.link.disconnect(reset=False)
            raise self._guard(exc) from None
        finally:
            elapsed = time.perf_counter() - started
        self.link.disconnect()
        return PersonalisationReport(
            reader=self.link.reader or "",
            atr=self.link.atr.hex().upper(),
            files=report[0],
            apdus=self.link.apdus - before[0],
            bytes_sent=self.link.bytes_sent - before[1],
            bytes_received=self.link.bytes_received - before[2],
            seconds=elapsed,
            cleaned=report[1],
            locked=lock,
            eac_files_checked=report[2],
            keys_loaded=report[3],
            keys_not_loaded=_unsupported_secrets(secrets, report[3]),
        )

    def _personalise(
        self, chip: ChipImage, secrets: object | None, lock: bool
    ) -> tuple[dict[int, int], tuple[int, ...], tuple[int, ...], tuple[str, ...]]:
        info = self._connect_emrtd()
        if info.locked:
            raise CardLocked(
                "this card is already personalised and locked; it cannot be written again. "
                "Use a blank card (and report this one if it should have been blank)"
            )
        cleaned = tuple(info.fids)
        for fid in cleaned:  # a previous attempt stopped half way: start clean
            self._expect(profile.delete_ef(fid), f"DELETE FILE {fid:04X}", WriteFailed)
        chunk = self.settings.write_chunk if self.settings.extended_length else 255
        chunk = min(chunk, self.settings.write_chunk)
        written = {}
        files = {fid: bytes(data) for fid, data in chip.files.items()}
        if self.settings.pace_on_card:
            files[profile.FID_CARD_ACCESS] = card_access(self.settings.pace_parameter_id)
        # EF.SOD last: a card with an EF.SOD has all the files the SOD vouches for.
        for fid in sorted(files, key=lambda f: (f == profile.FID_EF_SOD, f)):
            content = files[fid]
            for command in profile.write_commands(fid, content, chunk):
                self._expect(command, f"writing EF {fid:04X}", WriteFailed)
            written[fid] = len(content)
        k_enc, k_mac = document_keys(self.crypto, chip.mrz_information)
        self._expect(profile.put_bac_keys(k_enc, k_mac), "storing the BAC keys", WriteFailed)
        if self.settings.pace_on_card:
            secret = password_key(self.crypto, chip.mrz_information)
            self._expect(profile.put_pace_secret(secret), "storing the PACE password", WriteFailed)
        loaded = []
        aa_scalar = _p256_scalar(getattr(secrets, "active_auth_key", None))
        if aa_scalar is not None:
            self._expect(profile.put_aa_key(aa_scalar), "storing the AA key", WriteFailed)
            loaded.append("active_authentication")
        checked = []
        if self.settings.check_eac_files_before_lock:
            for fid in profile.EAC_PROTECTED:
                if fid in chip.files:
                    back = self._read_file(fid, None)
                    if not hmac.compare_digest(back, bytes(chip.files[fid])):
                        raise WriteFailed(
                            f"EF {fid:04X} reads back different from what was written"
                        )
                    checked.append(fid)
        if lock:
            self._expect(profile.select_aid(), "selecting the application", WriteFailed)
            self._expect(profile.activate(), "locking the card (ACTIVATE FILE)", WriteFailed)
        return written, cleaned, tuple(checked), tuple(loaded)

    # --- reading --------------------------------------------------------------------------

    def _transceive(self, command: Command, sm: SecureMessaging | None) -> Response:
        if sm is None:
            return self._send(command)
        try:
            return sm.unprotect(self._send(sm.protect(command)))
        except SmError as exc:
            raise CardProtocolError(f"secure messaging broke: {exc}") from exc

    def _read_file(self, fid: int, sm: SecureMessaging | None) -> bytes:
        """SELECT the EF, read its first bytes to learn its TLV length, then the rest."""
        response = self._transceive(profile.select_ef(fid), sm)
        if response.sw == SW_SECURITY_NOT_SATISFIED:
            raise AccessDenied(f"EF {fid:04X} needs more than BAC (EAC)", sw=response.sw)
        if response.sw == SW_FILE_NOT_FOUND:
            raise CardProtocolError(f"EF {fid:04X} is not on the card", sw=response.sw)
        if not response.ok:
            raise CardProtocolError(f"SELECT EF {fid:04X}: {describe_sw(response.sw)}")
        step = self.settings.read_chunk
        head = self._read_at(0, step, sm, fid)  # short files come whole, with 6282
        try:
            size = total_length(head)
        except TlvError as exc:
            raise CardProtocolError(f"EF {fid:04X} does not start with a TLV") from exc
        data = bytearray(head[:size])
        while len(data) < size:
            piece = self._read_at(len(data), min(step, size - len(data)), sm, fid)
            if not piece:
                raise CardProtocolError(f"EF {fid:04X} ended at {len(data)} of {size} bytes")
            data += piece
        return bytes(data)

    def _read_at(self, offset: int, length: int, sm: SecureMessaging | None, fid: int) -> bytes:
        command = profile.read_binary(offset, length)
        response = self._transceive(command, sm)
        if response.sw not in (SW_OK, SW_WARNING_EOF):
            if response.sw == SW_SECURITY_NOT_SATISFIED:
                raise AccessDenied(f"reading EF {fid:04X} was refused", sw=response.sw)
            raise CardProtocolError(f"READ BINARY EF {fid:04X}: {describe_sw(response.sw)}")
        if command.ins & 1:
            try:
                value = find(parse(response.data), 0x53)
            except TlvError as exc:
                raise CardProtocolError("odd-INS READ BINARY without DO'53'") from exc
            return value or b""
        return response.data

    def _bac(self, mrz_information: str) -> SecureMessaging:
        response = self._send(profile.get_challenge())
        if not response.ok or len(response.data) != 8:
            raise CardProtocolError(f"GET CHALLENGE: {describe_sw(response.sw)}")
        terminal = BacTerminal(self.crypto, *document_keys(self.crypto, mrz_information))
        response = self._send(
            profile.mutual_authenticate(terminal.authenticate_data(response.data))
        )
        if response.sw == SW_VERIFICATION_FAILED:
            raise BacFailed(
                "the card refused our BAC keys: the MRZ (document number, birth or expiry "
                "date) does not match this card",
                sw=response.sw,
            )
        if not response.ok:
            raise BacFailed(f"MUTUAL AUTHENTICATE: {describe_sw(response.sw)}", sw=response.sw)
        try:
            return terminal.finish(response.data)
        except BacError as exc:
            raise BacFailed(f"the card's BAC answer does not verify: {exc}") from exc

    def _pace(self, mrz_information: str, parameter_id: int) -> SecureMessaging:
        terminal = PaceTerminal(
            self.crypto, password_key(self.crypto, mrz_information), parameter_id
        )
        response = self._send(mse_set_at(parameter_id))
        if not response.ok:
            raise PaceFailed(f"MSE:Set AT for PACE: {describe_sw(response.sw)}", sw=response.sw)
        try:
            answer = self._pace_step(terminal.start())
            answer = self._pace_step(terminal.map_nonce(dynamic_data(answer, 0x80)))
            answer = self._pace_step(terminal.key_agreement(dynamic_data(answer, 0x82)))
            answer = self._pace_step(terminal.mutual_authentication(dynamic_data(answer, 0x84)))
            sm = terminal.finish(dynamic_data(answer, 0x86))
        except PaceError as exc:
            raise PaceFailed(f"PACE failed: {exc}") from exc
        # After PACE, the application is selected again, under secure messaging.
        if not self._transceive(profile.select_aid(), sm).ok:
            raise CardProtocolError("SELECT of the eMRTD application after PACE failed")
        return sm

    def _pace_step(self, command: Command) -> bytes:
        response = self._send(command)
        if response.sw == SW_VERIFICATION_FAILED:
            raise PaceFailed(
                "the card refused our PACE password: the MRZ (document number, birth or "
                "expiry date) does not match this card",
                sw=response.sw,
            )
        if not response.ok:
            raise PaceFailed(f"GENERAL AUTHENTICATE: {describe_sw(response.sw)}", sw=response.sw)
        return response.data

    def _open_session(self, mrz_information: str) -> tuple[SecureMessaging, str]:
        """PACE when the card offers it and the settings allow it, else BAC."""
        self._connect_emrtd()
        mode = self.settings.access
        if mode != "bac":
            parameter_id = None
            try:
                parameter_id = supported_pace(self._read_file(profile.FID_CARD_ACCESS, None))
            except CardProtocolError as exc:
                if exc.sw != SW_FILE_NOT_FOUND:
                    raise
            if parameter_id is not None:
                return self._pace(mrz_information, parameter_id), "pace"
            if mode == "pace":
                raise PaceFailed("this card does not offer PACE (no usable EF.CardAccess)")
        return self._bac(mrz_information), "bac"

    def read_back(
        self, mrz_information: str, fids: Iterable[int] | None = None
    ) -> dict[int, bytes]:
        """Read EFs under BAC + secure messaging: {FID: bytes}. Default: EF.COM, EF.SOD and
        every DG that EF.COM lists and BAC may read."""
        return self.read_back_report(mrz_information, fids).files

    def read_back_report(
        self,
        mrz_information: str,
        fids: Iterable[int] | None = None,
        *,
        active_authentication: bool = False,
    ) -> ReadBackReport:
        """Like :meth:`read_back`, with counts and times; with ``active_authentication``
        and DG15 read, the chip must also sign a fresh challenge with DG15's key."""
        started = time.perf_counter()
        before = (self.link.apdus, self.link.bytes_sent, self.link.bytes_received)
        try:
            files, refused, missing, access = self._read_back(mrz_information, fids)
            aa = None
            if active_authentication and profile.FID_DG15 in files:
                aa = self._active_authentication(files[profile.FID_DG15])
        except CardEncoderError as exc:
            self.link.disconnect(reset=False)
            raise self._guard(exc) from None
        self.link.disconnect()
        return ReadBackReport(
            files=files,
            refused=refused,
            missing=missing,
            access=access,
            active_authentication=aa,
            apdus=self.link.apdus - before[0],
            bytes_sent=self.link.bytes_sent - before[1],
            bytes_received=self.link.bytes_received - before[2],
            seconds=time.perf_counter() - started,
        )

    def _read_back(
        self, mrz_information: str, fids: Iterable[int] | None
    ) -> tuple[dict[int, bytes], tuple[int, ...], tuple[int, ...], str]:
        sm, access = self._open_session(mrz_information)
        self._session = sm
        if fids is None:
            com = self._read_file(profile.FID_EF_COM, sm)
            wanted = [profile.FID_EF_COM, *_fids_in_com(com), profile.FID_EF_SOD]
            files = {profile.FID_EF_COM: com}
        else:
            wanted = list(fids)
            files = {}
        refused = []
        missing = []
        for fid in wanted:
            if fid in files:
                continue
            if fid in profile.EAC_PROTECTED:
                refused.append(fid)
                continue
            try:
                files[fid] = self._read_file(fid, sm)
            except AccessDenied:
                refused.append(fid)
            except CardProtocolError as exc:
                if exc.sw != SW_FILE_NOT_FOUND:
                    raise
                missing.append(fid)
        return files, tuple(refused), tuple(missing), access

    def _active_authentication(self, dg15: bytes) -> bool:
        """INTERNAL AUTHENTICATE under the open session; True when the signature over our
        random challenge verifies with DG15's public key (the chip is not a clone)."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

        from enrollment.icao.errors import LdsError
        from enrollment.icao.lds import parse_dg15

        try:
            public_key = parse_dg15(dg15)
        except LdsError as exc:
            raise CardProtocolError(f"DG15 cannot be read: {exc}") from exc
        challenge = self.crypto.random(8)
        response = self._transceive(profile.internal_authenticate(challenge), self._session)
        if not response.ok or len(response.data) != 64:
            return False
        signature = encode_dss_signature(
            int.from_bytes(response.data[:32], "big"), int.from_bytes(response.data[32:], "big")
        )
        try:
            public_key.verify(signature, challenge, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True

    # --- verification -------------------------------------------------------------------

    def verify(self, chip: ChipImage, csca: Sequence[x509.Certificate]) -> VerificationReport:
        """Read the card back under BAC, compare with ``chip`` byte for byte, and run
        passive authentication on what was read against the trusted ``csca``."""
        from enrollment.icao.errors import PassiveAuthError
        from enrollment.icao.passive import verify_passive

        read = self.read_back_report(
            chip.mrz_information, sorted(chip.files), active_authentication=True
        )
        different = [
            fid
            for fid, data in read.files.items()
            if not hmac.compare_digest(data, bytes(chip.files[fid]))
        ]
        # Only the EAC-protected groups (DG3/DG4) may be refused under BAC/PACE; any
        # other refusal means the card cannot give what it should.
        refused = [fid for fid in read.refused if fid not in profile.EAC_PROTECTED]
        if different or read.missing or refused:
            error = VerificationFailed(
                "the card does not hold what was written "
                f"(different: {_fid_list(different)}; missing: {_fid_list(read.missing)}; "
                f"refused under {read.access.upper()}: {_fid_list(refused)}); "
                "personalise a new card"
            )
            raise self._guard(error)
        sod = read.files.get(profile.FID_EF_SOD)
        if sod is None:
            raise self._guard(VerificationFailed("EF.SOD could not be read back"))
        groups = {
            profile.dg_for_fid(fid): data
            for fid, data in read.files.items()
            if profile.dg_for_fid(fid)
        }
        try:
            passive = verify_passive(sod, groups, csca)
        except PassiveAuthError as exc:
            raise self._guard(VerificationFailed(f"passive authentication failed: {exc}")) from exc
        if read.active_authentication is False:
            raise self._guard(
                VerificationFailed(
                    "Active Authentication failed: the chip cannot sign with the key in DG15 "
                    "(AA key not loaded, or not this chip); personalise a new card"
                )
            )
        self.health.present()
        return VerificationReport(
            compared=tuple(sorted(read.files)),
            not_readable=read.refused,
            passive=passive,
            active_authentication=read.active_authentication,
            read=read,
        )


def _fids_in_com(com: bytes) -> list[int]:
    """The DG FIDs EF.COM lists (tag 5C holds the DG tags: 61 DG1, 75 DG2, 63 DG3 ...)."""
    tags = {0x61: 1, 0x75: 2, 0x63: 3, 0x76: 4, 0x65: 5, 0x66: 6, 0x67: 7, 0x68: 8}
    tags.update({0x69: 9, 0x6A: 10, 0x6B: 11, 0x6C: 12, 0x6D: 13, 0x6E: 14, 0x6F: 15, 0x70: 16})
    try:
        body = find(parse(com), 0x60)
        listed = find(parse(body or b""), 0x5C) or b""
    except TlvError as exc:
        raise CardProtocolError(f"EF.COM is malformed: {exc}") from exc
    return [profile.fid_for_dg(tags[t]) for t in listed if t in tags]


def _fid_list(fids: Iterable[int]) -> str:
    return ", ".join(f"{fid:04X}" for fid in fids) or "none"


def _p256_scalar(key: object) -> bytes | None:
    """The 32-byte private scalar of a P-256 key (what PUT DATA C4 takes), else None."""
    from cryptography.hazmat.primitives.asymmetric import ec

    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        return key.private_numbers().private_value.to_bytes(32, "big")
    return None


def _unsupported_secrets(secrets: object | None, loaded: tuple[str, ...]) -> tuple[str, ...]:
    """Names of the keys in ``secrets`` that did not go into the chip (CA has no command
    yet; AA only with a P-256 key)."""
    if secrets is None:
        return ()
    names = []
    for attribute, name in (
        ("active_auth_key", "active_authentication"),
        ("chip_auth_key", "chip_authentication"),
    ):
        if getattr(secrets, attribute, None) is not None and name not in loaded:
            names.append(name)
    return tuple(names)


__all__ = [
    "CardEncoder",
    "CardRemoved",
    "ChipImage",
    "EncoderSettings",
    "PersonalisationReport",
    "ReadBackReport",
    "VerificationReport",
]
