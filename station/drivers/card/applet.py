"""The chip side of our card emulator: an ISO 7816-4 card with the LDS1 eMRTD application.

``process(command APDU bytes) -> response APDU bytes``, nothing else: no sockets, no
files. The host (:mod:`.emulator`) feeds it APDUs from vpcd and persists
:meth:`EmrtdApplet.export` between sessions. Life cycle: INITIALISATION (files can be
created and written in plain, the BAC keys set) -> ACTIVATE FILE -> OPERATIONAL (files are
read-only and only under BAC secure messaging; DG3/DG4 refused, they need EAC).
MicroPython-compatible; crypto is injected.
"""

from .apdu import (
    SW_CLA_NOT_SUPPORTED,
    SW_COMMAND_NOT_ALLOWED,
    SW_CONDITIONS_NOT_SATISFIED,
    SW_FILE_EXISTS,
    SW_FILE_NOT_FOUND,
    SW_INS_NOT_SUPPORTED,
    SW_NOT_ENOUGH_MEMORY,
    SW_OK,
    SW_REFERENCED_DATA_NOT_FOUND,
    SW_SECURITY_NOT_SATISFIED,
    SW_SM_INCORRECT,
    SW_UNKNOWN,
    SW_VERIFICATION_FAILED,
    SW_WARNING_EOF,
    SW_WRONG_DATA,
    SW_WRONG_LENGTH,
    SW_WRONG_OFFSET,
    SW_WRONG_P1P2,
    ApduError,
    Command,
    Response,
)
from .bac import BacChip, BacError
from .cardcrypto import CardCrypto
from .pace import OID_PACE_ECDH_GM_AES_128, PASSWORD_MRZ, PaceChip, PaceError, supported_pace
from .profile import (
    AID_EMRTD,
    CPLC_LENGTH,
    EAC_PROTECTED,
    FID_CARD_ACCESS,
    FID_DG1,
    FID_EF_COM,
    FID_EF_SOD,
    FID_MF,
    LC_INITIALISATION,
    LC_OPERATIONAL,
    PUBLIC_FIDS,
    TAG_AA_KEY,
    TAG_BAC_KEYS,
    TAG_CPLC,
    TAG_PACE_SECRET,
    application_fcp,
)
from .sm import SecureMessaging, SmError  # noqa: F401 (used in a type comment)
from .tlv import TlvError, find, parse, tlv

DEFAULT_CAPACITY = 256 * 1024  # bytes of EF content the chip holds (a large ID chip)


def _atr(historical: bytes) -> bytes:
    """3B 8n 80 01 <historical> TCK: the PC/SC part 3 ATR of a contactless ISO 14443-4 card."""
    body = bytes([0x8 << 4 | len(historical), 0x80, 0x01]) + historical
    tck = 0
    for b in body:
        tck ^= b
    return b"\x3b" + body + bytes([tck])


def _new_cplc(crypto: CardCrypto) -> bytes:
    """The 42 bytes of CPLC data of a new chip: IC fabricator "VN" and IC type "EM" (not
    registered codes: they mark the emulator), then OS identifier, release date and level
    and fabrication date (zero), a random 4-byte IC serial number and 2-byte IC batch
    identifier, and zero for the module, embedding and personalisation fields."""
    serial = crypto.random(6)
    return b"VNEM" + bytes(8) + serial + bytes(CPLC_LENGTH - 18)


class Card:
    """What the emulator host drives: an ATR, power-up, APDUs, and a persistable state."""

    atr = b""
    writes = 0

    def power_on(self) -> None:
        raise NotImplementedError

    def process(self, raw: bytes) -> bytes:
        raise NotImplementedError

    def export(self) -> dict[str, object]:
        raise NotImplementedError

    def restore(self, state: dict[str, object]) -> None:
        raise NotImplementedError


class CardError(Exception):
    """Ends a command with a status word (raised inside the applet only)."""

    def __init__(self, sw: int) -> None:
        # super(), not Exception.__init__(self, sw): MicroPython's built-in exception types
        # have no __init__ attribute to call.
        super().__init__(sw)
        self.sw = sw


class EmrtdApplet(Card):
    """An eMRTD chip: file system, life cycle, BAC, secure messaging."""

    atr = _atr(b"VNEID-EMU")

    def __init__(self, crypto: CardCrypto, capacity: int = DEFAULT_CAPACITY) -> None:
        self.crypto = crypto
        self.capacity = capacity
        self.lifecycle = LC_INITIALISATION
        self.files = {}  # type: dict[int, bytearray]
        self.bac_keys = b""  # K_enc || K_mac once personalised
        self.pace_secret = b""  # SHA-1 of the MRZ information, for PACE
        self.aa_key = b""  # Active Authentication private scalar (P-256), if any
        self.bac_failures = 0  # failed BAC or PACE authentications (wrong MRZ)
        self.cplc = _new_cplc(crypto)  # the chip's manufacturing identity, never changes
        self.writes = 0  # commands that changed persistent state since power-up
        self.power_on()

    # --- persistence (the host stores this dict) ----------------------------------------

    def export(self) -> dict[str, object]:
        return {
            "lifecycle": self.lifecycle,
            "files": dict([(fid, bytes(data)) for fid, data in self.files.items()]),
            "bac_keys": self.bac_keys,
            "pace_secret": self.pace_secret,
            "aa_key": self.aa_key,
            "bac_failures": self.bac_failures,
            "cplc": self.cplc,
        }

    def restore(self, state: dict[str, object]) -> None:
        lifecycle = state["lifecycle"]
        files = state["files"]
        keys = state["bac_keys"]
        failures = state["bac_failures"]
        pace_secret = state.get("pace_secret", b"")
        aa_key = state.get("aa_key", b"")
        cplc = state.get("cplc", self.cplc)  # a state saved before CPLC: keep the new one
        if not (
            isinstance(lifecycle, int)
            and isinstance(files, dict)
            and isinstance(keys, bytes)
            and isinstance(failures, int)
            and isinstance(pace_secret, bytes)
            and isinstance(aa_key, bytes)
            and isinstance(cplc, bytes)
            and len(cplc) == CPLC_LENGTH
        ):
            raise ValueError("malformed card state")
        self.lifecycle = lifecycle
        self.files = dict([(int(fid), bytearray(data)) for fid, data in files.items()])
        self.bac_keys = keys
        self.pace_secret = pace_secret
        self.aa_key = aa_key
        self.bac_failures = failures
        self.cplc = cplc
        self.power_on()

    # --- transient state ----------------------------------------------------------------

    def power_on(self) -> None:
        """Cold or warm reset: selection, challenge and SM session are forgotten."""
        self.app_selected = False
        self.current_ef = None  # type: int | None
        self.sm = None  # type: SecureMessaging | None
        self.bac = None  # type: BacChip | None
        self.pace = None  # type: PaceChip | None

    def process(self, raw: bytes) -> bytes:
        """One command APDU in, one response APDU out; never raises.

        Whatever the bytes, the answer is a status word: a malformed APDU gets 6700, and an
        error this core did not foresee (a bug) gets 6F00 "no precise diagnosis" and ends
        any secure-messaging session, as a card OS does, instead of killing its host.
        """
        try:
            return self._process(raw).encode()
        except Exception:
            self.sm = None
            self.bac = None
            self.pace = None
            return Response(b"", SW_UNKNOWN).encode()

    def _process(self, raw: bytes) -> Response:
        try:
            command = Command.decode(raw)
        except ApduError:
            self.sm = None  # answered in plain: a secure-messaging session is over
            return Response(b"", SW_WRONG_LENGTH)
        if command.cla & 0x0C == 0x0C:
            return self._process_protected(command)
        # A plain command ends any secure-messaging session (ICAO 9303-11 9.8.6).
        self.sm = None
        chained = command.cla == 0x10 and command.ins == 0x86  # GENERAL AUTHENTICATE chain
        global_platform = command.cla == 0x80 and command.ins == 0xCA  # GET DATA (CPLC)
        if command.cla != 0x00 and not chained and not global_platform:
            return Response(b"", SW_CLA_NOT_SUPPORTED)
        return self._dispatch(command, False)

    def _process_protected(self, command: Command) -> Response:
        sm = self.sm
        if sm is None:
            return Response(b"", SW_SM_INCORRECT)
        try:
            plain = sm.unprotect_command(command)
        except SmError:
            self.sm = None
            return Response(b"", SW_SM_INCORRECT)
        return sm.protect_response(self._dispatch(plain, True), command.ins)

    def _dispatch(self, command: Command, secure: bool) -> Response:
        try:
            return self._handle(command, secure)
        except CardError as exc:
            return Response(b"", exc.sw)
        except TlvError:
            return Response(b"", SW_WRONG_DATA)

    def _handle(self, c: Command, secure: bool) -> Response:
        ins = c.ins
        if ins == 0xA4:
            return self._select(c, secure)
        if ins in (0xB0, 0xB1):
            return self._read_binary(c, secure)
        if ins in (0xD6, 0xD7):
            return self._update_binary(c, secure)
        if ins == 0xE0:
            return self._create_file(c, secure)
        if ins == 0xE4:
            return self._delete_file(c, secure)
        if ins == 0xDA:
            return self._put_data(c, secure)
        if ins == 0x44:
            return self._activate(c, secure)
        if ins == 0x84:
            return self._get_challenge(c, secure)
        if ins == 0x82:
            return self._mutual_authenticate(c, secure)
        if ins == 0x22:
            return self._manage_security_environment(c, secure)
        if ins == 0x86:
            return self._general_authenticate(c, secure)
        if ins == 0x88:
            return self._internal_authenticate(c, secure)
        if ins == 0xCA:
            return self._get_data(c, secure)
        raise CardError(SW_INS_NOT_SUPPORTED)

    # --- helpers ------------------------------------------------------------------------

    @property
    def operational(self) -> bool:
        return self.lifecycle == LC_OPERATIONAL

    def _require_personalisation(self) -> None:
        if self.operational:
            raise CardError(SW_CONDITIONS_NOT_SATISFIED)
        if not self.app_selected:
            raise CardError(SW_CONDITIONS_NOT_SATISFIED)

    def _require_read_access(self, fid: int, secure: bool) -> None:
        if fid in PUBLIC_FIDS:
            return
        if self.operational and (not secure or fid in EAC_PROTECTED):
            raise CardError(SW_SECURITY_NOT_SATISFIED)

    def _file(self, fid: int) -> bytearray:
        data = self.files.get(fid)
        if data is None:
            raise CardError(SW_FILE_NOT_FOUND)
        return data

    def _used(self) -> int:
        total = 0
        for data in self.files.values():
            total += len(data)
        return total

    def _changed(self) -> None:
        self.writes += 1

    # --- commands -----------------------------------------------------------------------

    def _select(self, c: Command, secure: bool) -> Response:
        fcp_wanted = c.p2 & 0x0C == 0x04 or c.p2 & 0x0C == 0x00
        if c.p1 == 0x04:  # by DF name
            if c.data != AID_EMRTD:
                raise CardError(SW_FILE_NOT_FOUND)
            self.app_selected = True
            self.current_ef = None
            if not fcp_wanted:
                return Response(b"", SW_OK)
            fids = sorted(self.files)
            # The failure count once locked: only to a reader that authenticated.
            fcp = application_fcp(
                self.lifecycle, fids, self.bac_failures, not self.operational, secure
            )
            return Response(fcp, SW_OK)
        if c.p1 not in (0x00, 0x02) or len(c.data) not in (0, 2):
            raise CardError(SW_WRONG_P1P2)
        fid = int.from_bytes(c.data, "big") if c.data else FID_MF
        if fid == FID_MF:
            self.app_selected = False
            self.current_ef = None
            return Response(b"", SW_OK)
        if not self.app_selected and fid not in PUBLIC_FIDS:
            raise CardError(SW_FILE_NOT_FOUND)
        self._require_read_access(fid, secure)
        data = self._file(fid)
        self.current_ef = fid
        if not fcp_wanted:
            return Response(b"", SW_OK)
        fcp = tlv(
            0x62,
            tlv(0x80, len(data).to_bytes(3, "big"))
            + tlv(0x82, b"\x01")
            + tlv(0x83, fid.to_bytes(2, "big")),
        )
        return Response(fcp, SW_OK)

    def _target_ef(self, c: Command, secure: bool) -> tuple[int, int]:
        """(FID, offset) of a READ/UPDATE BINARY, even INS (P1-P2) or odd INS (DO'54')."""
        if c.ins & 1:
            if c.p1 or c.p2:
                fid = (c.p1 << 8) | c.p2
                if (c.p1 << 8) | c.p2 < 0x20:  # short EF identifier in P2
                    fid = self._fid_for_sfi(c.p2)
            else:
                fid = self._current()
            offset_do = find(parse(c.data), 0x54)
            if offset_do is None:
                raise CardError(SW_WRONG_DATA)
            offset = int.from_bytes(offset_do, "big")
        elif c.p1 & 0x80:  # short EF identifier in P1, offset in P2
            fid = self._fid_for_sfi(c.p1 & 0x1F)
            offset = c.p2
        else:
            fid = self._current()
            offset = (c.p1 << 8) | c.p2
        self._require_read_access(fid, secure)
        self._file(fid)
        self.current_ef = fid
        return fid, offset

    def _fid_for_sfi(self, sfi: int) -> int:
        if not self.app_selected:
            raise CardError(SW_FILE_NOT_FOUND)
        # In FID order, not dict order: MicroPython's dicts do not keep insertion order.
        for fid in sorted(self.files):
            if fid & 0x1F == sfi and fid >> 8 == 0x01:
                return fid
        raise CardError(SW_FILE_NOT_FOUND)

    def _current(self) -> int:
        if self.current_ef is None:
            raise CardError(SW_COMMAND_NOT_ALLOWED)
        return self.current_ef

    def _read_binary(self, c: Command, secure: bool) -> Response:
        fid, offset = self._target_ef(c, secure)
        data = self.files[fid]
        if offset > len(data):
            raise CardError(SW_WRONG_OFFSET)
        want = c.le or 256
        chunk = bytes(data[offset : offset + want])
        sw = SW_OK if len(chunk) == want else SW_WARNING_EOF
        if c.ins & 1:
            chunk = tlv(0x53, chunk)
        return Response(chunk, sw)

    def _update_binary(self, c: Command, secure: bool) -> Response:
        self._require_personalisation()
        if c.ins & 1:
            fid, offset = self._target_ef(c, secure)
            payload = find(parse(c.data), 0x53)
            if payload is None:
                raise CardError(SW_WRONG_DATA)
        else:
            if c.p1 & 0x80:
                raise CardError(SW_WRONG_P1P2)
            fid, offset = self._target_ef(c, secure)
            payload = c.data
        data = self.files[fid]
        if offset > len(data):
            raise CardError(SW_WRONG_OFFSET)
        if offset + len(payload) > len(data):
            raise CardError(SW_NOT_ENOUGH_MEMORY)
        data[offset : offset + len(payload)] = payload
        self._changed()
        return Response(b"", SW_OK)

    def _create_file(self, c: Command, secure: bool) -> Response:
        self._require_personalisation()
        body = find(parse(c.data), 0x62)
        if body is None:
            raise CardError(SW_WRONG_DATA)
        items = parse(body)
        size = find(items, 0x80)
        descriptor = find(items, 0x82)
        fid_bytes = find(items, 0x83)
        if size is None or fid_bytes is None or len(fid_bytes) != 2 or descriptor != b"\x01":
            raise CardError(SW_WRONG_DATA)  # only transparent working EFs in this profile
        fid = int.from_bytes(fid_bytes, "big")
        length = int.from_bytes(size, "big")
        if fid in self.files:
            raise CardError(SW_FILE_EXISTS)
        if fid == FID_MF or fid >> 8 == 0x3F:
            raise CardError(SW_WRONG_DATA)
        if self._used() + length > self.capacity:
            raise CardError(SW_NOT_ENOUGH_MEMORY)
        self.files[fid] = bytearray(length)
        self.current_ef = fid
        self._changed()
        return Response(b"", SW_OK)

    def _delete_file(self, c: Command, secure: bool) -> Response:
        self._require_personalisation()
        fid = int.from_bytes(c.data, "big") if len(c.data) == 2 else self._current()
        self._file(fid)
        del self.files[fid]
        if self.current_ef == fid:
            self.current_ef = None
        self._changed()
        return Response(b"", SW_OK)

    def _put_data(self, c: Command, secure: bool) -> Response:
        self._require_personalisation()
        tag = (c.p1 << 8) | c.p2
        if tag == TAG_BAC_KEYS:
            if len(c.data) != 32:
                raise CardError(SW_WRONG_LENGTH)
            self.bac_keys = c.data
        elif tag == TAG_PACE_SECRET:
            if len(c.data) != 20:
                raise CardError(SW_WRONG_LENGTH)
            self.pace_secret = c.data
        elif tag == TAG_AA_KEY:
            if len(c.data) != 32:
                raise CardError(SW_WRONG_LENGTH)
            self.aa_key = c.data
        else:
            raise CardError(SW_REFERENCED_DATA_NOT_FOUND)
        self._changed()
        return Response(b"", SW_OK)

    def _activate(self, c: Command, secure: bool) -> Response:
        self._require_personalisation()
        required = (FID_EF_COM, FID_EF_SOD, FID_DG1)
        for fid in required:
            if fid not in self.files:
                raise CardError(SW_CONDITIONS_NOT_SATISFIED)
        if not self.bac_keys:
            raise CardError(SW_CONDITIONS_NOT_SATISFIED)
        if FID_CARD_ACCESS in self.files and not self.pace_secret:
            raise CardError(SW_CONDITIONS_NOT_SATISFIED)  # PACE announced, no password
        self.lifecycle = LC_OPERATIONAL
        self.current_ef = None
        self._changed()
        return Response(b"", SW_OK)

    def _get_challenge(self, c: Command, secure: bool) -> Response:
        if not self.operational:
            raise CardError(SW_CONDITIONS_NOT_SATISFIED)
        if c.le != 8:
            raise CardError(SW_WRONG_LENGTH)
        self.bac = BacChip(self.crypto, self.bac_keys[:16], self.bac_keys[16:])
        return Response(self.bac.challenge(), SW_OK)

    def _mutual_authenticate(self, c: Command, secure: bool) -> Response:
        bac = self.bac
        self.bac = None
        if not self.operational or bac is None:
            raise CardError(SW_CONDITIONS_NOT_SATISFIED)
        try:
            answer, session = bac.respond(c.data)
        except BacError:
            # Counted (persisted) so an operator can see probing; BAC itself never blocks.
            self.bac_failures += 1
            self._changed()
            raise CardError(SW_VERIFICATION_FAILED) from None
        self.sm = session
        return Response(answer, SW_OK)

    def _manage_security_environment(self, c: Command, secure: bool) -> Response:
        """MSE:Set AT for PACE with the MRZ password (the only one this chip knows)."""
        self.pace = None
        if not self.operational:
            raise CardError(SW_CONDITIONS_NOT_SATISFIED)
        if (c.p1, c.p2) != (0xC1, 0xA4):
            raise CardError(SW_WRONG_P1P2)
        items = parse(c.data)
        if find(items, 0x80) != OID_PACE_ECDH_GM_AES_128 or find(items, 0x83) != bytes(
            [PASSWORD_MRZ]
        ):
            raise CardError(SW_WRONG_DATA)
        access = self.files.get(FID_CARD_ACCESS)
        if not self.pace_secret or access is None:
            raise CardError(SW_REFERENCED_DATA_NOT_FOUND)
        announced = supported_pace(bytes(access))
        asked = find(items, 0x84)
        parameter_id = asked[0] if asked else announced
        if parameter_id is None or parameter_id != announced:
            raise CardError(SW_WRONG_DATA)
        self.pace = PaceChip(self.crypto, self.pace_secret, parameter_id)
        return Response(b"", SW_OK)

    def _general_authenticate(self, c: Command, secure: bool) -> Response:
        pace = self.pace
        if pace is None or secure:
            raise CardError(SW_CONDITIONS_NOT_SATISFIED)
        last = c.cla & 0x10 == 0
        if last != (pace.step == 4):
            self.pace = None
            raise CardError(SW_CONDITIONS_NOT_SATISFIED)  # chaining out of step
        template = find(parse(c.data), 0x7C)
        if template is None:
            self.pace = None
            raise CardError(SW_WRONG_DATA)
        try:
            answer = pace.answer(template)
        except PaceError:
            self.pace = None
            if pace.step == 4:  # the token: wrong password (MRZ)
                self.bac_failures += 1
                self._changed()
                raise CardError(SW_VERIFICATION_FAILED) from None
            raise CardError(SW_WRONG_DATA) from None
        if last:
            self.pace = None
            self.sm = pace.session()
        return Response(answer, SW_OK)

    def _get_data(self, c: Command, secure: bool) -> Response:
        """GET DATA of the CPLC (GlobalPlatform): readable in any life-cycle state, so a
        station can tell a chip it has already written, or spoiled, from a blank one."""
        if (c.p1 << 8) | c.p2 != TAG_CPLC:
            raise CardError(SW_REFERENCED_DATA_NOT_FOUND)
        return Response(tlv(TAG_CPLC, self.cplc), SW_OK)

    def _internal_authenticate(self, c: Command, secure: bool) -> Response:
        """Active Authentication: sign the terminal's challenge, only under SM."""
        if not self.operational or not secure:
            raise CardError(SW_SECURITY_NOT_SATISFIED)
        if not self.aa_key:
            raise CardError(SW_REFERENCED_DATA_NOT_FOUND)
        if len(c.data) != 8:
            raise CardError(SW_WRONG_LENGTH)
        return Response(self.crypto.ecdsa_p256_sign(self.aa_key, c.data), SW_OK)


class ForeignApplet(Card):
    """A card that is not an eMRTD (an OpenPGP-style applet): the wrong-card fault."""

    atr = _atr(b"OPENPGP1")
    aid = b"\xd2\x76\x00\x01\x24\x01"

    def __init__(self) -> None:
        self.writes = 0

    def power_on(self) -> None:
        return None

    def export(self) -> dict[str, object]:
        return {}

    def restore(self, state: dict[str, object]) -> None:
        return None

    def process(self, raw: bytes) -> bytes:
        try:
            command = Command.decode(raw)
        except ApduError:
            return Response(b"", SW_WRONG_LENGTH).encode()
        if command.cla != 0x00:
            return Response(b"", SW_CLA_NOT_SUPPORTED).encode()
        if command.ins == 0xA4 and command.p1 == 0x04:
            sw = SW_OK if command.data == self.aid else SW_FILE_NOT_FOUND
            return Response(b"", sw).encode()
        return Response(b"", SW_INS_NOT_SUPPORTED).encode()
