"""Our card profile: the eMRTD application's identifiers and the command builders both the
encoder and the emulator use, so that the two sides cannot drift apart.

Standard (ICAO 9303-10/11, ISO/IEC 7816-4/-9): SELECT, READ BINARY (B0/B1), UPDATE
BINARY (D6/D7), CREATE FILE, DELETE FILE, ACTIVATE FILE, GET CHALLENGE, MUTUAL
AUTHENTICATE. Proprietary (our personalisation profile): PUT DATA tag C1 for the BAC keys,
and the A5 proprietary template in the application's FCP listing the EFs present.
Sans-I/O and MicroPython-compatible.
"""

from .apdu import Command
from .tlv import find, parse, tlv

AID_EMRTD = b"\xa0\x00\x00\x02\x47\x10\x01"
FID_MF = 0x3F00
FID_EF_COM = 0x011E
FID_EF_SOD = 0x011D
FID_DG1 = 0x0101
FID_CARD_ACCESS = 0x011C  # in the MF: PACEInfo, readable by anyone (ICAO 9303-10)
PUBLIC_FIDS = (FID_CARD_ACCESS,)

LC_INITIALISATION = 0x03  # ISO 7816-4 life cycle status byte: initialisation state
LC_OPERATIONAL = 0x05  # operational state (activated)

TAG_BAC_KEYS = 0x00C1  # PUT DATA P1-P2: K_enc || K_mac (32 bytes)
TAG_PACE_SECRET = 0x00C3  # PUT DATA P1-P2: SHA-1 of the MRZ information (20 bytes)
TAG_AA_KEY = 0x00C4  # PUT DATA P1-P2: Active Authentication P-256 private scalar (32 bytes)
TAG_CPLC = 0x9F7F  # GET DATA P1-P2: GlobalPlatform Card Production Life Cycle data
CPLC_LENGTH = 42  # bytes of CPLC data (GlobalPlatform Card Specification, GET DATA)
FID_DG15 = 0x010F
TAG_FIDS_PRESENT = 0xC1  # in the FCP's A5 template: the EF identifiers, 2 bytes each
TAG_BAC_FAILURES = 0xC2  # in the FCP's A5 template: failed BAC/PACE count (see card.md)

# ICAO 9303-10 table: DG3 (fingerprints) and DG4 (iris) need Extended Access Control.
EAC_PROTECTED = (0x0103, 0x0104)
# Every EF an LDS1 application may hold: EF.COM, EF.SOD, DG1..DG16.
LDS_FIDS = tuple([0x011E, 0x011D] + [0x0100 + n for n in range(1, 17)])

MAX_OFFSET_EVEN_INS = 0x7FFF  # P1-P2 offsets are 15 bits; beyond, the odd INS with DO'54'


def fid_for_dg(number: int) -> int:
    return 0x0100 + number


def dg_for_fid(fid: int) -> int:
    """Data-group number of a DG's FID (0x0101 -> 1); 0 for EF.COM / EF.SOD."""
    if 0x0101 <= fid <= 0x0110:
        return fid - 0x0100
    return 0


def offset_do(offset: int) -> bytes:
    """DO'54' holding an offset, minimal big-endian."""
    n = 1
    while offset >> (8 * n):
        n += 1
    return tlv(0x54, offset.to_bytes(n, "big"))


def ef_fcp(fid: int, size: int) -> bytes:
    """FCP template for CREATE FILE: a transparent working EF of ``size`` bytes."""
    return tlv(
        0x62,
        tlv(0x80, size.to_bytes(3, "big")) + tlv(0x82, b"\x01") + tlv(0x83, fid.to_bytes(2, "big")),
    )


def select_aid(fcp: bool = False) -> Command:
    if fcp:
        return Command(0x00, 0xA4, 0x04, 0x04, AID_EMRTD, 256)
    return Command(0x00, 0xA4, 0x04, 0x0C, AID_EMRTD)


def select_ef(fid: int, fcp: bool = False) -> Command:
    if fcp:
        return Command(0x00, 0xA4, 0x02, 0x04, fid.to_bytes(2, "big"), 256)
    return Command(0x00, 0xA4, 0x02, 0x0C, fid.to_bytes(2, "big"))


def create_ef(fid: int, size: int) -> Command:
    return Command(0x00, 0xE0, 0x00, 0x00, ef_fcp(fid, size))


def delete_ef(fid: int) -> Command:
    return Command(0x00, 0xE4, 0x02, 0x00, fid.to_bytes(2, "big"))


def put_bac_keys(k_enc: bytes, k_mac: bytes) -> Command:
    return Command(0x00, 0xDA, TAG_BAC_KEYS >> 8, TAG_BAC_KEYS & 0xFF, k_enc + k_mac)


def put_pace_secret(secret: bytes) -> Command:
    return Command(0x00, 0xDA, TAG_PACE_SECRET >> 8, TAG_PACE_SECRET & 0xFF, secret)


def put_aa_key(scalar: bytes) -> Command:
    return Command(0x00, 0xDA, TAG_AA_KEY >> 8, TAG_AA_KEY & 0xFF, scalar)


def internal_authenticate(challenge: bytes) -> Command:
    """Active Authentication (ICAO 9303-11 6.1): the chip signs the 8-byte challenge."""
    return Command(0x00, 0x88, 0x00, 0x00, challenge, 256)


def activate() -> Command:
    """ISO 7816-9 ACTIVATE FILE on the current DF (the application): end personalisation."""
    return Command(0x00, 0x44, 0x00, 0x00)


def get_cplc() -> Command:
    """GlobalPlatform GET DATA (CLA 80) for the CPLC data: the chip's manufacturing identity
    (IC fabricator, type, batch and serial number), fixed for the chip's life."""
    return Command(0x80, 0xCA, TAG_CPLC >> 8, TAG_CPLC & 0xFF, b"", 256)


def get_challenge() -> Command:
    return Command(0x00, 0x84, 0x00, 0x00, b"", 8)


def mutual_authenticate(data: bytes) -> Command:
    return Command(0x00, 0x82, 0x00, 0x00, data, 40)


def update_binary(offset: int, data: bytes) -> Command:
    """UPDATE BINARY of the current EF: even INS up to offset 32767, odd INS beyond."""
    if offset <= MAX_OFFSET_EVEN_INS:
        return Command(0x00, 0xD6, offset >> 8, offset & 0xFF, data)
    return Command(0x00, 0xD7, 0x00, 0x00, offset_do(offset) + tlv(0x53, data))


def update_overhead(offset: int) -> int:
    """Bytes of the command data a chunk at ``offset`` spends on anything but the data."""
    if offset <= MAX_OFFSET_EVEN_INS:
        return 0
    return len(offset_do(offset)) + 4  # DO'53' tag and up to three length bytes


def read_binary(offset: int, length: int) -> Command:
    """READ BINARY of the current EF: even INS up to offset 32767, odd INS beyond."""
    if offset <= MAX_OFFSET_EVEN_INS:
        return Command(0x00, 0xB0, offset >> 8, offset & 0xFF, b"", length)
    return Command(0x00, 0xB1, 0x00, 0x00, offset_do(offset), length)


def write_commands(fid: int, content: bytes, chunk: int) -> list[Command]:
    """CREATE FILE, then UPDATE BINARY in chunks of at most ``chunk`` bytes of command data."""
    out = [create_ef(fid, len(content))]
    offset = 0
    while offset < len(content):
        room = chunk - update_overhead(offset)
        piece = content[offset : offset + room]
        out.append(update_binary(offset, piece))
        offset += len(piece)
    return out


class ApplicationInfo:
    """What SELECT of the application with FCP says: life cycle, EFs present, BAC failures."""

    def __init__(self, lifecycle: int, fids: list[int], bac_failures: int) -> None:
        self.lifecycle = lifecycle
        self.fids = fids
        self.bac_failures = bac_failures

    @property
    def locked(self) -> bool:
        return self.lifecycle == LC_OPERATIONAL

    @staticmethod
    def parse(fcp: bytes) -> "ApplicationInfo":
        outer = parse(fcp)
        body = find(outer, 0x62)
        if body is None:
            raise ValueError("not an FCP template")
        inner = parse(body)
        lc = find(inner, 0x8A)
        lifecycle = lc[0] if lc else 0
        fids = []
        failures = 0
        proprietary = find(inner, 0xA5)
        if proprietary is not None:
            items = parse(proprietary)
            listed = find(items, TAG_FIDS_PRESENT) or b""
            for i in range(0, len(listed) - 1, 2):
                fids.append((listed[i] << 8) | listed[i + 1])
            count = find(items, TAG_BAC_FAILURES)
            if count:
                failures = int.from_bytes(count, "big")
        return ApplicationInfo(lifecycle, fids, failures)


def application_fcp(
    lifecycle: int, fids: list[int], bac_failures: int, full: bool, counted: bool = False
) -> bytes:
    """The application's FCP. The proprietary A5 part: the EFs present and the failure
    count while personalising (``full``); the failure count alone when ``counted`` (once
    locked, to a reader under secure messaging); otherwise none."""
    body = tlv(0x84, AID_EMRTD) + tlv(0x8A, bytes([lifecycle]))
    if full or counted:
        proprietary = b""
        if full:
            listed = b"".join([f.to_bytes(2, "big") for f in fids])
            proprietary += tlv(TAG_FIDS_PRESENT, listed)
        proprietary += tlv(TAG_BAC_FAILURES, bac_failures.to_bytes(2, "big"))
        body += tlv(0xA5, proprietary)
    return tlv(0x62, body)
