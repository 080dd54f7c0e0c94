"""The station's Python side of the image: its own wheel, the locked dependencies as a
hash-checked requirements file for the aarch64 platform, and the source archives of the
few packages that have no aarch64 wheel (compiled later inside the arm64 root, then kept
in a wheel cache so the next build skips the compiler)."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from image.profile import Profile

_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")


class DependencyError(RuntimeError):
    """The lock file and the profile disagree, or a download is not what the lock says."""


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Requirement:
    """One entry of a ``uv export`` file: its name, its text (the pinned line with its
    hash lines) and the packages it is there for (``# via``)."""

    name: str
    block: str
    via: frozenset[str]


def parse_export(text: str) -> list[Requirement]:
    entries: list[Requirement] = []
    lines: list[str] = []
    via: set[str] = set()
    continued = False

    def close() -> None:
        if lines:
            match = _NAME.match(lines[0])
            if match is None:
                raise DependencyError(f"cannot read requirement {lines[0]!r}")
            entries.append(Requirement(normalize(match.group(1)), "\n".join(lines), frozenset(via)))

    for line in text.splitlines():
        stripped = line.strip()
        if continued:
            lines.append(line)
        elif line and not line.startswith((" ", "#", "-")):
            close()
            lines, via = [line], set()
        elif lines and stripped.startswith("# via"):
            via.update(normalize(n) for n in stripped[len("# via") :].split())
        elif lines and stripped.startswith("#   "):
            via.add(normalize(stripped[1:].strip()))
        continued = bool(lines) and line.rstrip().endswith("\\")
    close()
    return entries


def split_requirements(text: str) -> list[tuple[str, str]]:
    """(normalized name, block) for each requirement of a ``uv export`` file."""
    return [(r.name, r.block) for r in parse_export(text)]


def left_out(entries: list[Requirement], exclude: set[str]) -> set[str]:
    """The excluded packages and everything there only for them (transitively): what the
    registry needs and the station never imports."""
    out = set(exclude)
    changed = True
    while changed:
        changed = False
        for entry in entries:
            if entry.name not in out and entry.via and entry.via <= out:
                out.add(entry.name)
                changed = True
    return out


def binary_requirements(exported: str, profile: Profile) -> tuple[str, list[str]]:
    """The export without the packages built from source or left out; and the names of
    those built from source that the lock really asks for."""
    entries = parse_export(exported)
    skip = left_out(entries, {normalize(n) for n in profile.python_exclude})
    source = {normalize(n) for n in profile.build_from_source}
    kept, found = [], []
    for entry in entries:
        if entry.name in skip:
            continue
        if entry.name in source:
            found.append(entry.name)
            continue
        kept.append(entry.block)
    missing = source - set(found)
    if missing:
        raise DependencyError(f"profile builds {sorted(missing)} from source; uv.lock has none")
    return "\n".join(kept) + "\n", found


@dataclass(frozen=True)
class SourceArchive:
    name: str
    version: str
    url: str
    sha256: str

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[1]


def locked_sources(lock_file: Path, names: list[str]) -> list[SourceArchive]:
    """The sdist uv.lock pins for each named package (URL and sha256)."""
    lock = tomllib.loads(lock_file.read_text())
    found: dict[str, SourceArchive] = {}
    for package in lock["package"]:
        name = normalize(package["name"])
        if name in names and "sdist" in package:
            sdist = package["sdist"]
            algorithm, _, digest = str(sdist["hash"]).partition(":")
            if algorithm != "sha256":
                raise DependencyError(f"{name}: uv.lock hash is {algorithm}, not sha256")
            found[name] = SourceArchive(name, package["version"], sdist["url"], digest)
    missing = set(names) - set(found)
    if missing:
        raise DependencyError(f"uv.lock has no source archive for {sorted(missing)}")
    return [found[n] for n in names]


def cached_wheel(cache: Path, source: SourceArchive) -> Path | None:
    """A wheel of exactly this name and version compiled by an earlier build."""
    stem = f"{source.name.replace('-', '_')}-{source.version}-"
    for wheel in sorted(cache.glob("*.whl")):
        if normalize(wheel.name).startswith(normalize(stem)):
            return wheel
    return None


def fetch(source: SourceArchive, folder: Path) -> Path:
    """Download the sdist and check it against the lock's hash."""
    target = folder / source.filename
    with urllib.request.urlopen(source.url, timeout=120) as response:  # noqa: S310 (https from uv.lock)
        data = response.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.sha256:
        raise DependencyError(
            f"{source.filename}: sha256 {digest} is not the {source.sha256} uv.lock pins"
        )
    target.write_bytes(data)
    return target


def export_locked(project: Path, uv: Path) -> str:
    """``uv export`` of the runtime dependencies, with hashes, exactly as locked."""
    result = subprocess.run(
        [str(uv), "export", "--frozen", "--no-dev", "--no-emit-project",
         "--format", "requirements-txt"],
        cwd=project, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return result.stdout


def build_own_wheel(project: Path, uv: Path, out: Path) -> Path:
    """The station application's wheel, built from this checkout."""
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [str(uv), "build", "--wheel", "--out-dir", str(out), "--quiet"], cwd=project, check=True
    )
    wheels = sorted(out.glob("vn_eid-*.whl"))
    if not wheels:
        raise DependencyError(f"uv build wrote no vn_eid wheel into {out}")
    return wheels[-1]


def prepare(
    project: Path, uv: Path, profile: Profile, work: Path, cache: Path
) -> tuple[Path, Path, Path, list[str]]:
    """Everything the root's Python step needs: (requirements file, wheel folder, sdist
    folder, names compiled from source this time)."""
    wheels, sdists = work / "wheels", work / "sdists"
    for folder in (wheels, sdists):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    cache.mkdir(parents=True, exist_ok=True)
    build_own_wheel(project, uv, wheels)
    requirements, source_names = binary_requirements(export_locked(project, uv), profile)
    req_file = work / "requirements-aarch64.txt"
    req_file.write_text(requirements)
    to_compile = []
    for source in locked_sources(project / "uv.lock", source_names):
        wheel = cached_wheel(cache, source)
        if wheel is not None:
            shutil.copy2(wheel, wheels / wheel.name)
        else:
            fetch(source, sdists)
            to_compile.append(source.name)
    return req_file, wheels, sdists, to_compile
