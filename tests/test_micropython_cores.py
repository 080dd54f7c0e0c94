"""The sans-I/O driver cores on REAL MicroPython, not just an AST scan of them.

DESIGN.md promises that a driver's protocol core keeps to the Python that MicroPython has,
"so the same codec can run on a microcontroller". tests/test_fingerprint_protocol.py and
tests/test_card_codec.py scan the source for what MicroPython lacks; this test runs the
cores there: the official MicroPython WebAssembly port (npm package
@micropython/micropython-webassembly-pyscript, pinned with its integrity hash in
tests/micropython/package-lock.json), under Node.js. ``npm ci`` installs it once into
.tools/micropython/ (git-ignored); after that the test needs no network.

tests/micropython/transcript.py drives the fingerprint codec and the card cores through
their state machines and prints a transcript; it runs unchanged on CPython and on
MicroPython, with the same module layout on both, and the two transcripts must be equal.
Skips (with the reason) only where Node.js/npm are missing or the npm registry cannot be
reached for the first install.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_card_codec import CORE_MODULES

pytestmark = pytest.mark.timeout(600)

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "tests" / "micropython"
CACHE = ROOT / ".tools" / "micropython"
PACKAGE = "@micropython/micropython-webassembly-pyscript"
FINGERPRINT_CORE = ROOT / "station" / "drivers" / "fingerprint" / "protocol.py"
CARD_DIR = ROOT / "station" / "drivers" / "card"

NPM_TIMEOUT_S = 300
RUN_TIMEOUT_S = 120
# npm's words for "the registry could not be reached" (then skip; any other failure fails).
OFFLINE = re.compile(
    r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|"
    r"network|socket hang up|getaddrinfo",
    re.IGNORECASE,
)
# What MicroPython may print on stderr while the cores run: `raise X from exc` works there
# (the exception is raised, the cause dropped) but the port says so on each raise.
KNOWN_WARNINGS = {"Warning: exception chaining not supported"}


def _install() -> Path:
    """micropython.mjs of the pinned package, installed by ``npm ci`` on first use."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js and npm are needed to run MicroPython (apt install nodejs npm)")
    lock = (HARNESS / "package-lock.json").read_bytes()
    # One directory per lock file, so a changed pin installs afresh.
    target = CACHE / hashlib.sha256(lock).hexdigest()[:16]
    entry = target / "node_modules" / PACKAGE / "micropython.mjs"
    if entry.is_file():
        return entry
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = CACHE / f"staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    shutil.copy(HARNESS / "package.json", staging)
    shutil.copy(HARNESS / "package-lock.json", staging)
    try:
        proc = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=staging,
            capture_output=True,
            text=True,
            timeout=NPM_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        shutil.rmtree(staging, ignore_errors=True)
        pytest.skip(f"npm ci took over {NPM_TIMEOUT_S} s: npm registry unreachable?")
    if proc.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        output = (proc.stdout + proc.stderr)[-600:]
        if OFFLINE.search(output):
            pytest.skip(f"npm registry unreachable, MicroPython not installed: {output}")
        pytest.fail(f"npm ci of {PACKAGE} failed:\n{output}")
    try:
        staging.rename(target)  # atomic: a concurrent run either wins or finds it there
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    assert entry.is_file(), f"npm ci did not install {entry}"
    return entry


@pytest.fixture(scope="module")
def micropython() -> Path:
    return _install()


def core_files() -> list[tuple[Path, str]]:
    """(source, path relative to the library root): the layout both interpreters get."""
    files = [(FINGERPRINT_CORE, "protocol.py"), (CARD_DIR / "__init__.py", "card/__init__.py")]
    files += [(CARD_DIR / f"{name}.py", f"card/{name}.py") for name in CORE_MODULES]
    return files


def run_micropython(
    micropython: Path, script: Path, files: list[tuple[Path, str]], workdir: Path
) -> subprocess.CompletedProcess[str]:
    manifest = {
        "micropython": str(micropython),
        "files": [[str(source), "/lib/" + target] for source, target in files],
        "script": str(script),
        "path": ["/lib"],
    }
    path = workdir / "manifest.json"
    path.write_text(json.dumps(manifest))
    return subprocess.run(
        ["node", str(HARNESS / "run.mjs"), str(path)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def run_cpython(script: Path, files: list[tuple[Path, str]], workdir: Path) -> str:
    lib = workdir / "lib"
    for source, target in files:
        (lib / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, lib / target)
    # -I: nothing from the project or the environment leaks in; -bb: bytes/str mix-ups raise.
    bootstrap = (
        f"import runpy, sys; sys.path.insert(0, {str(lib)!r}); "
        f"runpy.run_path({str(script)!r}, run_name='__main__')"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-bb", "-c", bootstrap],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
        cwd=workdir,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def first_difference(a: str, b: str) -> str:
    left, right = a.splitlines(), b.splitlines()
    for i in range(max(len(left), len(right))):
        x = left[i] if i < len(left) else "<end>"
        y = right[i] if i < len(right) else "<end>"
        if x != y:
            return f"line {i + 1}:\n  CPython:     {x[:300]}\n  MicroPython: {y[:300]}"
    return "no difference"


def test_the_harness_runs_micropython_and_reports_a_raise(
    micropython: Path, tmp_path: Path
) -> None:
    script = tmp_path / "probe.py"
    script.write_text(
        "import sys\n"
        "print(sys.implementation.name, sys.implementation.version[:2])\n"
        "raise ValueError('from the probe')\n"
    )
    proc = run_micropython(micropython, script, [], tmp_path)
    assert proc.stdout.splitlines() == ["micropython (1, 27)"]
    assert proc.returncode == 1, proc.stderr
    assert "ValueError: from the probe" in proc.stderr


def test_cores_give_the_same_transcript_on_micropython(micropython: Path, tmp_path: Path) -> None:
    files = core_files()
    script = HARNESS / "transcript.py"
    expected = run_cpython(script, files, tmp_path)
    proc = run_micropython(micropython, script, files, tmp_path)
    assert proc.returncode == 0, (
        f"the transcript raised on MicroPython after {len(proc.stdout.splitlines())} lines:\n"
        f"{proc.stderr[-3000:]}\nlast lines:\n" + "\n".join(proc.stdout.splitlines()[-5:])
    )
    got = proc.stdout
    assert got == expected, first_difference(expected, got)
    noise = [line for line in proc.stderr.splitlines() if line and line not in KNOWN_WARNINGS]
    assert noise == [], noise

    # Non-trivial: every part ran to its end and did what it should.
    lines = expected.splitlines()
    assert len(lines) > 500
    assert lines[-1] == "== end"
    for marker in (
        "== fingerprint decoder",
        "== fingerprint stream assembler",
        "== applet session (BAC)",
        "== applet session (PACE, parameters 13)",
        "== applet session (PACE, parameters 12)",
        "  files match True True",
        "  DG1 matches True",
        "dropped 3",
        "random round trips 200",
    ):
        assert marker in lines, marker
    assert sum(line.startswith("  P ") for line in lines) >= 20  # packets out of the noise
    assert any(line.startswith("frame 2 ") and "200/2/321" in line for line in lines)
    assert any(line.startswith("  mutual (wrong) ") and line.endswith("6300") for line in lines)
    # The EC arithmetic is real: ICAO 9303-11 Appendix G.1, the terminal's mapping key.
    assert (
        "G.1 PKmap,IFD 7ACF3EFC982EC45565A4B155129EFBC74650DCBFA6362D896FC70262E0C2CC5E "
        "544552DCB6725218799115B55C9BAA6D9F6BC3A9618E70C25AF71777A9C4922D" in lines
    )
