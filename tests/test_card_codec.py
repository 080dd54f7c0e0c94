"""APDU, BER-TLV and vpcd framing codecs, and the MicroPython subset of the card cores."""

import ast
import contextlib
import re
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from station.drivers.card import cardcrypto, profile
from station.drivers.card.apdu import ApduError, Command, Response, describe_sw
from station.drivers.card.applet import EmrtdApplet
from station.drivers.card.hostcrypto import HostCrypto
from station.drivers.card.tlv import TlvError, parse, tlv, total_length
from station.drivers.card.vpcd import CTRL_ATR, CTRL_POWER_ON, CardSlot, Deframer, frame
from tests.micropython.subset import runtime_gaps

pytestmark = pytest.mark.timeout(60)

CARD_DIR = Path(__file__).resolve().parents[1] / "station" / "drivers" / "card"
CORE_MODULES = ("apdu", "tlv", "cardcrypto", "bac", "pace", "ec", "sm", "applet", "profile", "vpcd")

H = bytes.fromhex


def test_apdu_cases_short_and_extended() -> None:
    assert Command(0x00, 0x84, 0, 0, b"", 8).encode() == H("0084000008")
    assert Command(0x00, 0xA4, 2, 0x0C, H("011E")).encode() == H("00A4020C02011E")
    assert Command(0x00, 0xB0, 0, 0, b"", 256).encode() == H("00B0000000")
    assert Command(0x00, 0xB0, 0, 0, b"", 65536).encode() == H("00B00000000000")
    assert Command(0x00, 0xB0, 0, 0, b"", 1000).encode() == H("00B000000003E8")
    big = Command(0x00, 0xD6, 0, 0, bytes(300), 2)
    assert big.encode()[4:7] == H("00012C")
    assert big.encode()[-2:] == H("0002")
    assert Command(0x00, 0x44, 0, 0).encode() == H("00440000")
    assert Command(0x00, 0xA4, 2, 0x0C, H("011E")).encode(extended=True) == H("00A4020C000002011E")


@given(
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=600),
    st.one_of(st.none(), st.integers(1, 65536)),
    st.booleans(),
)
def test_apdu_round_trip(ins: int, p2: int, data: bytes, le: int | None, extended: bool) -> None:
    command = Command(0x00, ins, 0x01, p2, data, le)
    decoded = Command.decode(command.encode(extended))
    if le == 256 and (extended or command.needs_extended()):
        assert decoded.le == 256
    assert decoded == command


# The short/extended boundaries: byte 5 = 00 announces extended length, which needs at
# least 7 bytes (a 6-byte APDU with a 00 fifth byte used to raise IndexError).
APDU_BOUNDARIES = (
    bytes(4),
    bytes(5),
    bytes(6),
    H("00a404000001"),
    H("00a4040000ff"),
    bytes(7),
    H("00a40400000001"),
    bytes(8),
    H("00a404000000012a"),
    H("00a404000000012a00"),
    H("00a404000000012a0000"),
    H("00a404000000012a000000"),
    H("00a40400012a"),
    H("00a40400012a00"),
    H("00a40400012a0000"),
    H("00a40400ff") + bytes(255),
    H("00a4040000ffff"),
)


@given(st.binary(max_size=12))
@example(bytes(6))
@example(H("00a404000001"))
@example(H("0000000000ff"))
@example(H("00000000000000ff"))
def test_apdu_decode_never_crashes_otherwise(raw: bytes) -> None:
    with contextlib.suppress(ApduError):
        Command.decode(raw)


@pytest.mark.parametrize("raw", APDU_BOUNDARIES, ids=lambda raw: raw.hex() or "empty")
def test_apdu_decode_at_the_length_boundaries(raw: bytes) -> None:
    """A well-formed case decodes and encodes back to itself; anything else is ApduError."""
    try:
        command = Command.decode(raw)
    except ApduError:
        return
    assert command.encode(extended=len(raw) > 5 and raw[4] == 0) == raw


def test_apdu_decode_refuses_six_bytes_with_an_extended_marker() -> None:
    with pytest.raises(ApduError):
        Command.decode(bytes(6))
    with pytest.raises(ApduError):
        Command.decode(H("00a404000001"))
    assert Command.decode(H("00a40400000001")).le == 1  # 7 bytes: case 2E
    assert Command.decode(H("00a40400012a")).data == b"\x2a"  # 6 bytes, Lc 1: case 3S


def test_response_and_status_words() -> None:
    assert Response.decode(H("01029000")) == Response(H("0102"), 0x9000)
    assert Response(b"", 0x6982).encode() == H("6982")
    assert describe_sw(0x6982) == "6982 security status not satisfied"
    assert "3 tries left" in describe_sw(0x63C3)
    assert "exact length is 16" in describe_sw(0x6C10)
    with pytest.raises(ApduError):
        Response.decode(b"\x90")


@given(st.lists(st.tuples(st.sampled_from([0x53, 0x5F1F, 0x87, 0x8E]), st.binary(max_size=300))))
def test_tlv_round_trip(items: list[tuple[int, bytes]]) -> None:
    encoded = b"".join(tlv(t, v) for t, v in items)
    assert parse(encoded) == items
    if items:
        assert total_length(encoded) == len(tlv(*items[0]))


def test_tlv_rejects_truncation() -> None:
    with pytest.raises(TlvError):
        parse(H("5303AABB"))
    with pytest.raises(TlvError):
        parse(H("5F"))


def test_vpcd_framing_and_slot() -> None:
    deframer = Deframer()
    wire = frame(bytes([CTRL_POWER_ON])) + frame(bytes([CTRL_ATR])) + frame(H("00A4040C07"))
    assert deframer.feed(wire[:3]) == [bytes([CTRL_POWER_ON])]
    payloads = deframer.feed(wire[3:])
    assert payloads == [bytes([CTRL_ATR]), H("00A4040C07")]
    slot = CardSlot(EmrtdApplet(HostCrypto()))
    assert slot.handle(bytes([CTRL_POWER_ON])) is None
    assert slot.handle(bytes([CTRL_ATR])) == EmrtdApplet.atr
    assert slot.handle(profile.select_aid().encode()) == H("9000")
    assert slot.apdus == 1


# --- the cores stay within what MicroPython runs ------------------------------------------

FORBIDDEN_IMPORTS = {"dataclasses", "enum", "typing", "__future__", "abc", "functools"}


def _self_documenting(fstring: str) -> bool:
    """f'{x=}' (absent from MicroPython): its AST equals f'x={x!r}', so read the text."""
    for field in re.findall(r"(?<!\{)\{([^{}]*)\}", fstring):
        expression = re.split(r"![rsa]|:(?![=])", field)[0].rstrip()
        if expression.endswith("=") and expression[-2:-1] not in ("=", "!", "<", ">"):
            return True
    return False


def _violations(path: Path) -> list[str]:
    source = path.read_text()
    tree = ast.parse(source)
    found = []
    for node in ast.walk(tree):
        where = f"{path.name}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where} import {a.name}" for a in node.names if a.name in FORBIDDEN_IMPORTS]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append(f"{where} absolute import from {node.module} (cores import siblings)")
        elif isinstance(node, ast.NamedExpr):
            found.append(f"{where} walrus")
        elif isinstance(node, ast.Match):
            found.append(f"{where} match statement")
        elif isinstance(node, ast.AnnAssign):
            found.append(f"{where} variable annotation")
        elif isinstance(node, ast.JoinedStr):
            if _self_documenting(ast.get_source_segment(source, node) or ""):
                found.append(f"{where} f-string '='")
        elif isinstance(node, ast.Call):
            func = node.func
            if (
                isinstance(func, ast.Attribute)
                and func.attr in ("to_bytes", "from_bytes")
                and node.keywords
            ):
                found.append(f"{where} {func.attr} with keyword arguments")
            if isinstance(func, ast.Name) and func.id == "zip" and node.keywords:
                found.append(f"{where} zip with keyword arguments")
        elif isinstance(node, ast.ClassDef | ast.FunctionDef):
            for deco in node.decorator_list:
                name = deco.id if isinstance(deco, ast.Name) else getattr(deco, "attr", "")
                if name not in ("property", "staticmethod", "classmethod"):
                    found.append(f"{where} decorator {name}")
    # Methods and idioms the real MicroPython was seen to lack (tests/micropython/subset.py).
    found += [f"{path.name}:{line} {what}" for line, what in runtime_gaps(tree)]
    return found


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_uses_only_the_micropython_subset(module: str) -> None:
    assert _violations(CARD_DIR / f"{module}.py") == []


def test_the_subset_checker_catches_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from __future__ import annotations\n"
        "from dataclasses import dataclass\n"
        "import enum\n"
        "x: int = 1\n"
        "if (y := 2):\n    pass\n"
        "n = 5\ns = f'{n=}'\n"
        "b = n.to_bytes(2, byteorder='big')\n"
        "z = list(zip(b, b, strict=True))\n"
        "@dataclass\nclass A:\n    pass\n"
        "match n:\n    case 1:\n        pass\n"
        "m = n.bit_length()\n"
        "h = b.hex()\n"
        "class E(Exception):\n    def __init__(self):\n        Exception.__init__(self)\n"
        "t = 'x'.encode('ascii')\n"
        "ok = isinstance(n, int | None)\n"
    )
    kinds = " ".join(_violations(bad))
    for expected in ("__future__", "dataclasses", "enum", "variable annotation", "walrus"):
        assert expected in kinds
    for expected in ("f-string", "to_bytes with", "zip with", "decorator dataclass", "match"):
        assert expected in kinds
    for expected in ("bit_length", "bytes.hex()", "Exception.__init__", "'ascii'", "union"):
        assert expected in kinds


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_imports_only_other_cores(module: str) -> None:
    tree = ast.parse((CARD_DIR / f"{module}.py").read_text())
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
    }
    assert imported <= set(CORE_MODULES), imported - set(CORE_MODULES)
    plain = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert plain == set()


# --- MACs, tokens and nonces are compared in constant time ---------------------------------

SECRET_WORDS = ("mac", "token", "rnd")


def _secret_operand(node: ast.expr) -> bool:
    """A comparison operand that holds a MAC, an authentication token or a nonce."""
    for sub in ast.walk(node):
        name = sub.id if isinstance(sub, ast.Name) else getattr(sub, "attr", "")
        if any(word in name.lower() for word in SECRET_WORDS):
            return True
    return False


def _plain_secret_comparisons(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare) and any(
            isinstance(op, ast.Eq | ast.NotEq) for op in node.ops
        ):
            operands = [node.left, *node.comparators]
            if any(_secret_operand(o) for o in operands) and not any(
                isinstance(o, ast.Constant) or (isinstance(o, ast.Call) and _is_len(o))
                for o in operands
            ):
                found.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
    return found


def _is_len(call: ast.Call) -> bool:
    return isinstance(call.func, ast.Name) and call.func.id == "len"


@pytest.mark.parametrize("module", ["sm", "bac", "pace"])
def test_macs_tokens_and_nonces_are_compared_in_constant_time(module: str) -> None:
    """`a != b` on bytes stops at the first difference: a timing oracle for a forger.
    The cores compare with cardcrypto.constant_time_equal (MicroPython has no hmac)."""
    assert _plain_secret_comparisons(CARD_DIR / f"{module}.py") == []


def test_the_comparison_checker_catches_what_it_should(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("if self._mac(x) != mac:\n    pass\nok = len(mac) == 8\n")
    assert len(_plain_secret_comparisons(bad)) == 1


@given(st.binary(max_size=20), st.binary(max_size=20))
@example(b"", b"")
@example(b"\x00" * 8, b"\x00" * 8)
@example(b"\x00" * 8, b"\x00" * 7 + b"\x01")
@example(b"\x01" + b"\x00" * 7, b"\x00" * 8)
@example(b"abc", b"abcd")
def test_constant_time_equal_is_equality(a: bytes, b: bytes) -> None:
    assert cardcrypto.constant_time_equal(a, b) is (a == b)
    assert cardcrypto.constant_time_equal(a, a) is True
    assert cardcrypto.constant_time_equal(bytearray(a), a) is True
