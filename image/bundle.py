"""Signed update bundles (RAUC, verity format): the root slot's file system, its version,
and the signature RAUC checks against the station's keyring before writing anything.

    python -m image.bundle --root build/image/<name>.root.ext4 --version V --out X.raucb
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from image.keys import SigningKeys

COMPATIBLE = "vn-eid-station-rpi4"


class BundleError(RuntimeError):
    """RAUC refused to make or to verify a bundle; the message carries its reason."""


def manifest(version: str, compatible: str = COMPATIBLE) -> str:
    return (
        "[update]\n"
        f"compatible={compatible}\n"
        f"version={version}\n"
        "\n"
        "[bundle]\n"
        "format=verity\n"
        "\n"
        "[image.rootfs]\n"
        "filename=root.ext4\n"
    )


def make_bundle(
    root_fs: Path, version: str, keys: SigningKeys, out: Path, compatible: str = COMPATIBLE
) -> Path:
    """Write ``out`` (a .raucb), signed with ``keys``; the content is checked against the
    keyring's CA as RAUC on the station will."""
    if shutil.which("rauc") is None:
        raise FileNotFoundError("rauc is not installed: apt-get install rauc")
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        content = Path(tmp) / "content"
        content.mkdir()
        (content / "manifest.raucm").write_text(manifest(version, compatible))
        # A hard link when on the same file system: no 1.6 GB copy.
        try:
            (content / "root.ext4").hardlink_to(root_fs)
        except OSError:
            shutil.copy2(root_fs, content / "root.ext4")
        made = subprocess.run(
            ["rauc", "bundle", f"--cert={keys.cert}", f"--key={keys.key}",
             f"--keyring={keys.ca}", str(content), str(out)],
            capture_output=True, text=True,
        )  # fmt: skip
        if made.returncode != 0:
            raise BundleError(f"rauc bundle failed: {made.stderr.strip()[-1000:]}")
    return out


def info(bundle: Path, keyring: Path) -> str:
    """``rauc info`` of a bundle, verified against ``keyring`` (raises when it does not)."""
    result = subprocess.run(
        ["rauc", "info", f"--keyring={keyring}", "--output-format=shell", str(bundle)],
        capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode != 0:
        raise BundleError(f"rauc refused {bundle.name}: {result.stderr.strip()[-1000:]}")
    return result.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m image.bundle", description=__doc__)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--keys", type=Path, default=Path("build/image/keys"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        made = make_bundle(args.root, args.version, SigningKeys.in_folder(args.keys), args.out)
    except (FileNotFoundError, BundleError) as exc:
        print(f"bundle: {exc}", file=sys.stderr)
        return 1
    print(made)
    return 0


if __name__ == "__main__":
    sys.exit(main())
