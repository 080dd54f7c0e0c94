"""Fetch the real face photos the tests and benchmarks use, from pinned PyPI packages.

No face data set can be downloaded here, but two pinned packages carry a few real photos:
face_recognition 1.3.0's sdist (tests/test_images: Barack Obama, Joe Biden) and
scikit-image 0.25.2's wheel (skimage/data/astronaut.png: Eileen Collins, public domain
NASA photo). This script downloads each archive with pip (hash-pinned, no dependencies),
extracts only the listed files into a git-ignored cache and checks every file's sha256.

Idempotent: files already present with the right checksum are not fetched again.

    .venv/bin/python scripts/fetch_assets.py [--dest data/assets] [--archives DIR]

Exit status: 0 done, 2 a checksum did not match (never ignore), 3 the package registry
could not be reached (tests skip on this one only).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEST = ROOT / "data" / "assets"
EXIT_INTEGRITY = 2
EXIT_UNREACHABLE = 3


@dataclass(frozen=True)
class Member:
    """One file to take out of an archive."""

    path: str  # inside the archive
    name: str  # file name in the cache
    sha256: str
    subject: str  # who is in the photo (identity ground truth for the tests)


@dataclass(frozen=True)
class Source:
    """A pinned package archive and the files to extract from it."""

    requirement: str
    filename: str
    sha256: str
    pip_args: tuple[str, ...]
    members: tuple[Member, ...] = field(default_factory=tuple)


_FR = "face_recognition-1.3.0/tests/test_images/"
SOURCES: tuple[Source, ...] = (
    Source(
        requirement="face_recognition==1.3.0",
        filename="face_recognition-1.3.0.tar.gz",
        sha256="5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
        pip_args=("--no-binary", ":all:"),
        members=(
            Member(
                _FR + "obama.jpg",
                "obama.jpg",
                "0930e3aa8cae5920329c0c8cbc6a2ab70f47b0e67b432875beaa95cbf7e741f6",
                "obama",
            ),
            Member(
                _FR + "obama2.jpg",
                "obama2.jpg",
                "a7efcc907375274796f39646510704aa86672d59f6d5469d69af3c85590976a6",
                "obama",
            ),
            Member(
                _FR + "obama3.jpg",
                "obama3.jpg",
                "76ac6bf97c36dc2da0ad16a537d6a5ac1b10f48d49aac29a0cca9a17cdbc3ca3",
                "obama",
            ),
            # The two partial faces are crops of obama.jpg: not independent samples.
            Member(
                _FR + "obama_partial_face.jpg",
                "obama_partial_face.jpg",
                "c2d1f09e7ef3042352b41e41286e6eb0522f64f88308be13886991b95db52117",
                "obama",
            ),
            Member(
                _FR + "obama_partial_face2.jpg",
                "obama_partial_face2.jpg",
                "9a812347f97633542b8cd9992de22def11b74f79d82056bc3ee830f13878e028",
                "obama",
            ),
            Member(
                _FR + "biden.jpg",
                "biden.jpg",
                "3c17508bb91554c637a2eabddfae790e5bb1caba93130814fc2ac50be9760c4c",
                "biden",
            ),
        ),
    ),
    Source(
        requirement="scikit-image==0.25.2",
        # A fixed platform wheel so the archive hash is the same on any host (even the Pi):
        # only a PNG is taken from it, nothing is installed.
        filename="scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        sha256="24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641",
        pip_args=(
            "--only-binary",
            ":all:",
            "--platform",
            "manylinux_2_17_x86_64",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
        ),
        members=(
            Member(
                "skimage/data/astronaut.png",
                "astronaut.png",
                "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
                "collins",
            ),
        ),
    ),
)


class IntegrityError(RuntimeError):
    """A downloaded archive or extracted file has the wrong checksum."""


class UnreachableError(RuntimeError):
    """pip could not download an archive (no network, index down)."""


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _present(dest: Path, member: Member) -> bool:
    path = dest / member.name
    return path.is_file() and sha256_bytes(path.read_bytes()) == member.sha256


def _default_pip() -> list[str]:
    # The project venv is made by uv and has no pip; bootstrap.sh's tool venv does.
    tools_pip = ROOT / ".tools" / "bin" / "pip"
    if tools_pip.exists():
        return [str(tools_pip)]
    return [sys.executable, "-m", "pip"]


def _download(source: Source, workdir: Path, pip: list[str], archives: Path | None) -> Path:
    """The archive for ``source``: from ``archives`` if it holds it, else via pip."""
    if archives is not None and (archives / source.filename).is_file():
        local = archives / source.filename
        if sha256_bytes(local.read_bytes()) != source.sha256:
            raise IntegrityError(f"{local}: sha256 differs from the pinned {source.sha256}")
        return local
    # pip checks the archive hash itself (--require-hashes); --no-deps keeps it to one file.
    reqs = workdir / "requirements.txt"
    reqs.write_text(f"{source.requirement} --hash=sha256:{source.sha256}\n")
    cmd = [
        *pip,
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "--require-hashes",
        "--quiet",
        "-d",
        str(workdir),
        *source.pip_args,
        "-r",
        str(reqs),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip()
        if "DO NOT MATCH THE HASHES" in message.upper():
            raise IntegrityError(f"{source.requirement}: {message}")
        raise UnreachableError(f"pip download {source.requirement} failed: {message[-800:]}")
    path = workdir / source.filename
    if not path.is_file() or sha256_bytes(path.read_bytes()) != source.sha256:
        raise IntegrityError(f"{source.requirement}: pip produced no {source.filename} with hash")
    return path


def _read_member(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    with tarfile.open(archive, "r:gz") as tf:
        fh = tf.extractfile(member)  # read the bytes only: never unpack paths from a tar
        if fh is None:
            raise IntegrityError(f"{archive.name}: {member} is not a regular file")
        return fh.read()


def extract_verified(archive: Path, path: str, sha256: str, target: Path) -> None:
    """Copy member ``path`` of ``archive`` to ``target`` if its sha256 is the pinned one."""
    data = _read_member(archive, path)
    if sha256_bytes(data) != sha256:
        raise IntegrityError(f"{path} in {archive.name}: sha256 differs")
    # Write then rename so an interrupted run never leaves a half file.
    part = target.with_name(target.name + ".part")
    part.write_bytes(data)
    part.replace(target)


def fetch(
    dest: Path = DEFAULT_DEST, pip: list[str] | None = None, archives: Path | None = None
) -> dict[str, Path]:
    """Ensure every asset is in ``dest`` with its pinned checksum; return name -> path."""
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for source in SOURCES:
        missing = [m for m in source.members if not _present(dest, m)]
        if missing:
            with tempfile.TemporaryDirectory(prefix="fetch-assets-") as tmp:
                archive = _download(source, Path(tmp), pip or _default_pip(), archives)
                for member in missing:
                    extract_verified(archive, member.path, member.sha256, dest / member.name)
        out.update({m.name: dest / m.name for m in source.members})
    return out


def subjects() -> dict[str, str]:
    """File name -> identity, for same/different-person tests."""
    return {m.name: m.subject for s in SOURCES for m in s.members}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="cache folder")
    parser.add_argument("--archives", type=Path, help="folder with the archives (offline)")
    parser.add_argument("--pip", help="pip executable (default: .tools/bin/pip)")
    parser.add_argument("--clean", action="store_true", help="delete the cache first")
    args = parser.parse_args(argv)
    if args.clean and args.dest.exists():
        shutil.rmtree(args.dest)
    return run_fetch(
        "fetch_assets", lambda: fetch(args.dest, [args.pip] if args.pip else None, args.archives)
    )


def run_fetch(prog: str, fetch_all: Callable[[], dict[str, Path]], width: int = 28) -> int:
    """Run a fetch for a command line: print name -> path, or map the failure to the
    documented exit status (2 integrity, never ignore; 3 registry unreachable)."""
    try:
        paths = fetch_all()
    except IntegrityError as exc:
        print(f"{prog}: INTEGRITY FAILURE: {exc}", file=sys.stderr)
        return EXIT_INTEGRITY
    except UnreachableError as exc:
        print(f"{prog}: registry unreachable: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    for name, path in paths.items():
        print(f"{name:{width}s} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
