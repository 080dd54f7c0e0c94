"""What MicroPython (1.27, checked on the real interpreter) lacks or does differently, for
the AST scans of the driver cores (tests/test_fingerprint_protocol.py,
tests/test_card_codec.py). Each entry here was seen to fail or diverge under MicroPython;
tests/test_micropython_cores.py runs the cores there for whatever a scan cannot see
(for example: dict iteration order is not insertion order on MicroPython).
"""

import ast
import builtins

MISSING_ATTRIBUTES = {
    "bit_length": "int.bit_length() (absent from MicroPython)",
    "bit_count": "int.bit_count() (absent from MicroPython)",
    "zfill": "str.zfill() (absent from MicroPython)",
    "removeprefix": "str.removeprefix() (absent from MicroPython)",
    "removesuffix": "str.removesuffix() (absent from MicroPython)",
    "title": "str.title() (absent from MicroPython)",
}
BUILTIN_EXCEPTIONS = {
    name
    for name in dir(builtins)
    if isinstance(getattr(builtins, name), type)
    and issubclass(getattr(builtins, name), BaseException)
}
UTF8 = ("utf-8", "utf8", "UTF-8", "UTF8")


def runtime_gaps(tree: ast.AST, hex_helper: str = "hex_text") -> list[tuple[int, str]]:
    """(line, what) for each use of something MicroPython lacks or treats differently.

    ``bytes.hex()`` is allowed only inside a function named ``hex_helper`` (MicroPython's
    ``b"".hex()`` is b'' rather than '', so the cores go through one guarded helper)."""
    in_helper: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == hex_helper:
            in_helper.update(id(n) for n in ast.walk(node))
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Attribute) and node.attr in MISSING_ATTRIBUTES:
            found.append((line, MISSING_ATTRIBUTES[node.attr]))
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute):
            if func.attr == "hex" and id(node) not in in_helper:
                found.append((line, f"bytes.hex() outside {hex_helper}() (b''.hex() is b'')"))
            elif (
                func.attr == "__init__"
                and isinstance(func.value, ast.Name)
                and func.value.id in BUILTIN_EXCEPTIONS
            ):
                found.append((line, f"{func.value.id}.__init__() (use super().__init__())"))
            elif func.attr in ("encode", "decode") and (node.args or node.keywords):
                # str.encode / bytes.decode name their codec as a string (Command.decode and
                # Curve.encode take bytes or points); MicroPython ignores it: UTF-8 always.
                codec = node.args[0] if node.args else node.keywords[0].value
                if (
                    isinstance(codec, ast.Constant)
                    and isinstance(codec.value, str)
                    and codec.value not in UTF8
                ):
                    found.append((line, f"{func.attr}({codec.value!r}): MicroPython is UTF-8 only"))
        elif (
            isinstance(func, ast.Name)
            and func.id in ("isinstance", "issubclass")
            and len(node.args) == 2
            and isinstance(node.args[1], ast.BinOp)
        ):
            found.append((line, f"{func.id}() with an X | Y union (use a tuple)"))
    return found
