"""Run a Python snippet with a small real file system mounted: a tmpfs of a given size in
a private (user + mount) namespace, so a test meets a genuinely full disk or stick without
root and without touching the host's mounts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Prepended to the snippet: mounts the tmpfs at base/<folder> before the snippet runs.
_MOUNT = """
import subprocess, sys
from pathlib import Path
base = Path(sys.argv[1])
(base / sys.argv[2]).mkdir()
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + sys.argv[3], "tmpfs",
                str(base / sys.argv[2])], check=True)
"""


def run_on_tmpfs(script: str, base: Path, folder: str, size: str) -> str:
    """Run ``script`` (which sees ``base``, a Path) with a ``size`` tmpfs (for example
    "128k") mounted at ``base / folder``; its stdout. Skips where user namespaces are not
    available; fails with the output when the script fails."""
    try:
        probe = subprocess.run(
            ["unshare", "-rm", "true"], capture_output=True, timeout=30, check=False
        )
    except FileNotFoundError:
        pytest.skip("unshare is not installed")
    if probe.returncode != 0:
        pytest.skip(f"no user namespaces here: {probe.stderr.decode()[-200:]}")
    result = subprocess.run(
        ["unshare", "-rm", sys.executable, "-c", _MOUNT + script, str(base), folder, size],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout
