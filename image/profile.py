"""The build's inputs (image/profile.toml) as typed values."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

PROFILE = Path(__file__).with_name("profile.toml")


@dataclass(frozen=True)
class Profile:
    mirror: str
    security_mirror: str
    suite: str
    components: tuple[str, ...]
    architecture: str
    kernel_package: str
    firmware_packages: tuple[str, ...]
    initramfs_modules: tuple[str, ...]
    boot_packages: tuple[str, ...]
    package_groups: dict[str, tuple[str, ...]]
    build_packages: tuple[str, ...]
    python_platform: str
    python_version: str
    build_from_source: tuple[str, ...]
    python_exclude: tuple[str, ...]
    venv: str
    boot_mib: int
    root_mib: int
    first_offset_mib: int
    disk_id: int

    def packages(self) -> list[str]:
        """Every Debian package the root asks for (their dependencies come along)."""
        wanted = [self.kernel_package, *self.firmware_packages, *self.boot_packages]
        for group in self.package_groups.values():
            wanted.extend(group)
        return list(dict.fromkeys(wanted))


def load(path: Path = PROFILE) -> Profile:
    data = tomllib.loads(path.read_text())
    debian, kernel, boot = data["debian"], data["kernel"], data["boot"]
    packages, python, disk = data["packages"], data["python"], data["disk"]
    groups = {k: tuple(v) for k, v in packages.items() if k != "build"}
    return Profile(
        mirror=debian["mirror"],
        security_mirror=debian["security_mirror"],
        suite=debian["suite"],
        components=tuple(debian["components"]),
        architecture=debian["architecture"],
        kernel_package=kernel["package"],
        firmware_packages=tuple(kernel["firmware"]),
        initramfs_modules=tuple(kernel["initramfs_modules"]),
        boot_packages=tuple(boot["packages"]),
        package_groups=groups,
        build_packages=tuple(packages["build"]),
        python_platform=python["platform"],
        python_version=python["version"],
        build_from_source=tuple(python["build_from_source"]),
        python_exclude=tuple(python["exclude"]),
        venv=python["venv"],
        boot_mib=int(disk["boot_mib"]),
        root_mib=int(disk["root_mib"]),
        first_offset_mib=int(disk["first_offset_mib"]),
        disk_id=int(disk["disk_id"], 16),
    )
